"""The parts of the faster U-Net step on CPU: the hand-written GroupNorm gradient against flax's
GroupNorm under autodiff, the per-program XLA options, and the bench's PyTorch twin of the
network (same function, same parameter count), which makes the bench's ratio a fair one."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from conftest import REPO
from jaxmem import xla_options
from jaxmem.config import load_config
from jaxmem.denoisers import unet
from jaxmem.denoisers.unet_ops import add_channelwise, group_norm
from jaxmem.train import trainer


@pytest.mark.parametrize("shape,groups", [((3, 8, 8, 64), 16), ((2, 4, 6, 12), 3), ((2, 5, 8), 4)])
@pytest.mark.slow
def test_group_norm_value_and_gradients_equal_flax(shape, groups):
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    x = 3.0 + 2.0 * jax.random.normal(keys[0], shape)
    channels = shape[-1]
    scale = 1.0 + 0.3 * jax.random.normal(keys[1], (channels,))
    bias = 0.3 * jax.random.normal(keys[2], (channels,))
    upstream = jax.random.normal(keys[3], shape)
    reference = nn.GroupNorm(groups, epsilon=1e-6)

    def ours(x, scale, bias):
        return jnp.sum(nn.silu(group_norm(x, scale, bias, groups, 1e-6)) * upstream)

    def theirs(x, scale, bias):
        y = reference.apply({"params": {"scale": scale, "bias": bias}}, x)
        return jnp.sum(nn.silu(y) * upstream)

    value, grads = jax.value_and_grad(ours, argnums=(0, 1, 2))(x, scale, bias)
    expected_value, expected = jax.value_and_grad(theirs, argnums=(0, 1, 2))(x, scale, bias)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    for name, got, want in zip(("x", "scale", "bias"), grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.abs(want).max()), err_msg=name)


@pytest.mark.slow
def test_group_norm_gradient_matches_finite_differences_in_float64():
    """Independent of flax: the hand-written backward against central differences (float64)."""
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.PRNGKey(1), 4)
        x = jax.random.normal(keys[0], (2, 3, 3, 8), jnp.float64)
        scale = 1.0 + 0.5 * jax.random.normal(keys[1], (8,), jnp.float64)
        bias = jax.random.normal(keys[2], (8,), jnp.float64)
        upstream = jax.random.normal(keys[3], x.shape, jnp.float64)
        loss = lambda x, s, b: jnp.sum(group_norm(x, s, b, 2, 1e-6) ** 2 * upstream)  # noqa: E731
        grads = jax.grad(loss, argnums=(0, 1, 2))(x, scale, bias)
        step = 1e-6
        for which, arg in enumerate((x, scale, bias)):
            flat = np.asarray(arg).ravel()
            for index in (0, flat.size // 2, flat.size - 1):
                moved = [np.asarray(a).copy() for a in (x, scale, bias)]
                moved[which].ravel()[index] += step
                up = loss(*map(jnp.asarray, moved))
                moved[which].ravel()[index] -= 2 * step
                down = loss(*map(jnp.asarray, moved))
                numeric = (up - down) / (2 * step)
                np.testing.assert_allclose(np.asarray(grads[which]).ravel()[index], numeric, rtol=1e-6, atol=1e-8)


def test_group_norm_keeps_the_compute_dtype():
    x = jnp.ones((2, 4, 4, 8), jnp.bfloat16) * jnp.arange(8, dtype=jnp.bfloat16)
    y, grad = jax.value_and_grad(lambda x: jnp.sum(group_norm(x, jnp.ones(8), jnp.zeros(8), 2, 1e-6)
                                                   .astype(jnp.float32)))(x)
    assert grad.dtype == jnp.bfloat16 and group_norm(x, jnp.ones(8), jnp.zeros(8), 2, 1e-6).dtype == jnp.bfloat16


@pytest.mark.parametrize("v_shape", [(6,), (2, 6)])
def test_add_channelwise_gradients_equal_the_plain_sum(v_shape):
    h = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3, 6))
    v = jax.random.normal(jax.random.PRNGKey(1), v_shape)
    upstream = jax.random.normal(jax.random.PRNGKey(2), h.shape)
    plain = (lambda h, v: h + v) if len(v_shape) == 1 else (lambda h, v: h + v[:, None, None, :])
    ours = jax.grad(lambda h, v: jnp.sum(jnp.sin(add_channelwise(h, v)) * upstream), argnums=(0, 1))(h, v)
    theirs = jax.grad(lambda h, v: jnp.sum(jnp.sin(plain(h, v)) * upstream), argnums=(0, 1))(h, v)
    np.testing.assert_allclose(add_channelwise(h, v), plain(h, v))
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    low = add_channelwise(h.astype(jnp.bfloat16), v)
    assert low.dtype == jnp.bfloat16
    assert jax.grad(lambda v: jnp.sum(add_channelwise(h.astype(jnp.bfloat16), v).astype(jnp.float32)))(v).dtype == v.dtype


def test_xla_options_only_on_cpu_and_only_when_accepted():
    class Device:
        platform = "gpu"

    assert xla_options.convolutions([Device()]) == {}
    assert xla_options.convolutions(jax.devices("cpu")) == dict(xla_options.CPU_CONVOLUTIONS)
    assert xla_options.initialisation([Device()]) == {}
    assert xla_options.initialisation(jax.devices("cpu")) == dict(xla_options.CPU_INITIALISATION)
    assert not xla_options._accepted((("xla_cpu_no_such_option_here", "1"),))


def test_the_training_state_init_compiled_for_a_fast_compile_gives_the_same_bits():
    """trainer's init program (LLVM level 0 on CPU) against the same function compiled with the
    defaults, for a class-conditional U-Net with attention: every parameter, optimizer and EMA
    entry bit for bit."""
    config = load_config(os.path.join(REPO, "configs", "edm_training.py:smoke"))
    config.model.update(channels=8, channel_mult=(1,), num_blocks=1, attn_resolutions=(8,), label_dim=10)
    program = trainer.build_program(config, unet.input_shape(config.model), jax.devices()[:1])
    key = jax.random.PRNGKey(3)
    fast, default = program.init(key), jax.jit(program.init.__wrapped__)(key)
    leaves = jax.tree_util.tree_leaves(fast)
    assert len(leaves) > 50
    for a, b in zip(leaves, jax.tree_util.tree_leaves(default), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _torch_twin(model: dict):
    torch = pytest.importorskip("torch")
    from jaxmem.benchmarks import torch_unet

    return torch, torch_unet, torch_unet.network_from_config(ml_collections.ConfigDict(model))


@pytest.mark.slow
def test_torch_twin_computes_the_same_network():
    model = dict(image_size=16, in_channels=3, channels=8, channel_mult=(1, 2, 3), num_blocks=1,
                 attn_resolutions=(8,), attn_heads=2, dropout=0.0, noise_features=8, embed_dim=32, label_dim=0)
    torch, torch_unet, twin = _torch_twin(model)
    network = unet.SongUNet(**{k: v for k, v in model.items() if k not in ("image_size", "in_channels")})
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    c_noise = jnp.array([0.3, -0.5])
    shapes = traverse_util.flatten_dict(unet.abstract_params(network, (16, 16, 3)), sep="/")
    rng = np.random.default_rng(2)  # random weights of the network's shapes: no init to compile
    flat = {k: jnp.asarray(0.2 * rng.standard_normal(v.shape), jnp.float32) for k, v in sorted(shapes.items())}
    expected = jax.jit(network.apply)({"params": traverse_util.unflatten_dict(flat, sep="/")}, x, c_noise)
    assert sum(p.numel() for p in twin.parameters()) == unet.count_params(shapes)
    torch_unet.load_flax_params(twin, flat)
    with torch.no_grad():
        got = twin(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()), torch.from_numpy(np.array(c_noise)))
    np.testing.assert_allclose(got.numpy().transpose(0, 2, 3, 1), expected, atol=1e-5 * float(jnp.abs(expected).max()))
    with pytest.raises(ValueError, match="missing"):
        torch_unet.load_flax_params(twin, {k: v for k, v in flat.items() if not k.startswith("out_conv")})


def test_torch_twin_of_the_bench_network_has_the_reference_parameter_count():
    from jaxmem.benchmarks.edm import CPU_NETWORK

    model = dict(CPU_NETWORK, image_size=32, in_channels=3, attn_resolutions=(16,), attn_heads=1, label_dim=0)
    torch, torch_unet, twin = _torch_twin(model)
    assert sum(p.numel() for p in twin.parameters()) == 8_797_187
    step = torch_unet.make_train_step(
        twin, ml_collections.ConfigDict(dict(peak_lr=1e-4, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8)))
    before = twin.out_conv.weight.detach().clone()
    loss = step(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert torch.isfinite(loss) and not torch.equal(before, twin.out_conv.weight)
    with pytest.raises(ValueError, match="label_dim"):
        torch_unet.network_from_config(ml_collections.ConfigDict(dict(model, label_dim=10)))

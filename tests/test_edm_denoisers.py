"""EDM preconditioning and loss, the DDPM++ U-Net's sizes, and the EDM config's clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem import footprint
from jaxmem.config import load_config
from jaxmem.denoisers import edm, unet
from jaxmem.experiments import edm_training as edm_experiment
from jaxmem.train import trainer

SD = edm.SIGMA_DATA
SIGMAS = np.geomspace(1e-3, 80.0, 41)


def test_preconditioning_identities():
    s = jnp.asarray(SIGMAS)
    skip, out, cin = edm.c_skip(s), edm.c_out(s), edm.c_in(s)
    # c_in gives the network a unit-variance input: c_in^2 (sd^2 + s^2) = 1.
    np.testing.assert_allclose(cin**2 * (SD**2 + s**2), 1.0, rtol=1e-6)
    # The effective target (x - c_skip y) / c_out has unit variance for Var x = sd^2:
    # c_out^2 = (1 - c_skip)^2 sd^2 + c_skip^2 s^2, and c_skip minimises it (c_out^2 = c_skip s^2).
    np.testing.assert_allclose(out**2, (1 - skip) ** 2 * SD**2 + skip**2 * s**2, rtol=1e-5)
    np.testing.assert_allclose(out**2, skip * s**2, rtol=1e-5)
    # The EDM weighting undoes c_out: lambda(s) c_out(s)^2 = 1.
    np.testing.assert_allclose(edm.edm_weight(s) * out**2, 1.0, rtol=1e-5)
    np.testing.assert_allclose(edm.c_noise(s), np.log(SIGMAS) / 4, rtol=1e-5, atol=1e-6)


def test_denoiser_tends_to_identity_as_sigma_vanishes():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
    def wild_net(params, x_in, noise_cond, labels):  # any network output; here large and noisy
        return 10.0 * jnp.sin(100.0 * x_in) + params
    denoise = edm.precondition(wild_net)
    for sigma, tol in [(1e-3, 2e-2), (1e-5, 2e-4)]:
        np.testing.assert_allclose(denoise(1.0, x, sigma), x, atol=tol)
    # Large sigma: D -> sd F (c_skip -> 0, c_out -> sd).
    np.testing.assert_allclose(denoise(1.0, x, 1e4), SD * wild_net(1.0, x * edm.c_in(1e4), None, None), atol=1e-4)


@pytest.mark.slow
def test_lognormal_sigmas_and_loss_weighting():
    log_sigma = np.log(np.asarray(edm.sample_sigmas(jax.random.PRNGKey(1), 20_000)))
    assert abs(log_sigma.mean() - edm.P_MEAN) < 0.05 and abs(log_sigma.std() - edm.P_STD) < 0.05

    images = jax.random.uniform(jax.random.PRNGKey(2), (8, 4, 4, 3), minval=-1, maxval=1)
    denoise = edm.precondition(lambda params, x_in, noise_cond, labels, **_: params * x_in)
    batch, rng = {"images": images}, jax.random.PRNGKey(3)
    plain, _ = edm.make_loss(denoise)(0.3, batch, rng)
    doubled, _ = edm.make_loss(denoise, sigma_weight=edm.window_weight(0.0, np.inf, 2.0))(0.3, batch, rng)
    silenced, _ = edm.make_loss(denoise, sigma_weight=edm.window_weight(0.0, np.inf, 0.0))(0.3, batch, rng)
    assert float(plain) > 0 and float(silenced) == 0.0
    np.testing.assert_allclose(doubled, 2 * plain, rtol=1e-6)
    # Zero network output: D = c_skip y, and the weighted per-pixel error has expectation
    # ((1 - c_skip)^2 E x^2 + c_skip^2 s^2) / c_out^2 per pixel; for E x^2 = sd^2 that is 1.
    gaussian = {"images": SD * jax.random.normal(jax.random.PRNGKey(4), (4096, 2, 2, 1))}
    zero_net, _ = edm.make_loss(edm.precondition(lambda *a, **k: jnp.zeros_like(a[1])))(None, gaussian, rng)
    np.testing.assert_allclose(float(zero_net), 4.0, rtol=0.05)


def test_cifar10_unet_has_the_reference_parameter_count():
    config = load_config("configs/edm_training.py:cifar10_1k")
    network = unet.network_from_config(config.model)
    count = unet.count_params(unet.abstract_params(network, unet.input_shape(config.model)))
    print(f"CIFAR-10 DDPM++ U-Net parameters: {count:,}")
    assert 50e6 <= count <= 62e6


@pytest.mark.parametrize("dtype,label_dim", [("float32", 0), ("bfloat16", 10)])
def test_unet_output_shape_and_dtype(dtype, label_dim):
    config = load_config("configs/edm_training.py:smoke")
    config.model.update(dtype=dtype, label_dim=label_dim, label_dropout=0.1)
    network = unet.network_from_config(config.model)
    params = unet.abstract_params(network, (8, 8, 1), label_dim)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
    labels = jnp.zeros((2, label_dim)) if label_dim else None
    out = jax.eval_shape(lambda p: network.apply({"params": p}, jnp.zeros((2, 8, 8, 1)), jnp.zeros((2,)),
                                                 labels, train=True, rngs={"dropout": jax.random.PRNGKey(0)}),
                         params)
    assert out.shape == (2, 8, 8, 1) and out.dtype == jnp.float32


def _smoke():
    return load_config("configs/edm_training.py:smoke")


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown config preset 'cifar11'; valid presets: cifar10_1k"):
        load_config("configs/edm_training.py:cifar11")


@pytest.mark.parametrize("field,value,match", [
    ("sampling.sigma_min", 100.0, r"sampling.sigma_min, sampling.sigma_max = \(100.0, 80.0\) is invalid"),
    ("sampling.solver", "rk4", "sampling.solver = 'rk4' is invalid; allowed: one of 'euler', 'heun'"),
    ("data.dataset", "imagenet", "data.dataset = 'imagenet' is invalid"),
    ("model.image_size", 9, "model.image_size = 9 is invalid; allowed: a multiple of 2"),
    ("model.channels", 6, "model.channels = 6 is invalid"),
    ("model.attn_heads", 3, r"model.attn_heads = 3 is invalid; allowed: a divisor of the channel count of every "
                            r"attention block \(32,\)"),  # the smoke network attends at 4 x 4, with 32 channels
])
def test_bad_config_fields_are_named(field, value, match):
    config = _smoke()
    group, name = field.split(".")
    config[group][name] = value
    with pytest.raises(ValueError, match=match):
        edm_experiment.validate_config(config)


def test_batch_not_divisible_by_devices_is_named():
    config = _smoke()
    config.training.batch_size = 12
    with pytest.raises(ValueError, match="training.batch_size = 12 is invalid; allowed: a positive multiple "
                                         "of the device count 8"):
        trainer.validate_training_config(config, jax.device_count())


def test_image_shape_not_matching_network_is_named(tmp_path):
    config = _smoke()
    config.model.image_size = 16
    config.model.attn_resolutions = (8,)  # a resolution a 16 x 16 network has (the smoke's 4 is not)
    with pytest.raises(ValueError, match=r"model.image_size, model.in_channels = \(16, 1\) is invalid; allowed: "
                                         r"the data's image shape \(H, W, C\) = \(8, 8, 1\)"):
        edm_experiment.validate_config(config)  # the door names the fields
    with pytest.raises(ValueError, match=r"images of shape \(H, W, C\) = \(8, 8, 1\) do not fit the network, "
                                         r"which takes \(16, 16, 1\)"):
        edm_experiment.run(config, str(tmp_path))  # past the door: the trainer's own check


@pytest.mark.parametrize("preset", ["smoke", "digits", "mnist", "cifar10_1k", "cifar10_50k"])
def test_every_preset_is_valid_and_its_network_builds(preset):
    config = load_config(f"configs/edm_training.py:{preset}")
    with footprint.checking(not preset.startswith("cifar10")):  # CIFAR-10: sized for a device, not this host
        edm_experiment.validate_config(config)
    trainer.validate_training_config(config, 8)
    network = unet.network_from_config(config.model)
    assert unet.count_params(unet.abstract_params(network, unet.input_shape(config.model))) > 0


def test_ema_half_life_ramp_up_and_learning_rate_warm_up():
    decay = trainer.ema_decay(batch_size=512, half_life_images=500_000, rampup_ratio=0.05)
    # After the first step 512 images were seen: half-life 0.05 * 512 = 25.6 images.
    np.testing.assert_allclose(decay(jnp.int32(0)), 0.5 ** (512 / 25.6), rtol=1e-5)
    # Past 10 M images the ramp-up ends: half-life 0.5 M images.
    np.testing.assert_allclose(decay(jnp.int32(100_000)), 0.5 ** (512 / 500_000), rtol=1e-6)
    assert float(trainer.ema_decay(512, 500_000, None)(jnp.int32(0))) == pytest.approx(0.5 ** (512 / 500_000))
    lr = trainer.learning_rate(1e-3, warmup_images=10_000_000, batch_size=512)
    np.testing.assert_allclose([lr(jnp.int32(0)), lr(jnp.int32(9_764)), lr(jnp.int32(50_000))],
                               [1e-3 * 512 / 1e7, 1e-3 * 9_765 * 512 / 1e7, 1e-3], rtol=1e-5)


@pytest.mark.parametrize("channels", [12, 20, 48])
def test_widths_whose_skip_channels_32_groups_do_not_divide_build(channels):
    # width 48 concatenates 144-channel skips: min(32, 144 // 4) = 32 groups do not divide 144
    config = load_config("configs/edm_training.py:digits")
    with config.unlocked():
        config.model.update(channels=channels, channel_mult=(1, 3))
    network = unet.network_from_config(config.model)
    assert unet.count_params(unet.abstract_params(network, unet.input_shape(config.model))) > 0
    assert all(c % unet.norm_groups(c) == 0 for c in range(4, 1025, 4))

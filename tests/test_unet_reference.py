"""The U-Net is the reference DDPM++ network (EDM's SongUNet): parameter counts, the channel
schedule of every block for a non-constant multiplier, and the positional noise embedding.
Shapes only (jax.eval_shape): nothing the size of the 55 M network is allocated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem.denoisers import unet


def _params(image_size=32, in_channels=3, **fields):
    network = unet.SongUNet(dropout=0.0, **fields)
    return unet.abstract_params(network, (image_size, image_size, in_channels))


@pytest.mark.parametrize("channels, mult, blocks, expected", [
    (64, (1, 2, 2), 2, 6_989_891),   # a width change between levels: the up blocks keep the lower width
    (64, (2, 2, 2), 2, 8_797_187),
    (128, (2, 2, 2), 4, 55_732_739),  # EDM's CIFAR-10 DDPM++
])
def test_parameter_counts_equal_the_reference_network(channels, mult, blocks, expected):
    params = _params(channels=channels, channel_mult=mult, num_blocks=blocks, attn_resolutions=(16,),
                     noise_features=channels, embed_dim=4 * channels)
    assert unet.count_params(params) == expected


def _block_widths(block):
    """(in, out, has 1x1 skip conv, has attention) of one residual block's parameters."""
    kernel = block["conv0"]["kernel"].shape  # [3, 3, in, out]
    return kernel[2], kernel[3], "skip" in block, "attn" in block


def test_every_block_follows_the_reference_schedule_for_a_non_constant_multiplier():
    # 16x16 -> 8x8 -> 4x4 with widths 8, 16, 24; attention at 8x8. Decoder inputs are the
    # incoming width plus the popped encoder output (stem, blocks and down blocks, last first).
    params = _params(image_size=16, channels=8, channel_mult=(1, 2, 3), num_blocks=2, attn_resolutions=(8,),
                     noise_features=8, embed_dim=32)
    expected = {
        "enc_16x16_block0": (8, 8, False, False), "enc_16x16_block1": (8, 8, False, False),
        "enc_8x8_down": (8, 8, True, False),
        "enc_8x8_block0": (8, 16, True, True), "enc_8x8_block1": (16, 16, False, True),
        "enc_4x4_down": (16, 16, True, False),
        "enc_4x4_block0": (16, 24, True, False), "enc_4x4_block1": (24, 24, False, False),
        "dec_4x4_in0": (24, 24, False, True), "dec_4x4_in1": (24, 24, False, False),
        "dec_4x4_block0": (48, 24, True, False), "dec_4x4_block1": (48, 24, True, False),
        "dec_4x4_block2": (40, 24, True, False),
        "dec_8x8_up": (24, 24, True, False),  # keeps 24 although the level's width is 16
        "dec_8x8_block0": (40, 16, True, False), "dec_8x8_block1": (32, 16, True, False),
        "dec_8x8_block2": (24, 16, True, True),
        "dec_16x16_up": (16, 16, True, False),
        "dec_16x16_block0": (24, 8, True, False), "dec_16x16_block1": (16, 8, True, False),
        "dec_16x16_block2": (16, 8, True, False),
    }
    blocks = {name: _block_widths(p) for name, p in params.items() if "conv0" in p}
    assert blocks == expected
    assert params["enc_16x16_conv"]["kernel"].shape == (3, 3, 3, 8)
    assert params["out_norm"]["scale"].shape == (8,) and params["out_conv"]["kernel"].shape == (3, 3, 8, 3)
    assert params["map_layer0"]["kernel"].shape == (8, 32) and params["map_layer1"]["kernel"].shape == (32, 32)


def test_noise_embedding_is_the_positional_embedding_of_ddpmpp():
    # 4 frequencies from 1 down to 1e-4 inclusive (geometric), the sine half first
    values = np.array([-1.3, 0.0, 0.7, 2.5], np.float32)
    freqs = np.geomspace(1.0, 1e-4, 4)
    angles = values[:, None].astype(np.float64) * freqs[None, :]
    expected = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    got = unet.sinusoidal_embedding(jnp.asarray(values), 8)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_attention_reads_q_k_v_interleaved_per_channel():
    # qkv output channel 3 * i + j holds q (j = 0), k (j = 1), v (j = 2) of channel i: with
    # the qkv kernel mapping channel i to v only (q = k = 0, uniform attention), the attention
    # output is the mean over positions of the normalised input.
    c, heads = 8, 2
    attention = unet.SelfAttention(heads)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, c))
    params = attention.init(jax.random.PRNGKey(1), x)["params"]
    qkv = np.zeros((1, 1, c, 3 * c), np.float32)
    qkv[0, 0, np.arange(c), 3 * np.arange(c) + 2] = 1.0
    params = jax.tree_util.tree_map(jnp.zeros_like, params)
    params["qkv"]["kernel"] = jnp.asarray(qkv)
    params["norm"]["scale"] = jnp.ones((c,))
    params["proj"]["kernel"] = jnp.eye(c).reshape(1, 1, c, c)
    out = attention.apply({"params": params}, x)
    normed = unet.nn.GroupNorm(unet.norm_groups(c), epsilon=1e-6).apply(
        {"params": {"scale": jnp.ones((c,)), "bias": jnp.zeros((c,))}}, x)
    expected = (normed.mean(axis=(1, 2), keepdims=True) + x) * unet.SKIP_SCALE
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-5, atol=1e-6)

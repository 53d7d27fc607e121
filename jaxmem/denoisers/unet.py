"""DDPM++ U-Net (SongUNet-style) of the EDM CIFAR-10 setup, in flax.linen, every size configurable.

The network is the raw function F of EDM's preconditioning (jaxmem.denoisers.edm): it maps the
scaled noisy image c_in * x [B, H, W, C_in] and the noise conditioning c_noise [B] (plus optional
one-hot class labels [B, label_dim]) to an output of the image's shape. Images are NHWC.

Architecture (Karras et al. 2022, config "DDPM++"; docs/formulas.md):
  noise embedding   DDPM++'s positional embedding of c_noise (`noise_features` = C_n features,
                    C_n / 2 frequencies from 1 to 1e-4 inclusive, sin half first; see
                    `sinusoidal_embedding`), plus the one-hot labels times sqrt(label_dim) through a
                    linear map, then Linear -> SiLU -> Linear -> SiLU (`embed_dim`)
  encoder           3x3 stem conv to `channels`; per level l (resolution H / 2^l) a down block
                    keeping the width of the level above (l > 0), then `num_blocks` residual blocks
                    with channels * channel_mult[l]
  decoder           per level, deepest first: two bottleneck blocks (the first with attention) at
                    the deepest level or an up block elsewhere, both keeping the incoming width (an
                    up block does not change it even where channel_mult does), then
                    `num_blocks + 1` blocks fed the concatenation with the matching encoder output
                    (skip connection), each to channels * channel_mult[l]
  output            GroupNorm -> SiLU -> 3x3 conv (near-zero init)
  residual block    GN -> SiLU -> 3x3 conv (2x2 average pool before it going down, nearest x2
                    upsampling going up) -> + Linear(embedding) -> GN -> SiLU -> dropout -> 3x3
                    conv (near-zero init); 1x1 skip conv when channels or resolution change;
                    (h + skip) * sqrt(1/2); optional self-attention (1x1 qkv, softmax(q k^T /
                    sqrt(c)), 1x1 near-zero projection, residual, * sqrt(1/2))
  GroupNorm         groups = min(32, C / 4), eps 1e-6.
Attention runs in every encoder block whose resolution is in `attn_resolutions`, in the last
decoder block of such a level (DDPM++ attends once per decoder level) and in the first bottleneck
block. Submodules carry the reference's names (`enc_32x32_conv`, `enc_16x16_down`,
`enc_16x16_block0`, `dec_8x8_in0`, `dec_16x16_up`, `dec_16x16_block2`, `map_layer0`, `out_conv`,
...), so with the reference's channel layouts a weight ports one to one (after NCHW/OIHW ->
NHWC/HWIO transposes). Parameter counts equal the reference's: 55,732,739 for the CIFAR-10
preset; 6,989,891 for 64 channels, multipliers (1, 2, 2), 2 blocks, attention at 16 (32x32x3).
`augment_dim` > 0 adds the parameter `map_augment` [augment_dim, noise_features] of networks
trained with augmentation labels; it is never applied (see SongUNet.__call__).
Label dropout (classifier-free guidance) zeroes a sample's one-hot label with probability
`label_dropout` during training, so the same network learns the unconditional branch.

`dtype` is the compute dtype (bfloat16 for mixed precision); parameters stay float32 and the
output is float32.

`Conv` and `GroupNorm` are this module's own: flax.linen.Conv's and GroupNorm's parameters and
numbers (to float32 rounding), with the per-channel sums of their gradients written by hand
(jaxmem.denoisers.unet_ops; XLA:CPU ran autodiff's version of those sums several times slower:
BENCHMARKS.md, "EDM training step").
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmem.validation import require, require_choice
from jaxmem.denoisers.unet_ops import add_channelwise, group_norm

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SKIP_SCALE = math.sqrt(0.5)

xavier_uniform = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
near_zero = nn.initializers.variance_scaling(1e-10, "fan_avg", "uniform")  # xavier * 1e-5
attention_qkv = nn.initializers.variance_scaling(0.2, "fan_avg", "uniform")  # xavier * sqrt(0.2)


def norm_groups(channels: int) -> int:
    """GroupNorm group count: min(32, C // 4) (the reference), or the largest divisor of C below it
    when that does not divide C (e.g. 24 for the 144 channels of a width-48 skip concatenation)."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return groups


def sinusoidal_embedding(values: jax.Array, features: int, max_period: float = 1e4) -> jax.Array:
    """DDPM++'s positional embedding of the noise level, [B] -> [B, features]:
    [sin(v f_0), ..., sin(v f_{n-1}), cos(v f_0), ..., cos(v f_{n-1})] with n = features / 2 and
    f_k = (1 / max_period)^(k / (n - 1)), i.e. n frequencies spaced geometrically from 1 to
    1 / max_period inclusive of that endpoint (the reference computes [cos, sin] and swaps the
    halves). n = 1 gives the single frequency 1."""
    half = features // 2
    exponents = jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1)
    freqs = (1.0 / max_period) ** exponents
    angles = values.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def downsample(x: jax.Array) -> jax.Array:
    """2x2 average pooling, [B, H, W, C] -> [B, H/2, W/2, C] (a reshape and a mean: XLA:CPU runs
    the reduce-window of nn.avg_pool and its gradient several times slower)."""
    b, h, w, c = x.shape
    return jnp.mean(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def upsample(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2, [B, H, W, C] -> [B, 2H, 2W, C]."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Conv(nn.Module):
    """A k x k convolution, stride 1, SAME padding, NHWC / HWIO: flax.linen.Conv's parameters
    (`kernel` [k, k, C_in, C_out] from `kernel_init`, `bias` [C_out] zeros, float32) and numbers,
    with the bias added by unet_ops.add_channelwise (its gradient summed by a dot)."""

    features: int
    size: int
    kernel_init: nn.initializers.Initializer = xavier_uniform
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (self.size, self.size, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype), (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return add_channelwise(y, bias)


class GroupNorm(nn.Module):
    """GroupNorm over the last axis with norm_groups(C) groups and eps 1e-6: flax.linen.GroupNorm's
    parameters (`scale` ones, `bias` zeros, [C] float32) and numbers (to float32 rounding), with the
    hand-written gradient of jaxmem.denoisers.unet_ops.group_norm. Output in `dtype`."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        return group_norm(x.astype(self.dtype), scale, bias, norm_groups(channels), 1e-6)


class SelfAttention(nn.Module):
    """Single- or multi-head self-attention over the H*W positions, residual, scaled by sqrt(1/2).

    The 1x1 qkv convolution's 3C output channels are laid out as (head, channel, q/k/v), q, k and v
    interleaved innermost, as in the reference network, so weights port one to one."""

    heads: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        if c % self.heads:
            raise ValueError(f"{self.heads} attention heads do not divide the {c} channels")
        hidden = GroupNorm(dtype=self.dtype, name="norm")(x)
        qkv = Conv(3 * c, 1, attention_qkv, dtype=self.dtype, name="qkv")(hidden)
        qkv = qkv.reshape(b, h * w, self.heads, c // self.heads, 3)
        q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]  # [B, HW, heads, c/heads]
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k).astype(jnp.float32) / math.sqrt(c // self.heads)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        attended = jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, h, w, c)
        projected = Conv(c, 1, near_zero, dtype=self.dtype, name="proj")(attended)
        return (projected + x) * SKIP_SCALE


class ResidualBlock(nn.Module):
    """DDPM++ residual block; `resample` is 'none', 'down' or 'up'. x [B,H,W,Cin], emb [B,E]."""

    out_channels: int
    resample: str = "none"
    attention: bool = False
    dropout: float = 0.0
    attn_heads: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, train: bool) -> jax.Array:
        resize = {"none": lambda t: t, "down": downsample, "up": upsample}[self.resample]
        conv = lambda c, k, init, name: Conv(c, k, init, dtype=self.dtype, name=name)  # noqa: E731
        norm = lambda name: GroupNorm(dtype=self.dtype, name=name)  # noqa: E731
        in_channels, width = x.shape[-1], self.out_channels
        h = conv(width, 3, xavier_uniform, "conv0")(resize(nn.silu(norm("norm0")(x))))
        h = add_channelwise(h, nn.Dense(width, kernel_init=xavier_uniform, dtype=self.dtype, name="affine")(emb))
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(norm("norm1")(h)))
        h = conv(width, 3, near_zero, "conv1")(h)
        skip = resize(x)
        if in_channels != width or self.resample != "none":
            skip = conv(width, 1, xavier_uniform, "skip")(skip)
        out = (h + skip) * SKIP_SCALE
        if self.attention:
            out = SelfAttention(self.attn_heads, dtype=self.dtype, name="attn")(out)
        return out


class SongUNet(nn.Module):
    """The DDPM++ U-Net F(x_in, c_noise, labels); see the module docstring for the layout.

    __call__(x [B, H, W, C_in], c_noise [B], labels [B, label_dim] or None, train) -> [B, H, W, C_in]
    float32. H and W must be divisible by 2^(len(channel_mult) - 1).
    """

    channels: int = 128
    channel_mult: tuple[int, ...] = (2, 2, 2)
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    attn_heads: int = 1
    dropout: float = 0.13
    noise_features: int = 128
    embed_dim: int = 512
    label_dim: int = 0
    label_dropout: float = 0.0
    augment_dim: int = 0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c_noise: jax.Array, labels: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        out_channels = x.shape[-1]
        emb = sinusoidal_embedding(c_noise, self.noise_features)
        if self.label_dim:
            require(labels is not None and labels.shape == (x.shape[0], self.label_dim), "labels",
                    None if labels is None else labels.shape,
                    f"one-hot labels of shape ({x.shape[0]}, {self.label_dim}) (model.label_dim > 0)")
            if train and self.label_dropout > 0:
                keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.label_dropout, (x.shape[0], 1))
                labels = labels * keep
            scaled = labels.astype(jnp.float32) * math.sqrt(self.label_dim)  # unit-variance input
            emb = emb + nn.Dense(self.noise_features, kernel_init=xavier_uniform, name="map_label")(scaled)
        if self.augment_dim and self.is_initializing():
            # Networks trained with data augmentation (NVlabs's released EDM models) carry a linear map
            # (no bias) of the augmentation labels into the noise embedding. jaxmem trains and samples
            # without augmentation labels, where that map adds nothing: the parameter exists (so such
            # networks import whole) and is never applied.
            nn.Dense(self.noise_features, use_bias=False, kernel_init=xavier_uniform,
                     name="map_augment")(jnp.zeros((1, self.augment_dim), jnp.float32))
        emb = nn.silu(nn.Dense(self.embed_dim, kernel_init=xavier_uniform, dtype=self.dtype, name="map_layer0")(emb))
        emb = nn.silu(nn.Dense(self.embed_dim, kernel_init=xavier_uniform, dtype=self.dtype, name="map_layer1")(emb))

        def block(name: str, width: int, **kw) -> ResidualBlock:
            return ResidualBlock(width, dropout=self.dropout, attn_heads=self.attn_heads, dtype=self.dtype,
                                 name=name, **kw)

        size = x.shape[1]
        h = Conv(self.channels, 3, xavier_uniform, dtype=self.dtype, name=f"enc_{size}x{size}_conv")(x)
        skips = [h]
        for level, mult in enumerate(self.channel_mult):
            res = size >> level
            if level > 0:  # keeps the width of the level above
                h = block(f"enc_{res}x{res}_down", h.shape[-1], resample="down")(h, emb, train)
                skips.append(h)
            for index in range(self.num_blocks):
                h = block(f"enc_{res}x{res}_block{index}", self.channels * mult,
                          attention=res in self.attn_resolutions)(h, emb, train)
                skips.append(h)

        for level in reversed(range(len(self.channel_mult))):
            res = size >> level
            if level == len(self.channel_mult) - 1:
                h = block(f"dec_{res}x{res}_in0", h.shape[-1], attention=True)(h, emb, train)
                h = block(f"dec_{res}x{res}_in1", h.shape[-1])(h, emb, train)
            else:  # keeps the width of the level below; the next block changes it
                h = block(f"dec_{res}x{res}_up", h.shape[-1], resample="up")(h, emb, train)
            for index in range(self.num_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                last = index == self.num_blocks
                h = block(f"dec_{res}x{res}_block{index}", self.channels * self.channel_mult[level],
                          attention=last and res in self.attn_resolutions)(h, emb, train)

        h = GroupNorm(dtype=self.dtype, name="out_norm")(h)
        h = Conv(out_channels, 3, near_zero, dtype=self.dtype, name="out_conv")(nn.silu(h))
        return h.astype(jnp.float32)


MODEL_FIELDS = ("channels", "channel_mult", "num_blocks", "attn_resolutions", "attn_heads", "dropout",
                "noise_features", "embed_dim", "label_dim", "label_dropout")


def validate_model_config(model: ml_collections.ConfigDict) -> None:
    """Checks the `model` config group (names the field on error)."""
    require(model.channels >= 4 and model.channels % 4 == 0, "model.channels", model.channels,
            "a multiple of 4 (GroupNorm groups: see norm_groups)")
    require(len(model.channel_mult) >= 1 and all(int(m) >= 1 for m in model.channel_mult),
            "model.channel_mult", tuple(model.channel_mult), "a non-empty tuple of integers >= 1")
    require(model.num_blocks >= 1, "model.num_blocks", model.num_blocks, "an integer >= 1")
    require(model.attn_heads >= 1, "model.attn_heads", model.attn_heads, "an integer >= 1")
    require(0.0 <= model.dropout < 1.0, "model.dropout", model.dropout, "0 <= dropout < 1")
    require(0.0 <= model.label_dropout < 1.0, "model.label_dropout", model.label_dropout, "0 <= p < 1")
    require(model.label_dim >= 0, "model.label_dim", model.label_dim, "0 (unconditional) or the class count")
    require(model.get("augment_dim", 0) >= 0, "model.augment_dim", model.get("augment_dim"),
            "0 (no augmentation-label map) or its input size")
    require(model.noise_features >= 2 and model.noise_features % 2 == 0, "model.noise_features",
            model.noise_features, "an even integer >= 2")
    require_choice("model.dtype", model.dtype, DTYPES)
    levels = len(model.channel_mult)
    factor = 2 ** (levels - 1)
    require(model.image_size % factor == 0, "model.image_size", model.image_size,
            f"a multiple of {factor} (the U-Net halves it {levels - 1} times)")
    # Attention runs at the attn_resolutions and always at the lowest resolution (the decoder's first block).
    attended = sorted({model.channels * int(model.channel_mult[-1])} | {
        model.channels * int(mult) for level, mult in enumerate(model.channel_mult)
        if model.image_size // 2**level in model.attn_resolutions})
    require(all(width % model.attn_heads == 0 for width in attended), "model.attn_heads", model.attn_heads,
            f"a divisor of the channel count of every attention block {tuple(attended)}")


def network_from_config(model: ml_collections.ConfigDict) -> SongUNet:
    """The SongUNet described by the `model` config group (checked by validate_model_config at
    the door)."""
    fields = {name: model[name] for name in MODEL_FIELDS}
    fields["channel_mult"] = tuple(fields["channel_mult"])
    fields["attn_resolutions"] = tuple(fields["attn_resolutions"])
    # augment_dim appears only in the configs of imported networks (jaxmem.denoisers.edm_import).
    return SongUNet(**fields, augment_dim=model.get("augment_dim", 0), dtype=DTYPES[model.dtype])


def input_shape(model: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """(H, W, C) of the images the configured network takes."""
    return (model.image_size, model.image_size, model.in_channels)


def init_params(network: SongUNet, rng, shape: tuple[int, int, int], label_dim: int = 0):
    """The network's initial parameters (float32 pytree) for images of `shape` (H, W, C) and
    `label_dim` class labels (0: unconditional), drawn with PRNG key `rng`."""
    x = jnp.zeros((1, *shape), jnp.float32)
    labels = jnp.zeros((1, label_dim), jnp.float32) if label_dim else None
    return network.init(rng, x, jnp.zeros((1,)), labels)["params"]


def abstract_params(network: SongUNet, shape: tuple[int, int, int], label_dim: int = 0):
    """Parameter shapes (jax.ShapeDtypeStruct pytree) of init_params via jax.eval_shape: nothing
    is allocated."""
    return jax.eval_shape(lambda: init_params(network, jax.random.PRNGKey(0), shape, label_dim))


def count_params(tree) -> int:
    """Total number of scalars in a (possibly abstract) parameter pytree."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))

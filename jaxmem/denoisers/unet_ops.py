"""The U-Net's per-channel operations with hand-written gradients, for XLA:CPU's sake.

Autodiff leaves the sums over (B, H, W) of a gradient -- GroupNorm's scale and bias, every
convolution's bias, the noise embedding added to each block -- as reductions fused with the
whole elementwise chain that produces that gradient; XLA:CPU re-runs the chain inside each
reduction and emits those reductions slowly (~3 s of the 8.8 M network's 10 s step). Here the
backward passes sum over the positions with a matrix-vector product against ones ([B, C]; XLA
fuses no producer into a dot, so the gradient is computed once and read once) and only then over
the batch. (An optimization barrier would not do: XLA:CPU removes them before fusion.)

`add_channelwise(h, v)`: h [B, ..., C] + v, v [C] or [B, C] broadcast over the positions.

`group_norm`: group normalisation (the U-Net's most frequent layer).

Forward, for x [B, H, W, C] split into G groups of C/G channels, n = H W C / G values per
(sample, group):
    mu = mean(x),  var = max(0, mean(x^2) - mu^2)   (per sample and group; float32)
    y  = (x - mu) rsqrt(var + eps) scale + bias       (scale, bias [C])
-- flax.linen.GroupNorm's formula (fast variance), so parameters carry over and numbers agree to
float32 rounding; the sums are per-channel dots first (sum_positions), then over each group.

Backward, with r = rsqrt(var + eps), xhat = (x - mu) r and the per-(sample, channel) sums over
the H W positions  A = sum dy,  S = sum dy xhat  ([B, C]):
    dbias = sum_b A,   dscale = sum_b S,
    dx = r (scale dy - a_g - xhat b_g),  a_g = sum_{c in g} scale_c A_c / n,  b_g = sum_{c in g} scale_c S_c / n
(the derivative of the fast variance equals that of the two-pass one: d var / dx = 2 (x - mu) / n).
Autodiff of the forward reduces the big [B, H, W, C] tensors four times, two of them over
(B, H, W) at once; here A and S are two dots and dx one elementwise pass; every other sum is
over [B, C].
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def sum_positions(t: jax.Array) -> jax.Array:
    """[B, ..., C] -> [B, C] float32 (or wider): the sum over every axis between the first and the
    last, as a batched dot ones [B, 1, P] x t [B, P, C] (operands in the layout a dot takes without a
    copy; see the module docstring)."""
    rows = t.reshape(t.shape[0], -1, t.shape[-1])
    ones = jnp.ones((rows.shape[0], 1, rows.shape[1]), t.dtype)
    summed = jax.lax.dot_general(ones, rows, (((2,), (1,)), ((0,), (0,))),
                                 preferred_element_type=jnp.promote_types(t.dtype, jnp.float32))
    return summed[:, 0, :]


def _wide(x: jax.Array) -> jax.Array:
    """x in float32, or wider (float64) if it already is."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _grouped(x: jax.Array, groups: int) -> jax.Array:
    """[B, ..., C] -> [B, P, G, C/G] in float32 or wider (P: the positions)."""
    return _wide(x).reshape(x.shape[0], -1, groups, x.shape[-1] // groups)


def _statistics(x: jax.Array, groups: int, eps: float) -> tuple[jax.Array, jax.Array]:
    """Mean and rsqrt(var + eps) per (sample, group) of x [B, ..., C], each [B, 1, G, 1], from the
    per-channel sums of x and x^2 (dots, see sum_positions) summed over each group's channels."""
    b, channels = x.shape[0], x.shape[-1]
    wide = _wide(x)
    count = wide.size // (b * groups)
    per_group = lambda t: jnp.sum(sum_positions(t).reshape(b, 1, groups, channels // groups), axis=3, keepdims=True)  # noqa: E731
    mean = per_group(wide) / count
    mean_square = per_group(jnp.square(wide)) / count
    variance = jnp.maximum(0.0, mean_square - jnp.square(mean))
    return mean, jax.lax.rsqrt(variance + eps)


@jax.custom_vjp
def add_channelwise(h: jax.Array, v: jax.Array) -> jax.Array:
    """h [B, ..., C] + v with v [C] (a bias) or [B, C] (one vector per sample), in h's dtype."""
    return h + _broadcastable(v, h)


def _broadcastable(v: jax.Array, h: jax.Array) -> jax.Array:
    """v [C] or [B, C] reshaped to broadcast against h [B, ..., C]."""
    return v.astype(h.dtype) if v.ndim == 1 else v.astype(h.dtype).reshape(v.shape[:1] + (1,) * (h.ndim - 2) + v.shape[1:])


def _add_forward(h, v):
    return add_channelwise(h, v), v


def _add_backward(v, dh):
    per_sample = sum_positions(dh)
    return dh, (per_sample if v.ndim == 2 else jnp.sum(per_sample, axis=0)).astype(v.dtype)


add_channelwise.defvjp(_add_forward, _add_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int, eps: float) -> jax.Array:
    """GroupNorm of x [B, ..., C] (channels last) with `groups` groups; scale, bias [C] float32.
    Returns x's shape in x's dtype (statistics and arithmetic in float32, or float64 for float64 x)."""
    return _forward(x, scale, bias, groups, eps)[0]


def _forward(x, scale, bias, groups, eps):
    xg = _grouped(x, groups)
    mean, rstd = _statistics(x, groups, eps)
    channels = x.shape[-1]
    scale_g = scale.astype(xg.dtype).reshape(groups, channels // groups)
    bias_g = bias.astype(xg.dtype).reshape(groups, channels // groups)
    y = ((xg - mean) * (rstd * scale_g) + bias_g).reshape(x.shape).astype(x.dtype)
    return y, (x, scale, mean, rstd)


def _backward(groups, eps, residuals, dy):
    x, scale, mean, rstd = residuals
    channels = x.shape[-1]
    xhat = (_grouped(x, groups) - mean) * rstd  # [B, P, G, C/G]
    dyg = _grouped(dy, groups)
    grouped = (xhat.shape[0], 1, groups, channels // groups)
    sum_dy = sum_positions(dy).reshape(grouped)  # A: [B, 1, G, C/G]
    sum_dy_xhat = sum_positions((dyg * xhat).reshape(x.shape)).reshape(grouped)  # S
    scale_g = scale.astype(xhat.dtype).reshape(groups, channels // groups)
    count = xhat.shape[1] * xhat.shape[3]
    a = jnp.sum(scale_g * sum_dy, axis=3, keepdims=True) / count  # [B, 1, G, 1]
    b = jnp.sum(scale_g * sum_dy_xhat, axis=3, keepdims=True) / count
    dx = (rstd * (scale_g * dyg - a - xhat * b)).reshape(x.shape).astype(x.dtype)
    dscale = jnp.sum(sum_dy_xhat, axis=(0, 1)).reshape(channels).astype(scale.dtype)
    dbias = jnp.sum(sum_dy, axis=(0, 1)).reshape(channels).astype(scale.dtype)
    return dx, dscale, dbias


group_norm.defvjp(_forward, _backward)

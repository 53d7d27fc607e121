"""The FID network's resize: bilinear to 299 x 299 in the legacy TensorFlow convention.

The reference FID Inception (TensorFlow's 2015-12-05 graph, ported by NVlabs for StyleGAN3 and
EDM) resizes with TF1's ResizeBilinear (align_corners=False, no half-pixel centres): output
pixel j samples input coordinate j * in / out, and the neighbour past the last pixel is the last
pixel (border clamp). NVlabs express it as torch's affine_grid + grid_sample (bilinear, border
padding, align_corners=False) with a translation of 1/in - 1/out in normalised coordinates.

Here the resize is separable: out = A_h @ x @ A_w^T with interpolation matrices A [out, in]
whose two entries per row are (1 - f, f) at (floor(c), floor(c) + 1) for source coordinate c.
The coordinates are computed in float32 with the same operations, in the same order, as that
torch path (linspace by fused multiply-add from the nearer end, the grid's scale and shift,
grid_sample's un-normalisation), so the weights agree with it bit for bit and the resized images
to float32 rounding of the weighted sums.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_F32 = np.float32


def _linspace_f32(n: int) -> np.ndarray:
    """float32 linspace(-1, 1, n) as torch's CPU kernel computes it: step in float32, each
    value a fused multiply-add from the nearer end (exact in float64, rounded once)."""
    step = np.float64(_F32(2.0) / _F32(n - 1))
    idx = np.arange(n, dtype=np.float64)
    return np.where(idx < n // 2, -1.0 + step * idx, 1.0 - step * (n - 1 - idx)).astype(_F32)


def source_coordinates(in_size: int, out_size: int) -> np.ndarray:
    """Input pixel coordinate [out_size] float32 sampled by each output pixel (clamped to
    [0, in_size - 1]); mathematically j * in_size / out_size."""
    base = (_linspace_f32(out_size) * _F32(out_size - 1)).astype(_F32) / _F32(out_size)
    shift = _F32(_F32(1.0) / _F32(in_size)) - _F32(_F32(1.0) / _F32(out_size))
    grid = (base + shift).astype(_F32)
    coord = ((grid + _F32(1.0)) * _F32(in_size) - _F32(1.0)) / _F32(2.0)
    return np.clip(coord.astype(_F32), _F32(0.0), _F32(in_size - 1))


@functools.lru_cache(maxsize=16)
def interpolation_matrix(in_size: int, out_size: int) -> np.ndarray:
    """A [out_size, in_size] float32: row j holds the bilinear weights of output pixel j."""
    coord = source_coordinates(in_size, out_size)
    low = np.floor(coord).astype(np.int64)
    frac = (coord - low.astype(_F32)).astype(_F32)
    matrix = np.zeros((out_size, in_size), _F32)
    rows = np.arange(out_size)
    matrix[rows, low] = _F32(1.0) - frac
    high = low + 1
    inside = high < in_size  # past the border the weight is frac = 0 (coordinates are clamped)
    matrix[rows[inside], high[inside]] += frac[inside]
    return matrix


def resize_bilinear(images: jax.Array, size: tuple[int, int] = (299, 299)) -> jax.Array:
    """images [B, H, W, C] float -> [B, size[0], size[1], C] float32, legacy TF bilinear.

    An image already of `size` is returned unchanged (the matrices would be the identity).
    """
    height, width = images.shape[1:3]
    images = images.astype(jnp.float32)
    if (height, width) == tuple(size):
        return images
    rows = jnp.asarray(interpolation_matrix(height, size[0]))
    cols = jnp.asarray(interpolation_matrix(width, size[1]))
    hi = jax.lax.Precision.HIGHEST
    images = jnp.einsum("ih,bhwc->biwc", rows, images, precision=hi)
    return jnp.einsum("jw,biwc->bijc", cols, images, precision=hi)

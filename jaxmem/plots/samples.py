"""Sample grids: images in [-1, 1] tiled into one PNG."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from jaxmem import io
from jaxmem.validation import require


def tile(images: np.ndarray, columns: int) -> np.ndarray:
    """[S, H, W, C] -> one [rows H, columns W, C] mosaic (missing cells black = -1)."""
    count, h, w, c = images.shape
    rows = -(-count // columns)
    canvas = np.full((rows * columns, h, w, c), -1.0, np.float32)
    canvas[:count] = images
    return canvas.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, columns * w, c)


def save_sample_grid(path: str, images: np.ndarray, columns: int = 8, title: str | None = None) -> str:
    """Saves samples [S, H, W, C] (pixels in [-1, 1], clipped for display) as a PNG grid."""
    images = np.asarray(images, np.float32)
    require(images.ndim == 4 and images.shape[-1] in (1, 3) and len(images) >= 1, "images.shape",
            images.shape, "[S, H, W, C] with S >= 1 and C in (1, 3)")
    mosaic = (np.clip(tile(images, min(columns, len(images))), -1.0, 1.0) + 1.0) / 2.0
    width = min(12.0, 0.8 * mosaic.shape[1] / images.shape[2] + 1.0)
    figure, axis = plt.subplots(figsize=(width, width * mosaic.shape[0] / mosaic.shape[1]))
    axis.imshow(mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic, cmap="gray", vmin=0.0, vmax=1.0,
                interpolation="nearest")
    axis.set_axis_off()
    if title:
        axis.set_title(title)
    return io.save_figure(path, figure)

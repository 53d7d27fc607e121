"""FID features of many images: checked input, batches streamed through the sharded network.

Images enter as uint8 [N, H, W, C] with C in {1, 3} (the NVlabs/EDM convention; grey is
repeated to RGB inside the network). jaxmem's own images and samples are float32 in [-1, 1]:
`to_uint8` maps them the way EDM writes its sample PNGs, round(127.5 x + 127.5) clipped to
0..255, so generated samples that overshoot [-1, 1] saturate as they would in an image file.

`extract_features` streams fixed-size global batches (the last one padded, then trimmed):
each batch is split over a 1-D device mesh along the batch axis, the parameters are
replicated, and the [N, 2048] float32 features come back to the host batch by batch, so device
memory is bounded by one batch whatever N (50,000 images for a standard FID).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxmem import parallel, xla_options
from jaxmem.validation import ConfigError, require
from jaxmem.metrics.inception import FEATURE_DIM, fid_features
from jaxmem.progress import Progress

_PER_DEVICE_BATCH = {"cpu": 8}  # other platforms: 128


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float images [N, H, W, C] in [-1, 1] -> uint8 [N, H, W, C] (round(127.5 x + 127.5),
    clipped to 0..255). ConfigError on NaN or inf."""
    images = np.asarray(images)
    if not np.all(np.isfinite(images)):
        raise ConfigError("images hold NaN or inf values; FID needs finite pixels")
    return np.clip(np.rint(images.astype(np.float32) * 127.5 + 127.5), 0, 255).astype(np.uint8)


def check_uint8_images(images: np.ndarray, what: str = "images") -> None:
    """ConfigError unless images is uint8 [N, H, W, 1 or 3] with N >= 1."""
    images = np.asarray(images)
    require(images.dtype == np.uint8, f"{what}.dtype", images.dtype,
            "uint8 (0..255); float images in [-1, 1] go through jaxmem.metrics.to_uint8 first")
    require(images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[0] >= 1, f"{what}.shape",
            images.shape, "[N, H, W, C] with C = 1 (grey) or 3 (RGB) and N >= 1")


def default_batch_size(mesh) -> int:
    """Global batch: 8 images per device on CPU, 128 on accelerators."""
    return _PER_DEVICE_BATCH.get(jax.default_backend(), 128) * mesh.size


@functools.lru_cache(maxsize=8)
def sharded_features(mesh):
    """fid_features jit-compiled with images/features split over `mesh` and replicated params (on a
    CPU with XLA's own convolutions: xla_options.convolutions)."""
    batch = parallel.sharding_along(mesh, 4)
    return jax.jit(fid_features, in_shardings=(parallel.replicated(mesh), batch),
                   out_shardings=parallel.sharding_along(mesh, 2),
                   compiler_options=xla_options.convolutions(list(mesh.devices.flat)))


def extract_features(images: np.ndarray, params, batch_size: int | None = None, mesh=None,
                     name: str = "fid features") -> np.ndarray:
    """Pool features [N, 2048] float32 of uint8 images [N, H, W, 1 or 3].

    batch_size: global batch (at most N, rounded up to a multiple of the device count; default
    default_batch_size). `name` labels the progress lines.
    """
    check_uint8_images(images)
    mesh = mesh if mesh is not None else parallel.make_mesh()
    batch_size = batch_size or default_batch_size(mesh)
    require(batch_size >= 1, "batch_size", batch_size, ">= 1")
    n = len(images)
    batch_size = -(-min(batch_size, n) // mesh.size) * mesh.size
    params = jax.device_put(params, parallel.replicated(mesh))
    apply = sharded_features(mesh)
    out = np.empty((n, FEATURE_DIM), np.float32)
    progress = Progress(name, total=n, unit="image")
    for start in range(0, n, batch_size):
        chunk = images[start:start + batch_size]
        padded, size = parallel.pad_to_multiple(chunk, batch_size)
        features = apply(params, jax.device_put(padded, parallel.sharding_along(mesh, 4)))
        out[start:start + size] = parallel.to_host(features)[:size]
        progress.update(size)
    return out

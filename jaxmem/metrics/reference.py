"""Feature statistics of a reference image set, computed once and cached on disk.

A reference (the real images a model is scored against) is summarised by its FID features
[n, 2048] float32 (needed again for KID and precision/recall) and their Gaussian moments
(float64). `reference_stats` caches them in
    <cache>/fid_reference/<dataset>-<split>-<subset>-<digest>.npz
(<cache> as jaxmem.metrics.weights.cache_folder). The name says which data it holds; the digest
(SHA-1 of the uint8 pixels and their shape) makes a stale or colliding entry impossible: other
pixels, another file. An entry that cannot be read is recomputed with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import zipfile

import numpy as np
from absl import logging

from jaxmem import io
from jaxmem.metrics.features import check_uint8_images, extract_features
from jaxmem.metrics.frechet import gaussian_moments
from jaxmem.metrics.weights import cache_folder


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """features [n, 2048] float32; mean [2048] and cov [2048, 2048] float64."""

    features: np.ndarray
    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> "FeatureStats":
        features = np.asarray(features, np.float32)
        return cls(features, *gaussian_moments(features))

    def __len__(self) -> int:
        return len(self.features)


def pixel_digest(images: np.ndarray) -> str:
    """First 12 hex digits of the SHA-1 of uint8 images' shape and bytes."""
    images = np.ascontiguousarray(images)
    digest = hashlib.sha1(repr(images.shape).encode())
    digest.update(images.tobytes())
    return digest.hexdigest()[:12]


def cache_path(images: np.ndarray, dataset: str, split: str, subset: str, cache_dir: str | None = None) -> str:
    """Cache file of the reference `images` (uint8) named by dataset, split and subset."""
    label = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", f"{dataset}-{split}-{subset}")
    folder = cache_dir or os.path.join(cache_folder(), "fid_reference")
    return os.path.join(folder, f"{label}-{pixel_digest(images)}.npz")


def _read(path: str) -> FeatureStats | None:
    try:
        with np.load(path) as f:
            stats = FeatureStats(f["features"], f["mean"], f["cov"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        logging.warning("reference statistics %s unreadable (%s); computing them again", path, e)
        return None
    return stats


def reference_stats(images: np.ndarray, params, dataset: str, split: str, subset: str,
                    cache_dir: str | None = None, **extract_kwargs) -> FeatureStats:
    """FeatureStats of uint8 reference images [n, H, W, 1 or 3], from the cache when present.

    dataset/split/subset name the entry (e.g. "cifar10", "train", "n1000_seed0");
    extract_kwargs go to extract_features (batch_size, mesh).
    """
    check_uint8_images(images, "reference images")
    path = cache_path(images, dataset, split, subset, cache_dir)
    stats = _read(path) if os.path.isfile(path) else None
    if stats is not None:
        logging.info("reference statistics from %s", path)
        return stats
    stats = FeatureStats.of(extract_features(images, params, name=f"fid features {dataset}/{split}",
                                             **extract_kwargs))
    io.save_npz(path, features=stats.features, mean=stats.mean, cov=stats.cov)
    logging.info("reference statistics written to %s", path)
    return stats

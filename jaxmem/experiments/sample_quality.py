"""Sample quality of any .npz of samples against any image source (launch/sample_quality.py).

Protocol: validate the config -> load the FID Inception weights (converted once,
launch/convert_inception.py) -> read the samples -> load the reference images (a dataset, split
and seeded class-balanced subset) and their cached feature statistics -> FID, KID and
precision/recall -> quality.json and quality.md in the workdir.

Samples file: `samples` or `images` array (samples.key picks another), [N, H, W] or
[N, H, W, C] with C = 1 or 3, either integers 0..255 or floats. Floats are read as jaxmem's
[-1, 1] (what launch/edm_training.py writes in samples.npz) unless the file declares `pixel_range`
[low, high]; they become uint8 as EDM writes its sample PNGs (round(127.5 x + 127.5), clipped:
values past the range saturate, and the share of clipped pixels is reported). Float samples
that are all >= 0 without a declared range are refused as ambiguous ([0, 1]? [0, 255]?).
"""

from __future__ import annotations

import contextlib
import os
import warnings
import zipfile

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxmem import footprint, io
from jaxmem.validation import ConfigError, require
from jaxmem.data import balanced_subset, check_source, load_images
from jaxmem.metrics import scores, weights
from jaxmem.metrics.frechet import SingularCovarianceWarning
from jaxmem.metrics.features import check_uint8_images, to_uint8
from jaxmem.metrics.reference import FeatureStats

SAMPLE_KEYS = ("samples", "images")


def validate_quality_group(q: ml_collections.ConfigDict) -> None:
    """The `quality` group of the experiments that score their own samples (swap, post-hoc EMA):
    sample and reference counts, batch size, KID subsets."""
    require(q.num_samples >= 0 and q.num_reference >= 0 and q.batch_size >= 0,
            "quality.num_samples, quality.num_reference, quality.batch_size", (q.num_samples, q.num_reference,
            q.batch_size), "integers >= 0 (0 = all samples, the whole split, automatic)")
    require(q.kid_subsets >= 1 and q.kid_subset_size >= 2, "quality.kid_subsets, quality.kid_subset_size",
            (q.kid_subsets, q.kid_subset_size), ">= 1 and >= 2 (100 and 1000 are standard)")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, naming the field, before any work: the config and the weight file first, then
    the samples file is read and checked (once the memory estimate allows)."""
    path = config.samples.path
    require(bool(path) and os.path.isfile(path), "samples.path", path,
            "an existing .npz file of samples (e.g. the samples.npz of a launch/edm_training.py run)")
    require(zipfile.is_zipfile(path), "samples.path", path, "an .npz archive (numpy.savez)")
    check_source(config.data.dataset, config.data.path)
    require(config.data.num_reference >= 0, "data.num_reference", config.data.num_reference,
            "0 (all) or a subset size >= 1")
    m = config.metrics
    require(m.kid_subsets >= 1, "metrics.kid_subsets", m.kid_subsets, ">= 1 (100 is standard)")
    require(m.kid_subset_size >= 2, "metrics.kid_subset_size", m.kid_subset_size, ">= 2 (1000 is standard)")
    require(m.neighbours >= 1, "metrics.neighbours", m.neighbours, ">= 1 (3 is standard)")
    require(m.batch_size >= 0, "metrics.batch_size", m.batch_size, "0 (automatic) or a batch size >= 1")
    keys = (config.samples.key,) if config.samples.key else SAMPLE_KEYS
    footprint.require_fits(footprint.quality(config, footprint.npz_shape(path, keys)))
    weights.load(m.weights or None)  # a missing or corrupt weight file fails here, naming its command
    load_samples(path, config.samples.key)  # its array, shape, dtype and values, before the workdir is touched


def _sample_array(path: str, key: str) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path) as f:
        keys = (key,) if key else SAMPLE_KEYS
        found = [k for k in keys if k in f.files]
        require(bool(found), f"{path} arrays", f.files, f"a file holding one of {list(keys)} (samples.key picks one)")
        images = np.asarray(f[found[0]])
        declared = np.asarray(f["pixel_range"], np.float64) if "pixel_range" in f.files else None
    require(images.dtype.kind in "uif", f"{path} {found[0]}.dtype", images.dtype, "uint8 or floats")
    return (images[..., None] if images.ndim == 3 else images), declared


def load_samples(path: str, key: str = "") -> np.ndarray:
    """uint8 samples [N, H, W, C] from an .npz (see module docstring)."""
    images, declared = _sample_array(path, key)
    require(images.size > 0, f"{path} samples.shape", images.shape, "at least one non-empty image")
    if images.dtype.kind in "iu" and declared is None:
        require(images.min() >= 0 and images.max() <= 255, f"{path} samples range",
                (int(images.min()), int(images.max())), "0..255 for integer pixels (or declare pixel_range)")
        images = images.astype(np.uint8)
    if images.dtype == np.uint8:
        check_uint8_images(images, path)
        return images
    require(images.ndim == 4 and images.shape[-1] in (1, 3) and len(images) >= 1, f"{path} samples.shape",
            images.shape, "[N, H, W] or [N, H, W, C] with C = 1 or 3")
    if not np.all(np.isfinite(images)):
        raise ConfigError(f"{path}: samples hold NaN or inf values")
    if declared is not None:
        require(declared.shape == (2,) and declared[0] < declared[1], f"{path} pixel_range", declared.tolist(),
                "[low, high] with low < high")
        images = (images.astype(np.float64) - declared[0]) / (declared[1] - declared[0]) * 2.0 - 1.0
    elif images.min() >= 0:
        raise ConfigError(f"{path}: float samples span [{images.min():g}, {images.max():g}], not jaxmem's [-1, 1]; "
                          "declare their range in the file, e.g. np.savez(path, samples=..., pixel_range=[0, 1])")
    clipped = float(np.mean(np.abs(images) > 1.0))
    if clipped:
        logging.info("samples: %.3g%% of pixel values lie outside [-1, 1] and saturate at 0 or 255", 100 * clipped)
    return to_uint8(images)


def load_reference(data: ml_collections.ConfigDict, num_reference: int, seed: int
                   ) -> tuple[np.ndarray, tuple[str, str, str]]:
    """(uint8 reference images [N, H, W, C], their cache key (dataset, split, subset)) of the
    source data.{dataset, split, data_dir, path}: a class-balanced subset of num_reference (0 = all)."""
    images = load_images(data.dataset, data.split, data.data_dir, data.path)
    subset = "all"
    if num_reference:
        images = images.take(balanced_subset(images.labels, num_reference, seed))
        subset = f"n{num_reference}_seed{seed}"
    dataset = data.dataset if data.dataset != "npz" else os.path.basename(data.path)
    return to_uint8(images.images), (dataset, data.split, subset)


def reference_stats(data: ml_collections.ConfigDict, num_reference: int, seed: int, params,
                    options: scores.ScoreOptions) -> tuple[FeatureStats, str]:
    """(cached FeatureStats of that reference, its name "<dataset>/<split>/<subset>")."""
    images, key = load_reference(data, num_reference, seed)
    return scores.reference_of(images, params, *key, options), "/".join(key)


@contextlib.contextmanager
def logged_warnings():
    """Singular-covariance warnings raised inside become one absl warning line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SingularCovarianceWarning)
        yield
    for warning in caught:
        logging.warning("%s", warning.message)


def options_of(config: ml_collections.ConfigDict) -> scores.ScoreOptions:
    m = config.metrics
    return scores.ScoreOptions(m.kid_subsets, m.kid_subset_size, m.neighbours, m.seed, m.batch_size or None)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Scores the samples; returns the result (also quality.json, quality.md). `config` is
    checked by validate_config (the launcher's door) beforehand."""
    params = weights.load(config.metrics.weights or None)
    samples = load_samples(config.samples.path, config.samples.key)
    options = options_of(config)
    with logged_warnings():
        stats, name = reference_stats(config.data, config.data.num_reference, config.data.subset_seed, params, options)
        result = {"samples": os.path.abspath(config.samples.path), "reference": name,
                  **scores.score_samples(samples, stats, params, options)}
    logging.info("quality: %s", scores.rounded(result))
    if jax.process_index() == 0:
        io.write_json(os.path.join(workdir, "quality.json"), result)
        io.write_text(os.path.join(workdir, "quality.md"),
                      io.markdown_table([scores.rounded(result)], ["reference", *scores.COLUMNS]))
        logging.info("results: %s and %s", os.path.join(workdir, "quality.json"), os.path.join(workdir, "quality.md"))
    return result

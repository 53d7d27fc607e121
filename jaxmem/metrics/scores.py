"""All sample-quality numbers of one generated set against one reference.

    fid                     Frechet Inception Distance (jaxmem.metrics.frechet)
    kid, kid_std, kid_se    Kernel Inception Distance, its std over subsets and standard error
                            (jaxmem.metrics.kernel_distance)
    precision, recall       improved precision/recall, k = 3 (jaxmem.metrics.manifold)
    n_generated, n_reference

`quality_scores` works on features; `reference_of` and `score_samples` take images the way
jaxmem holds them (float32 [N, H, W, C] in [-1, 1], or uint8), so an experiment scores its
samples in two calls.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmem.metrics import kernel_distance as kid_lib
from jaxmem.metrics.features import extract_features, to_uint8
from jaxmem.metrics.frechet import frechet_distance
from jaxmem.metrics.manifold import NEIGHBOURS, precision_recall
from jaxmem.metrics.reference import FeatureStats, reference_stats

COLUMNS = ("fid", "kid", "kid_std", "kid_se", "precision", "recall", "n_generated", "n_reference")


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
    """KID subsets and their size, precision/recall's k, the KID seed; batch_size of the network
    (None: jaxmem.metrics.features.default_batch_size)."""

    kid_subsets: int = kid_lib.SUBSETS
    kid_subset_size: int = kid_lib.SUBSET_SIZE
    neighbours: int = NEIGHBOURS
    seed: int = 0
    batch_size: int | None = None


def quality_scores(generated: FeatureStats, reference: FeatureStats, options: ScoreOptions = ScoreOptions(),
                   mesh=None) -> dict:
    """{column: value} for COLUMNS (floats; counts as ints)."""
    fid = frechet_distance(generated.mean, generated.cov, reference.mean, reference.cov)
    kid = kid_lib.kid(generated.features, reference.features, options.kid_subsets, options.kid_subset_size,
                      options.seed)
    precision, recall = precision_recall(reference.features, generated.features, options.neighbours, mesh)
    return {"fid": fid, "kid": kid.mean, "kid_std": kid.std, "kid_se": kid.stderr, "precision": precision,
            "recall": recall, "n_generated": len(generated), "n_reference": len(reference)}


def as_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 images as they are; float images in [-1, 1] through to_uint8."""
    images = np.asarray(images)
    return images if images.dtype == np.uint8 else to_uint8(images)


def reference_of(images: np.ndarray, params, dataset: str, split: str, subset: str,
                 options: ScoreOptions = ScoreOptions(), mesh=None) -> FeatureStats:
    """Cached FeatureStats of reference images (see jaxmem.metrics.reference)."""
    return reference_stats(as_uint8(images), params, dataset, split, subset, batch_size=options.batch_size,
                           mesh=mesh)


def score_samples(samples: np.ndarray, reference: FeatureStats, params, options: ScoreOptions = ScoreOptions(),
                  name: str = "fid features samples", mesh=None) -> dict:
    """quality_scores of samples (float [-1, 1] or uint8 [N, H, W, C]) against `reference`."""
    features = extract_features(as_uint8(samples), params, options.batch_size, mesh, name=name)
    return quality_scores(FeatureStats.of(features), reference, options, mesh)


def rounded(scores: dict, digits: int = 5) -> dict:
    """The scores with floats rounded to `digits` significant digits, for tables."""
    return {k: (float(f"{v:.{digits}g}") if isinstance(v, float) and np.isfinite(v) else v)
            for k, v in scores.items()}

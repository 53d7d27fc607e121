"""All sample-quality numbers of one generated set against one reference, from features.

    fid                     Frechet Inception Distance (jaxmem.metrics.frechet)
    kid, kid_std, kid_se    Kernel Inception Distance, its std over subsets and standard error
                            (jaxmem.metrics.kernel_distance)
    precision, recall       improved precision/recall, k = 3 (jaxmem.metrics.manifold)
    n_generated, n_reference
"""

from __future__ import annotations

import numpy as np

from jaxmem.metrics import kernel_distance as kid_lib
from jaxmem.metrics.frechet import frechet_distance
from jaxmem.metrics.manifold import NEIGHBOURS, precision_recall
from jaxmem.metrics.reference import FeatureStats

COLUMNS = ("fid", "kid", "kid_std", "kid_se", "precision", "recall", "n_generated", "n_reference")


def quality_scores(generated: FeatureStats, reference: FeatureStats, kid_subsets: int = kid_lib.SUBSETS,
                   kid_subset_size: int = kid_lib.SUBSET_SIZE, k: int = NEIGHBOURS, seed: int = 0,
                   mesh=None) -> dict:
    """{column: value} for COLUMNS (floats; counts as ints)."""
    fid = frechet_distance(generated.mean, generated.cov, reference.mean, reference.cov)
    kid = kid_lib.kid(generated.features, reference.features, kid_subsets, kid_subset_size, seed)
    precision, recall = precision_recall(reference.features, generated.features, k, mesh)
    return {"fid": fid, "kid": kid.mean, "kid_std": kid.std, "kid_se": kid.stderr, "precision": precision,
            "recall": recall, "n_generated": len(generated), "n_reference": len(reference)}


def rounded(scores: dict, digits: int = 5) -> dict:
    """The scores with floats rounded to `digits` significant digits, for tables."""
    return {k: (float(f"{v:.{digits}g}") if isinstance(v, float) and np.isfinite(v) else v)
            for k, v in scores.items()}

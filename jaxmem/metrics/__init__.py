"""Sample quality the way the field measures it: FID, KID and precision/recall on the standard
FID Inception-v3 features (TF 2015-12-05 graph, NVlabs/EDM input convention), in JAX.

    params = weights.load()                              # converted once: launch/convert_inception.py
    feats = extract_features(to_uint8(samples), params)  # [N, 2048], sharded and streamed
    ref = reference_stats(real_uint8, params, "digits", "train", "all")   # cached on disk
    quality_scores(FeatureStats.of(feats), ref)          # fid, kid (+ std, se), precision, recall
    score_samples(samples, ref, params)                  # the same from float [-1, 1] samples

Modules: inception (network), resize (its input resize), weights (converter, loader),
features (batched extraction), frechet, kernel_distance (KID), manifold (precision/recall):
the metrics, pure functions on features; reference (cached reference statistics), scores (all
numbers of one comparison).
"""

from jaxmem.metrics.features import check_uint8_images, extract_features, to_uint8
from jaxmem.metrics.frechet import SingularCovarianceWarning, fid, frechet_distance, gaussian_moments
from jaxmem.metrics.kernel_distance import kid
from jaxmem.metrics.manifold import precision_recall
from jaxmem.metrics.reference import FeatureStats, reference_stats
from jaxmem.metrics.scores import COLUMNS, ScoreOptions, quality_scores, reference_of, score_samples

__all__ = ["COLUMNS", "FeatureStats", "ScoreOptions", "SingularCovarianceWarning", "check_uint8_images",
           "extract_features", "fid", "frechet_distance", "gaussian_moments", "kid", "precision_recall",
           "quality_scores", "reference_of", "reference_stats", "score_samples", "to_uint8"]

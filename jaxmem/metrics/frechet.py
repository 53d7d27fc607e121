"""Frechet Inception Distance from features: Gaussian moments and a careful matrix square root.

FID (Heusel et al. 2017) is the Frechet (2-Wasserstein) distance between Gaussians fitted to
two feature sets:

    FID = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)).

The usual code takes scipy.linalg.sqrtm of the non-symmetric product S_1 S_2, which returns
complex noise and loses digits when the covariances are near-singular (always so below 2048
samples). Here the trace term uses tr((S_1 S_2)^(1/2)) = tr((A S_2 A)^(1/2)) with A = S_1^(1/2):
A S_2 A is symmetric positive semi-definite and similar to S_1 S_2, so its trace square root is
the sum of the square roots of its eigenvalues (float64 eigh; eigenvalues within rounding of
zero, d * eps * the largest, count as zero). Everything here runs on the host in float64 numpy: a 2048 x 2048
symmetric eigendecomposition is not worth a device round trip.
"""

from __future__ import annotations

import warnings

import numpy as np

from jaxmem.validation import ConfigError, require


class SingularCovarianceWarning(RuntimeWarning):
    """Fewer feature vectors than dimensions: the covariance is singular (FID is then biased up)."""


def gaussian_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [d], covariance [d, d]) in float64 of features [n, d], n >= 2.

    The covariance is the unbiased one (divides by n - 1), as numpy.cov, computed from centred
    features. Warns (SingularCovarianceWarning) when n <= d: the covariance then has rank at
    most n - 1, and FID is computed exactly for those singular moments but is biased upward
    relative to the usual 10k-50k samples.
    """
    features = np.asarray(features, np.float64)
    require(features.ndim == 2, "features.ndim", features.ndim, "2 ([n, d])")
    n, d = features.shape
    require(n >= 2, "number of feature vectors", n, ">= 2 for a covariance")
    if not np.all(np.isfinite(features)):
        raise ConfigError("features hold NaN or inf values; check the images fed to the network")
    if n <= d:
        warnings.warn(f"{n} feature vectors in {d} dimensions: the covariance is singular (rank <= {n - 1}); "
                      "FID is computed for these moments as they are (eigenvalues within rounding of zero "
                      f"count as zero) but is biased upward at this sample size; use more than {d} images "
                      "(10k-50k is standard) to compare with published numbers",
                      SingularCovarianceWarning, stacklevel=2)
    mean = features.mean(axis=0)
    centred = features - mean
    return mean, centred.T @ centred / (n - 1)


def _psd_eigenvalues(values: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise removed: those within d * eps * max|value|
    of zero (negative ones included) are set to zero, since their square roots would turn noise
    of 1e-16 into errors of 1e-8."""
    floor = len(values) * np.finfo(np.float64).eps * max(float(np.max(np.abs(values))), 0.0)
    return np.where(values > floor, values, 0.0)


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root [d, d] float64 of a symmetric positive semi-definite matrix (eigh;
    see _psd_eigenvalues for the rounding noise)."""
    matrix = np.asarray(matrix, np.float64)
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(_psd_eigenvalues(values))) @ vectors.T


def trace_sqrt_product(cov_1: np.ndarray, cov_2: np.ndarray) -> float:
    """tr((cov_1 cov_2)^(1/2)) for symmetric PSD cov_1, cov_2 [d, d], via tr((A cov_2 A)^(1/2))
    with A = cov_1^(1/2)."""
    root = sqrtm_psd(cov_1)
    middle = root @ np.asarray(cov_2, np.float64) @ root
    values = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    return float(np.sum(np.sqrt(_psd_eigenvalues(values))))


def frechet_distance(mean_1: np.ndarray, cov_1: np.ndarray, mean_2: np.ndarray, cov_2: np.ndarray) -> float:
    """Frechet distance between N(mean_1, cov_1) and N(mean_2, cov_2) (means [d], covariances
    [d, d]); >= 0 up to rounding, 0 for equal moments."""
    mean_1, mean_2 = np.asarray(mean_1, np.float64), np.asarray(mean_2, np.float64)
    require(mean_1.shape == mean_2.shape and mean_1.ndim == 1, "means' shapes", (mean_1.shape, mean_2.shape),
            "two equal [d] vectors")
    d = mean_1.shape[0]
    require(np.shape(cov_1) == (d, d) and np.shape(cov_2) == (d, d), "covariances' shapes",
            (np.shape(cov_1), np.shape(cov_2)), f"({d}, {d}) each")
    diff = mean_1 - mean_2
    trace = np.trace(cov_1) + np.trace(cov_2) - 2.0 * trace_sqrt_product(cov_1, cov_2)
    return float(diff @ diff + trace)


def fid(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """FID between two feature sets [n_1, d] and [n_2, d]."""
    return frechet_distance(*gaussian_moments(features_1), *gaussian_moments(features_2))

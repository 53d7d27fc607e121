"""Kernel Inception Distance: unbiased polynomial-kernel MMD^2 averaged over random subsets.

KID (Binkowski et al. 2018, "Demystifying MMD GANs") with the kernel
k(x, y) = (x . y / d + 1)^3 on d-dimensional features. For subsets X, Y of m points each,

    MMD^2_u = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2,

an unbiased estimate of the squared MMD (it can be negative). KID is its mean over
`num_subsets` pairs of subsets drawn without replacement, m = min(n_1, n_2, subset_size)
(the NVlabs/StyleGAN3 protocol: 100 subsets of 1,000); the spread over subsets is reported as
its standard deviation (ddof = 1) and the mean's standard error std / sqrt(num_subsets).

Numerics: the estimate is unchanged when a constant is added to the kernel, so the kernel is
evaluated as k - 1 = t (t (t + 3) + 3), t = x . y / d, which keeps float32 sums of many terms
close to zero instead of near (1 + t)^3. Subsets run on device one at a time (lax.map), each
three [m, m] Gram matrices at highest matmul precision.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.validation import require

SUBSETS = 100
SUBSET_SIZE = 1000


@dataclasses.dataclass(frozen=True)
class KID:
    """mean: KID; std: its standard deviation over subsets; stderr: std / sqrt(subsets)."""

    mean: float
    std: float
    stderr: float
    subset_size: int
    num_subsets: int


def _kernel_minus_one(a: jax.Array, b: jax.Array) -> jax.Array:
    """(a b^T / d + 1)^3 - 1 [m, m] for a, b [m, d]."""
    t = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST) / a.shape[1]
    return t * (t * (t + 3.0) + 3.0)


def mmd2_unbiased(x: jax.Array, y: jax.Array) -> jax.Array:
    """Unbiased MMD^2 (scalar) of equal-sized samples x, y [m, d], m >= 2, polynomial kernel."""
    m = x.shape[0]
    kxx, kyy, kxy = _kernel_minus_one(x, x), _kernel_minus_one(y, y), _kernel_minus_one(x, y)
    off_diagonal = (jnp.sum(kxx) - jnp.trace(kxx) + jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return off_diagonal - 2.0 * jnp.mean(kxy)


@jax.jit
def _subset_mmd2(features_1, features_2, index_1, index_2):
    """MMD^2 [S] of the subset pairs given by index arrays [S, m]."""
    return jax.lax.map(lambda idx: mmd2_unbiased(features_1[idx[0]], features_2[idx[1]]),
                       jnp.stack([index_1, index_2], axis=1))


def kid(features_1: np.ndarray, features_2: np.ndarray, num_subsets: int = SUBSETS,
        subset_size: int = SUBSET_SIZE, seed: int = 0) -> KID:
    """KID between feature sets [n_1, d] and [n_2, d] (see module docstring); deterministic in
    `seed`."""
    features_1 = np.asarray(features_1, np.float32)
    features_2 = np.asarray(features_2, np.float32)
    require(features_1.ndim == 2 and features_2.ndim == 2 and features_1.shape[1] == features_2.shape[1],
            "feature shapes", (features_1.shape, features_2.shape), "[n_1, d] and [n_2, d]")
    m = min(len(features_1), len(features_2), subset_size)
    require(m >= 2, "KID subset size", m, ">= 2 feature vectors in each set")
    require(num_subsets >= 1, "num_subsets", num_subsets, ">= 1")
    rng = np.random.default_rng(seed)
    index_1 = np.stack([rng.choice(len(features_1), m, replace=False) for _ in range(num_subsets)])
    index_2 = np.stack([rng.choice(len(features_2), m, replace=False) for _ in range(num_subsets)])
    values = np.asarray(_subset_mmd2(features_1, features_2, index_1, index_2), np.float64)
    std = float(values.std(ddof=1)) if num_subsets > 1 else float("nan")
    return KID(float(values.mean()), std, float(std / np.sqrt(num_subsets)), m, num_subsets)

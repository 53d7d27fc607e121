"""Synthetic data of the GMM laboratory: an isotropic GMM and a low-rank "image-like" model.

Isotropic GMM: K means drawn uniformly on the sphere of radius sqrt(d), shared variance
s0^2 (default 1), uniform priors; x = mu_k + s0 z.
Low-rank image-like model: x = c (x) a_k (Kronecker product), a_k a class template (the
class-mean image of the offline digits, unit norm, 64 pixels), c ~ N(0, I_C); the data of
class k spans a C-dimensional subspace of R^(C * 64).

Both draw N training points and a validation set from numpy's PCG64 generator seeded by
`seed`, so the same arguments give the same arrays on every machine.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmem.config import require


@dataclasses.dataclass(frozen=True)
class GMMData:
    """train: [N, d] float32; val: [N_val, d] float32; labels: [N] int component of each point;
    means: [K, d] float32 component means; variance: s0^2 of every component (None when the
    model is not an isotropic GMM)."""

    train: np.ndarray
    val: np.ndarray
    labels: np.ndarray
    means: np.ndarray
    variance: float | None

    @property
    def dim(self) -> int:
        return self.train.shape[1]


def isotropic_gmm(dim: int, num_components: int, num_train: int, num_val: int, seed: int,
                  variance: float = 1.0) -> GMMData:
    """K means uniform on the sphere of radius sqrt(d); x = mu_k + sqrt(s0^2) z, k uniform."""
    require(dim >= 1, "data.dim (d)", dim, "an integer >= 1")
    require(num_components >= 1, "data.num_components (K)", num_components, "an integer >= 1")
    require(num_train >= num_components, "data.num_components (K)", num_components,
            f"K <= N = {num_train} (training points)")
    require(num_val >= 0, "data.num_val", num_val, "an integer >= 0")
    require(variance > 0, "data.variance (s0^2)", variance, "a positive float")
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((num_components, dim))
    means = np.sqrt(dim) * directions / np.linalg.norm(directions, axis=1, keepdims=True)

    def draw(n):
        labels = rng.integers(num_components, size=n)
        return means[labels] + np.sqrt(variance) * rng.standard_normal((n, dim)), labels

    train, labels = draw(num_train)
    val, _ = draw(num_val)
    return GMMData(train.astype(np.float32), val.astype(np.float32), labels.astype(np.int32),
                   means.astype(np.float32), float(variance))


def digit_templates(num_components: int) -> np.ndarray:
    """Class templates a_k: the mean image of digits 0..K-1 (offline digits), unit norm: [K, 64]."""
    from jaxmem.data import load_images

    digits = load_images("digits")
    require(1 <= num_components <= 10, "data.num_components (K)", num_components,
            "1..10 for the digit templates")
    flat = digits.flat.astype(np.float64)
    templates = np.stack([flat[digits.labels == k].mean(axis=0) for k in range(num_components)])
    return templates / np.linalg.norm(templates, axis=1, keepdims=True)


def lowrank_templates(num_components: int, rank: int, num_train: int, num_val: int, seed: int
                      ) -> GMMData:
    """x = c (x) a_k with c ~ N(0, I_C) (C = `rank`), k uniform: points in R^(C * 64).

    `means` holds the class means (zero: the classes differ in their subspace, not their mean).
    """
    require(rank >= 1, "data.rank (C)", rank, "an integer >= 1")
    require(num_train >= num_components, "data.num_components (K)", num_components,
            f"K <= N = {num_train} (training points)")
    templates = digit_templates(num_components)
    rng = np.random.default_rng(seed)

    def draw(n):
        labels = rng.integers(num_components, size=n)
        codes = rng.standard_normal((n, rank))
        points = (codes[:, :, None] * templates[labels][:, None, :]).reshape(n, -1)
        return points, labels

    train, labels = draw(num_train)
    val, _ = draw(num_val)
    means = np.zeros((num_components, train.shape[1]), np.float32)
    return GMMData(train.astype(np.float32), val.astype(np.float32), labels.astype(np.int32),
                   means, None)

"""Synthetic data of the GMM laboratory: an isotropic GMM, a GMM in a subspace, a low-rank
"image-like" model, and replicated training points.

Isotropic GMM: K means drawn uniformly on the sphere of radius sqrt(d), shared variance
s0^2 (default 1), uniform priors; x = mu_k + s0 z.
Subspace GMM (intrinsic dimension C < d): the isotropic GMM of dimension C embedded by a
random orthonormal basis B [d, C], plus off-subspace noise of variance tau^2 per dimension:
x = B (mu_k + s0 z) + tau (I - B B^T) xi, z ~ N(0, I_C), xi ~ N(0, I_d).
Low-rank image-like model: x = c (x) a_k (Kronecker product), a_k a class template (the
class-mean image of the offline digits, unit norm, 64 pixels), c ~ N(0, I_Cmax) with only its
first C entries non-zero (C = Cmax by default); the data of class k spans a C-dimensional
subspace of R^(Cmax * 64).

Replication: `replicate` gives each distinct training point a multiplicity m_i >= 1, the number
of times it is stored; `training_rows` lists the stored rows, the N distinct points first (in
their order) and then the extra copies, so with every m_i = 1 the rows are the points.

All draw N training points and a validation set from numpy's PCG64 generator seeded by
`seed`, so the same arguments give the same arrays on every machine.
"""

from __future__ import annotations

import dataclasses

import numpy as np



@dataclasses.dataclass(frozen=True)
class GMMData:
    """train: [N, d] float32 distinct training points; val: [N_val, d] float32; labels: [N] int
    component of each point; means: [K, d] float32 component means; variance: s0^2 of every
    component (None when the model is not an isotropic GMM); multiplicity: [N] int64 copies of
    each point in the training set (None: every point once); basis: [d, C] float32 orthonormal
    basis of the subspace GMM's subspace (None otherwise), whose off-subspace variance is
    off_variance (tau^2)."""

    train: np.ndarray
    val: np.ndarray
    labels: np.ndarray
    means: np.ndarray
    variance: float | None
    multiplicity: np.ndarray | None = None
    basis: np.ndarray | None = None
    off_variance: float = 0.0

    @property
    def dim(self) -> int:
        return self.train.shape[1]


BASIS_SALT = 1  # appended to a subspace GMM's seed for its basis and off-subspace noise


def isotropic_gmm(dim: int, num_components: int, num_train: int, num_val: int, seed: int,
                  variance: float = 1.0) -> GMMData:
    """K means uniform on the sphere of radius sqrt(d); x = mu_k + sqrt(s0^2) z, k uniform."""
    if dim < 1 or num_components < 1 or num_val < 0 or not variance > 0:
        raise ValueError(f"isotropic_gmm needs a data dimension dim >= 1, num_components >= 1, num_val >= 0 and "
                         f"variance > 0; got dim = {dim}, num_components = {num_components}, num_val = {num_val}, "
                         f"variance = {variance}")
    _check_components(num_components, num_train)
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


def subspace_gmm(dim: int, rank: int, num_components: int, num_train: int, num_val: int, seed: int,
                 variance: float = 1.0, off_variance: float = 0.0) -> GMMData:
    """The isotropic GMM of dimension C = `rank` (means on the sphere of radius sqrt(C)) embedded in
    R^d by a random orthonormal basis B, plus off-subspace noise tau^2 = off_variance per dimension."""
    if not 1 <= rank <= dim or off_variance < 0:
        raise ValueError(f"subspace_gmm needs 1 <= rank <= dim and off_variance >= 0; got rank = {rank}, "
                         f"dim = {dim}, off_variance = {off_variance}")
    inner = isotropic_gmm(rank, num_components, num_train, num_val, seed, variance)
    rng = np.random.default_rng([*np.ravel(seed).tolist(), BASIS_SALT])  # the inner draws do not move
    basis, _ = np.linalg.qr(rng.standard_normal((dim, rank)))

    def embed(points):
        xi = rng.standard_normal((len(points), dim))
        off = xi - (xi @ basis) @ basis.T
        return (points.astype(np.float64) @ basis.T + np.sqrt(off_variance) * off).astype(np.float32)

    train, val = embed(inner.train), embed(inner.val)
    return GMMData(train, val, inner.labels, (inner.means.astype(np.float64) @ basis.T).astype(np.float32),
                   float(variance), basis=basis.astype(np.float32), off_variance=float(off_variance))


def _check_components(num_components: int, num_train: int) -> None:
    """ValueError unless every one of the K components can have a training point (K <= N)."""
    if num_train < num_components:
        raise ValueError(f"num_components K = {num_components} exceeds num_train N = {num_train}: K <= N "
                         "(training points)")


REPLICATIONS = ("none", "fraction", "zipf")


def multiplicities(num_train: int, profile: str, fraction: float = 0.0, copies: int = 1,
                   exponent: float = 1.0, seed=0) -> np.ndarray:
    """[N] int64 copies of each of N distinct points.

    profile 'none': every point once; 'fraction': round(fraction N) points, chosen at random,
    stored `copies` times each (the training set has N + round(fraction N) (copies - 1) rows);
    'zipf': the point of random rank i (1-based) is stored max(1, round(copies i^-exponent)) times
    (copies = the largest multiplicity). The choice is seeded by `seed` alone.
    """
    if (profile not in REPLICATIONS or not 0.0 <= fraction <= 1.0 or not isinstance(copies, int | np.integer)
            or copies < 1 or not exponent > 0):
        raise ValueError(f"multiplicities needs a profile of {REPLICATIONS}, 0 <= fraction <= 1, an integer "
                         f"copies >= 1 and exponent > 0; got {profile!r}, {fraction}, {copies}, {exponent}")
    counts = np.ones(num_train, np.int64)
    if profile == "none":
        return counts
    order = np.random.default_rng(seed).permutation(num_train)
    if profile == "fraction":
        counts[order[:int(round(fraction * num_train))]] = copies
    else:
        ranks = np.arange(1, num_train + 1, dtype=np.float64)
        counts[order] = np.maximum(1, np.rint(copies * ranks ** -exponent)).astype(np.int64)
    return counts


def replicate(data: GMMData, counts: np.ndarray) -> GMMData:
    """`data` with multiplicities `counts` [N] (see multiplicities)."""
    counts = np.asarray(counts, np.int64)
    if counts.shape != (len(data.train),) or not np.all(counts >= 1):
        raise ValueError(f"counts of shape {counts.shape} are not [{len(data.train)}] integers >= 1 (one per "
                         "training point)")
    return dataclasses.replace(data, multiplicity=counts)


def multiplicity_of(data: GMMData) -> np.ndarray:
    """[N] int64 copies of each distinct training point (ones without replication)."""
    return np.ones(len(data.train), np.int64) if data.multiplicity is None else data.multiplicity


def most_replicated_first(data: GMMData) -> np.ndarray:
    """[N] indices of the distinct points by decreasing multiplicity, point order among equals
    (the identity without replication)."""
    return np.argsort(-multiplicity_of(data), kind="stable")


def training_rows(data: GMMData) -> np.ndarray:
    """[N + sum(m_i - 1), d] the stored training set: the N distinct points, then each point's
    m_i - 1 extra copies (in point order)."""
    extra = np.repeat(np.arange(len(data.train)), multiplicity_of(data) - 1)
    return data.train if extra.size == 0 else np.concatenate([data.train, data.train[extra]])


def digit_templates(num_components: int) -> np.ndarray:
    """Class templates a_k: the mean image of digits 0..K-1 (offline digits), unit norm: [K, 64]."""
    from jaxmem.data import load_images

    digits = load_images("digits")
    if not 1 <= num_components <= 10:
        raise ValueError(f"num_components = {num_components}: the digit templates are 1..10 classes")
    flat = digits.flat.astype(np.float64)
    templates = np.stack([flat[digits.labels == k].mean(axis=0) for k in range(num_components)])
    return templates / np.linalg.norm(templates, axis=1, keepdims=True)


def lowrank_templates(num_components: int, rank: int, num_train: int, num_val: int, seed: int,
                      active_rank: int | None = None) -> GMMData:
    """x = c (x) a_k with c ~ N(0, I_C) (C = `rank`), k uniform: points in R^(C * 64); with
    active_rank C' < C only the first C' entries of c are non-zero (rank C' at the same d).

    `means` holds the class means (zero: the classes differ in their subspace, not their mean).
    """
    active_rank = rank if active_rank is None else active_rank
    if not 1 <= active_rank <= rank:
        raise ValueError(f"lowrank_templates needs 1 <= active_rank <= rank; got active_rank = {active_rank}, "
                         f"rank = {rank}")
    _check_components(num_components, num_train)
    templates = digit_templates(num_components)
    rng = np.random.default_rng(seed)

    def draw(n):
        labels = rng.integers(num_components, size=n)
        codes = rng.standard_normal((n, rank))
        codes[:, active_rank:] = 0.0
        points = (codes[:, :, None] * templates[labels][:, None, :]).reshape(n, -1)
        return points, labels

    train, labels = draw(num_train)
    val, _ = draw(num_val)
    means = np.zeros((num_components, train.shape[1]), np.float32)
    return GMMData(train.astype(np.float32), val.astype(np.float32), labels.astype(np.int32),
                   means, None)

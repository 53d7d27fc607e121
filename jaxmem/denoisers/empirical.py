"""The empirical optimal denoiser, streamed over blocks of the training set.

For a training set {x_i}, i = 1..N, in R^d and VE noise y = x + sigma * eps, the denoiser that
minimises the denoising loss on the empirical distribution is the posterior mean

    w_i(y, sigma) = softmax_i(-|y - x_i|^2 / (2 sigma^2)),     m_sigma(y) = sum_i w_i x_i

(DESIGN.md, "Formulas"). The softmax runs over N candidates; it is computed block by block with a
running log-sum-exp (`RunningSoftmax`), so a [Q, N] matrix never exists: memory is O(Q * block).
`RunningSoftmax` is the one streamed log-sum-exp of jaxmem; the multi-level concentration kernel in
`jaxmem.geometry.concentration` reuses it.

Numerics. Squared distances come from the matmul expansion |y|^2 - 2 y.x_i + |x_i|^2, whose
absolute error (~ float32 eps * |y|^2) is harmless where it is small against 2 sigma^2 (at large
sigma the logit error is ~ eps * d / 2, below 1e-4 even for d = 3072) but decides the weights
where a query sits almost on a training point at tiny sigma. Hence, in every block, the
candidate nearest to the query is re-computed exactly from the difference y - x_i
(`exact_nearest_in_block`), and the softmax works with distances relative to the per-query
minimum squared distance (`RunningSoftmax`), so nothing rounds away, underflows or turns into
0/0 at sigma = 1e-3.

Usage as a denoiser (same calling convention as a trained network):

    params = empirical.make_params(train_images, block_size=1024)   # train: [N, H, W, C] or [N, d]
    x0_hat = empirical.apply(params, noisy, sigma)                   # noisy: [B, H, W, C], sigma: () or [B]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import require

HIGHEST = jax.lax.Precision.HIGHEST


class RunningSoftmax(NamedTuple):
    """Streamed softmax over candidates i with logits l_i = -beta e_i, for a leading query shape S.

    e_i are energies in squared-distance units (|y - x_i|^2, or |y - x_i|^2 minus a per-query
    constant) and beta = 1 / (2 sigma^2) > 0 the inverse temperature. A state summarises the
    candidates seen so far relative to their minimum energy E (attained at i = i_min):
      inv_temperature [*S]      beta
      min_energy      [*S]      E = min_i e_i
      rest            [*S]      sum_{i != i_min} exp(-beta (e_i - E))   (softmax mass = 1 + rest)
      mass_sq         [*S]      sum_i exp(-2 beta (e_i - E))
      mass_logit      [*S]      sum_i exp(-beta (e_i - E)) (-beta (e_i - E))
      weighted        [*S, d]   sum_i exp(-beta (e_i - E)) v_i   (None when no values are streamed)
    Each block is summarised on its own (`of_block`) and merged into the running state (`merge`).
    Differences e_i - E are taken in distance units before scaling by beta, i.e. the per-query
    minimum squared distance is subtracted first: at sigma = 1e-3 a logit like -1.7e6 never
    exists, so nothing rounds, underflows or turns into 0/0. Keeping `rest` apart from the
    leading 1 keeps 1 - max weight and the entropy accurate to float32 relative precision when
    the posterior is almost one-hot: every accumulated term is positive.
    """

    inv_temperature: jax.Array
    min_energy: jax.Array
    rest: jax.Array
    mass_sq: jax.Array
    mass_logit: jax.Array
    weighted: jax.Array | None

    @classmethod
    def init(cls, inv_temperature: jax.Array, value_dim: int | None = None) -> "RunningSoftmax":
        """Empty state (no candidates: mass 0) for inv_temperature [*S] and values of dim value_dim."""
        zeros = jnp.zeros_like(inv_temperature)
        weighted = None if value_dim is None else jnp.zeros((*zeros.shape, value_dim), zeros.dtype)
        return cls(inv_temperature, zeros + jnp.inf, zeros - 1.0, zeros, zeros, weighted)

    @classmethod
    def of_block(cls, inv_temperature: jax.Array, energies: jax.Array, valid: jax.Array,
                 values: jax.Array | None = None) -> "RunningSoftmax":
        """Summary of one block: energies [*S, B], valid [B] (padding mask), values [B, d] or None."""
        # One materialised buffer, so the minimum and the exponents see bit-identical energies and
        # the block's best candidates get exactly centred = 0 (no argmin needed to exclude them).
        energies = jax.lax.optimization_barrier(jnp.where(valid, energies, jnp.inf))
        block_min = jnp.min(energies, axis=-1)
        # <= 0; padding clamps to a huge negative finite value, so p = 0 and p * centred = 0.
        centred = jnp.maximum((block_min[..., None] - energies) * inv_temperature[..., None],
                              jnp.finfo(energies.dtype).min)
        p = jnp.exp(centred)
        leaders = jnp.sum(centred == 0.0, axis=-1).astype(p.dtype)
        rest = jnp.sum(jnp.where(centred < 0.0, p, 0.0), axis=-1) + (leaders - 1.0)
        weighted = None if values is None else jnp.matmul(p, values, precision=HIGHEST)
        return cls(inv_temperature, block_min, rest, jnp.sum(p * p, axis=-1), jnp.sum(p * centred, axis=-1), weighted)

    def merge(self, other: "RunningSoftmax") -> "RunningSoftmax":
        """The summary of both candidate sets (same inv_temperature)."""
        beta = self.inv_temperature
        new_min = jnp.minimum(self.min_energy, other.min_energy)
        gaps = [(new_min - part.min_energy) * beta for part in (self, other)]  # <= 0; -inf if empty
        scales = [jnp.exp(gap) for gap in gaps]
        masses = [1.0 + part.rest for part in (self, other)]
        rest = jnp.where(self.min_energy <= other.min_energy, self.rest + scales[1] * masses[1],
                         other.rest + scales[0] * masses[0])
        mass_sq = scales[0] ** 2 * self.mass_sq + scales[1] ** 2 * other.mass_sq
        mass_logit = sum(jnp.where(mass > 0, scale * (part.mass_logit + gap * mass), 0.0)
                         for part, gap, scale, mass in zip((self, other), gaps, scales, masses))
        weighted = None
        if self.weighted is not None:
            weighted = scales[0][..., None] * self.weighted + scales[1][..., None] * other.weighted
        return RunningSoftmax(beta, new_min, rest, mass_sq, mass_logit, weighted)

    def update(self, energies: jax.Array, valid: jax.Array, values: jax.Array | None = None) -> "RunningSoftmax":
        """Folds in one block: energies [*S, B], valid [B], values [B, d] (when streaming values)."""
        return self.merge(RunningSoftmax.of_block(self.inv_temperature, energies, valid, values))

    def log_partition(self) -> jax.Array:
        """log sum_i exp(-beta e_i), [*S]."""
        return -self.inv_temperature * self.min_energy + jnp.log1p(self.rest)

    def max_weight(self) -> jax.Array:
        """max_i w_i = 1 / (1 + rest), [*S]."""
        return 1.0 / (1.0 + self.rest)

    def entropy(self) -> jax.Array:
        """-sum_i w_i log w_i in nats, [*S]."""
        return jnp.maximum(jnp.log1p(self.rest) - self.mass_logit / (1.0 + self.rest), 0.0)

    def effective_count(self) -> jax.Array:
        """1 / sum_i w_i^2, in [1, N], [*S]."""
        return jnp.square(1.0 + self.rest) / self.mass_sq

    def mean(self) -> jax.Array:
        """sum_i w_i v_i, [*S, d]."""
        return self.weighted / (1.0 + self.rest)[..., None]


def make_params(train: np.ndarray | jax.Array, block_size: int = 1024) -> dict:
    """Packs a training set into the denoiser's params (a pytree of arrays, safe to jit/vmap over).

    train: [N, ...] (images or flat vectors; flattened to d = prod(...)). The points are padded
    to a whole number of blocks of `block_size` (the streaming granularity: memory per call is
    O(queries * block_size)); padded rows are masked out. Returns
      {"points": [num_blocks, block, d] float32, "sq_norms": [num_blocks, block], "valid": [num_blocks, block] bool}.
    """
    train = np.asarray(train, np.float32)
    require(train.ndim >= 2, "train.ndim", train.ndim, ">= 2 ([N, d] or [N, H, W, C])")
    n = train.shape[0]
    require(n > 0, "train (training set size N)", n, "N >= 1 (the training set is empty)")
    require(isinstance(block_size, int | np.integer) and block_size >= 1, "block_size", block_size,
            "an integer >= 1")
    flat = train.reshape(n, -1)
    require(bool(np.all(np.isfinite(flat))), "train", "non-finite values", "finite values only")
    block = min(int(block_size), n)
    num_blocks = -(-n // block)
    padded = np.zeros((num_blocks * block, flat.shape[1]), np.float32)
    padded[:n] = flat
    valid = np.arange(num_blocks * block) < n
    points = padded.reshape(num_blocks, block, -1)
    return {
        "points": jnp.asarray(points),
        "sq_norms": jnp.asarray(np.einsum("kbd,kbd->kb", points, points)),
        "valid": jnp.asarray(valid.reshape(num_blocks, block)),
    }


def dimension(params: dict) -> int:
    """d, the flattened dimension of the training points."""
    return params["points"].shape[-1]


def exact_nearest_in_block(approx_sq_dist: jax.Array, anchors: jax.Array, block_points: jax.Array,
                           valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of each row's nearest valid candidate and its exact difference vector.

    approx_sq_dist [Q, B] (matmul expansion), anchors [Q, d], block_points [B, d], valid [B].
    Returns (nearest [Q] int, anchors - block_points[nearest] as [Q, d]). Callers overwrite the
    expansion at `nearest` with quantities computed from the exact difference.
    """
    nearest = jnp.argmin(jnp.where(valid, approx_sq_dist, jnp.inf), axis=-1)
    return nearest, anchors - block_points[nearest]


def replace_at(matrix: jax.Array, columns: jax.Array, values: jax.Array) -> jax.Array:
    """matrix [Q, B] with matrix[q, columns[q]] = values[q]."""
    hit = jnp.arange(matrix.shape[-1]) == columns[:, None]
    return jnp.where(hit, values[:, None], matrix)


def squared_distances(queries: jax.Array, query_sq_norms: jax.Array, block_points: jax.Array,
                      block_sq_norms: jax.Array, valid: jax.Array) -> jax.Array:
    """|y_q - x_i|^2 for one block, [Q, B]: matmul expansion, nearest candidate exact, >= 0."""
    cross = jnp.matmul(queries, block_points.T, precision=HIGHEST)
    approx = jnp.maximum(query_sq_norms[:, None] - 2.0 * cross + block_sq_norms[None, :], 0.0)
    nearest, diff = exact_nearest_in_block(approx, queries, block_points, valid)
    return replace_at(approx, nearest, jnp.sum(diff * diff, axis=-1))


def posterior(params: dict, y: jax.Array, sigma: jax.Array, with_mean: bool = True) -> RunningSoftmax:
    """Streamed posterior over the training set for flat queries y [Q, d] at sigma [Q] (> 0).

    Energies |y - x_i|^2 at inverse temperature 1 / (2 sigma^2); one lax.scan step per block.
    The result gives W = max_weight(), entropy(), effective_count() and, with `with_mean`,
    m_sigma(y) = mean() [Q, d].
    """
    y = y.astype(jnp.float32)
    y_sq = jnp.sum(y * y, axis=-1)

    def step(state, block):
        points, sq_norms, valid = block
        energies = squared_distances(y, y_sq, points, sq_norms, valid)
        return state.update(energies, valid, points if with_mean else None), None

    init = RunningSoftmax.init(0.5 / jnp.square(sigma.astype(jnp.float32)), y.shape[1] if with_mean else None)
    state, _ = jax.lax.scan(step, init, (params["points"], params["sq_norms"], params["valid"]))
    return state


def check_sigma(sigma, field: str = "sigma") -> None:
    """Rejects concrete noise levels that are not finite and > 0 (traced values pass through)."""
    if isinstance(sigma, jax.core.Tracer):
        return
    values = np.asarray(sigma, np.float64)
    require(values.size > 0 and bool(np.all(np.isfinite(values) & (values > 0))), field,
            values.tolist() if values.size <= 8 else f"array with min {values.min():.3g}",
            "finite noise levels > 0")


def per_example_sigma(sigma, batch: int) -> jax.Array:
    """sigma as a [batch] float32 vector: a scalar is broadcast, B values ([B], [B, 1, 1, 1]) flattened."""
    sigma = jnp.asarray(sigma, jnp.float32)
    require(sigma.size in (1, batch), "sigma.shape", tuple(sigma.shape),
            f"a scalar or {batch} values (one per example)")
    return jnp.broadcast_to(sigma.reshape(-1), (batch,))


def apply(params: dict, x: jax.Array, sigma) -> jax.Array:
    """m_sigma(x): the empirical optimal denoiser, a drop-in for a network's apply.

    params: from `make_params` (holds the training set). x: [B, ...] noisy inputs whose trailing
    dims flatten to d (e.g. [B, H, W, C]). sigma: scalar or [B] noise standard deviation, > 0,
    same units as the pixels (or any shape holding B values, e.g. [B, 1, 1, 1]). Returns the
    posterior-mean clean estimate with x's shape.
    """
    d = dimension(params)
    require(x.ndim >= 2 and int(np.prod(x.shape[1:])) == d, "x.shape", tuple(x.shape),
            f"[B, ...] with trailing dims flattening to d = {d} (the training set's dimension)")
    require(x.shape[0] > 0, "x (queries)", tuple(x.shape), "at least one query (the batch is empty)")
    check_sigma(sigma)
    sigma = per_example_sigma(sigma, x.shape[0])
    return posterior(params, x.reshape(x.shape[0], d), sigma).mean().reshape(x.shape).astype(x.dtype)

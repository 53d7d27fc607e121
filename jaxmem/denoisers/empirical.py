"""The empirical optimal denoiser, streamed over blocks of the training set.

For a training set {x_i}, i = 1..N, in R^d and VE noise y = x + sigma * eps, the denoiser that
minimises the denoising loss on the empirical distribution is the posterior mean

    w_i(y, sigma) = softmax_i(-|y - x_i|^2 / (2 sigma^2)),     m_sigma(y) = sum_i w_i x_i

(docs/formulas.md). The softmax runs over N candidates; it is computed block by block with a
running log-sum-exp (`RunningSoftmax`), so a [Q, N] matrix never exists: memory is O(Q * block).
`RunningSoftmax` and the certified block distances (`scan_blocks`) are the one streamed softmax
of jaxmem: the multi-level concentration and coverage kernels in `jaxmem.geometry` reuse them.

Numerics: what is exact and why.
  * Centring. Distances are translation invariant, so queries and training points are centred on
    the training mean before the matmul expansion |a|^2 - 2 a.b + |b|^2 (a = y - c, b = x_i - c):
    data with a large common offset (values ~1e4 +- 1) lose nothing to |a|^2 ~ 1e8 d.
  * Certificate. The expansion's rounding error that differs between the candidates of a query
    is at most `expansion_error_bound`; a direct float32 evaluation sum_j (y_j - x_ij)^2 errs by
    at most ~ d eps/2 |y - x_i|^2. `needs_direct` flags a pair (y, x_i) when its bound exceeds
    TRUST_FACTOR times the direct one (y close to x_i relative to their norms: exact and near
    duplicates, tight clusters), when its energy may tie the leader's (a far query whose nearest
    image is stored k times), and for the block's lowest candidate (the likely runner-up, which
    sets 1 - W and the entropy where the posterior is nearly one-hot). Every flagged pair, of any
    multiplicity, gets its energy from the direct difference y - x_i (`direct_terms`), so exact
    duplicates get bit-identical energies. Every other energy errs by at most TRUST_FACTOR times
    a direct evaluation's worst case and cannot tie the leader. Generic data flag about one pair
    per query and block, as many as before the certificate.
  * Softmax. `RunningSoftmax` subtracts the per-query minimum energy before scaling by
    1 / (2 sigma^2), so nothing rounds, underflows or turns into 0/0 at sigma = 1e-3.

Usage as a denoiser (same calling convention as a trained network):

    params = empirical.make_params(train_images, block_size=1024)   # train: [N, H, W, C] or [N, d]
    x0_hat = empirical.apply(params, noisy, sigma)                   # noisy: [B, H, W, C], sigma: () or [B]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.validation import require

HIGHEST = jax.lax.Precision.HIGHEST
# An expanded energy is kept where its error bound is within this factor of a direct float32
# evaluation's worst case (`needs_direct`); with |a| ~ |b| that holds for a cosine below ~0.8.
TRUST_FACTOR = 32.0


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

    @classmethod
    def of_energies(cls, inv_temperature: jax.Array, energies: jax.Array, valid: jax.Array) -> "RunningSoftmax":
        """`of_block`'s summary, without values, of energies [*S, B] that are already one
        materialised buffer (a loop carry, so the minimum and the exponents read the same values)
        with padding (valid [B] False) set to +inf.

        Written in few passes that XLA:CPU runs fast (the multi-level kernels call it L times per
        block): one exponential per energy, p * p from p (XLA would rewrite exp(c) * exp(c) as a
        second exponential, so p passes an optimization barrier), the leaders counted as floor(p),
        which is 1 exactly where p == 1 (centred = 0, or within float32 rounding of 0, where
        either count gives the same rest) and 0 elsewhere, and the two-operand terms p - floor(p)
        and p * centred masked with `valid`, which makes XLA compute them in its own loop fusions
        rather than in YNNPACK reductions (3-5x slower with two inputs). Equal to `of_block` up to
        the rounding of the sums. Every reduction is per row: nothing couples rows (or devices,
        when the rows are sharded).
        """
        block_min = jnp.min(energies, axis=-1)
        centred = jnp.maximum((block_min[..., None] - energies) * inv_temperature[..., None],
                              jnp.finfo(energies.dtype).min)
        p = jax.lax.optimization_barrier(jnp.exp(centred))
        ones = jnp.floor(p)
        leaders = jnp.sum(ones, axis=-1)
        rest = jnp.sum(jnp.where(valid, p - ones, 0.0), axis=-1) + (leaders - 1.0)
        return cls(inv_temperature, block_min, rest, jnp.sum(p * p, axis=-1),
                   jnp.sum(jnp.where(valid, p * centred, 0.0), axis=-1), None)

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
      {"points": [num_blocks, block, d] float32 (as given, for direct differences),
       "center": [d] float32 training mean (the expansion works on x - center),
       "sq_norms": [num_blocks, block] |x_i - center|^2, "valid": [num_blocks, block] bool}.
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
    center = flat.mean(axis=0, dtype=np.float64).astype(np.float32)
    padded = np.broadcast_to(center, (num_blocks * block, flat.shape[1])).copy()  # padding: |x - c| = 0
    padded[:n] = flat
    valid = np.arange(num_blocks * block) < n
    centred = padded - center  # the same float32 subtraction as on the device in `scan_blocks`
    return {
        "points": jnp.asarray(padded.reshape(num_blocks, block, -1)),
        "center": jnp.asarray(center),
        "sq_norms": jnp.asarray(np.einsum("nd,nd->n", centred, centred).reshape(num_blocks, block)),
        "valid": jnp.asarray(valid.reshape(num_blocks, block)),
    }


def param_shapes(num_train: int, dim: int, block_size: int = 1024) -> dict:
    """The jax.ShapeDtypeStructs of `make_params` for num_train points of dimension dim (no data)."""
    block = min(int(block_size), int(num_train))
    num_blocks = -(-int(num_train) // block)
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    return {"points": f32(num_blocks, block, dim), "center": f32(dim), "sq_norms": f32(num_blocks, block),
            "valid": jax.ShapeDtypeStruct((num_blocks, block), jnp.bool_)}


def dimension(params: dict) -> int:
    """d, the flattened dimension of the training points."""
    return params["points"].shape[-1]


def expansion_error_bound(dim: int, query_norms: jax.Array, point_norms: jax.Array) -> jax.Array:
    """Bound on the candidate-dependent rounding error of the expanded |a - b|^2, [Q, B].

    query_norms |a| [Q], point_norms |b| [B] (centred vectors, float32). A float32 dot product of
    length d errs by at most d (eps/2) |a| |b| in any summation order (Cauchy-Schwarz), so -2 a.b
    and |b|^2 contribute d eps/2 (2|a| + |b|) |b|; the final additions and the centring add at
    most a few eps/2 (|a| + |b|)^2. |a|^2 is one number shared by all candidates of a query, so its
    own error shifts them alike and cancels in the softmax. The result is 4x that sum:
    2 eps (d (2|a| + |b|) |b| + (|a| + |b|)^2), slack for accelerators' float32 emulation.
    """
    eps = jnp.finfo(jnp.float32).eps
    a, b = query_norms[:, None], point_norms[None, :]
    return 2.0 * eps * (dim * (2.0 * a + b) * b + jnp.square(a + b))


def needs_direct(energies: jax.Array, bounds: jax.Array, dim: int, candidates: jax.Array,
                 leader_bound: jax.Array) -> jax.Array:
    """Which expanded energies [Q, B] must be re-computed from direct differences, [Q, B] bool.

    bounds [Q, B] from `expansion_error_bound`; candidates [Q, B] the pairs that may be flagged;
    leader_bound [Q] the smallest energy + bound over every candidate seen so far, this block
    included (an upper bound on the leader's energy). Flagged:
      close     the bound exceeds TRUST_FACTOR times d eps/2 e, the worst-case error of a direct
                float32 evaluation of the energy e (duplicates, near duplicates, tight clusters);
      may lead  the energy may tie the leader's (e - bound <= leader_bound), whatever the
                multiplicity of the tie;
      nearest   the block's lowest candidate: where the posterior is nearly one-hot, 1 - W and the
                entropy are the runner-up's weight, whose relative error is its logit gap times
                its relative energy error, so the likely runner-up is made exact as well.
    """
    close = bounds > TRUST_FACTOR * 0.5 * dim * jnp.finfo(jnp.float32).eps * energies
    may_lead = energies - bounds <= leader_bound[:, None]
    nearest = jnp.arange(energies.shape[-1]) == jnp.argmin(jnp.where(candidates, energies, jnp.inf), axis=-1)[:, None]
    return candidates & (close | may_lead | nearest)


def direct_terms(flags: jax.Array, anchors: jax.Array, points: jax.Array, noise: jax.Array | None,
                 terms: tuple) -> tuple:
    """terms with every flagged pair re-computed from the direct difference anchors_q - points_i.

    flags [Q, B]; anchors [Q, d] and points [B, d] uncentred (near pairs subtract exactly);
    terms (G,) or (G, C) [Q, B] with G = |anchor - x_i|^2 and C = <noise_q, anchor - x_i> (noise
    [Q, d] given). A while loop takes each row's first pending pair per pass: as many passes as
    the most flagged pairs of one row, none when nothing is flagged.
    """
    columns = jnp.arange(flags.shape[-1])

    def one_per_row(carry):
        pending, terms = carry
        column = jnp.argmax(pending, axis=-1)
        hit = (columns == column[:, None]) & pending
        diff = anchors - points[column]
        exact = (jnp.sum(diff * diff, axis=-1),) + (() if noise is None else (jnp.sum(noise * diff, axis=-1),))
        return pending & ~hit, tuple(jnp.where(hit, value[:, None], term) for value, term in zip(exact, terms))

    return jax.lax.while_loop(lambda carry: jnp.any(carry[0]), one_per_row, (flags, terms))[1]


def scan_blocks(params: dict, anchors: jax.Array, fold, init, noise: jax.Array | None = None,
                source: jax.Array | None = None):
    """lax.scan over training blocks with certified distance terms; returns the final fold state.

    anchors [Q, d] (queries y, or clean points x for the multi-level kernels); with noise z
    [Q, d] the terms are (G, C), G = |x - x_i|^2 and C = <z, x - x_i>, else (G,). source [Q]:
    training index of each anchor or -1; the source's terms are exactly 0. Each step calls
    state = fold(state, terms [Q, B] each, centred block points [B, d], valid [B]).
    """
    anchors = anchors.astype(jnp.float32)
    centred = anchors - params["center"]
    sq_norms = jnp.sum(centred * centred, axis=-1)
    noise_dot = None if noise is None else jnp.sum(noise * centred, axis=-1)
    dim, block = dimension(params), params["points"].shape[1]

    def step(carry, xs):
        state, leader_bound = carry
        k, points, point_sq_norms, valid = xs
        block_centred = points - params["center"]
        gram = jnp.maximum(sq_norms[:, None] - 2.0 * jnp.matmul(centred, block_centred.T, precision=HIGHEST)
                           + point_sq_norms[None, :], 0.0)
        bounds = expansion_error_bound(dim, jnp.sqrt(sq_norms), jnp.sqrt(point_sq_norms))
        terms = (gram,)
        if noise is not None:
            terms += (noise_dot[:, None] - jnp.matmul(noise, block_centred.T, precision=HIGHEST),)
        is_source = jnp.zeros(gram.shape, bool)
        if source is not None:
            is_source = (k * block + jnp.arange(points.shape[0]))[None, :] == source[:, None]
            terms, bounds = tuple(jnp.where(is_source, 0.0, term) for term in terms), jnp.where(is_source, 0.0, bounds)
        leader_bound = jnp.minimum(leader_bound, jnp.min(jnp.where(valid, terms[0] + bounds, jnp.inf), axis=-1))
        flags = needs_direct(terms[0], bounds, dim, valid & ~is_source, leader_bound)
        terms = direct_terms(flags, anchors, points, noise, terms)
        return (fold(state, terms, block_centred, valid), leader_bound), None

    xs = (jnp.arange(params["points"].shape[0]), params["points"], params["sq_norms"], params["valid"])
    init = (init, jnp.full(anchors.shape[:1], jnp.inf, jnp.float32))
    return jax.lax.scan(step, init, xs)[0][0]


def posterior(params: dict, y: jax.Array, sigma: jax.Array, with_mean: bool = True) -> RunningSoftmax:
    """Streamed posterior over the training set for flat queries y [Q, d] at sigma [Q] (> 0).

    Energies |y - x_i|^2 (certified, see the module notes) at inverse temperature 1 / (2 sigma^2).
    The result gives W = max_weight(), entropy(), effective_count() and, with `with_mean`,
    mean() = sum_i w_i (x_i - center) [Q, d] (`posterior_mean` adds the center back).
    """
    def fold(state, terms, centred_points, valid):
        return state.update(terms[0], valid, centred_points if with_mean else None)

    init = RunningSoftmax.init(0.5 / jnp.square(sigma.astype(jnp.float32)), y.shape[1] if with_mean else None)
    return scan_blocks(params, y, fold, init)


@jax.jit
def posterior_mean(params: dict, y: jax.Array, sigma: jax.Array) -> jax.Array:
    """m_sigma(y) = sum_i w_i x_i for flat queries y [Q, d] and sigma [Q] > 0; [Q, d] float32.

    Compiled once per shape (a plain call costs ~1 ms, not a fresh trace)."""
    return params["center"] + posterior(params, y, sigma).mean()

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
    return posterior_mean(params, x.reshape(x.shape[0], d), sigma).reshape(x.shape).astype(x.dtype)

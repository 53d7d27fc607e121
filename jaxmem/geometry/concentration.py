"""Posterior concentration of the empirical optimal denoiser over a whole grid of noise levels.

For a clean point x (a training point for W_sigma) with noise z and levels s_1..s_L, the query at
level s is y = x + s z and (paper A; docs/formulas.md)

    |y - x_i|^2 = |x - x_i|^2 + 2 s <z, x - x_i> + s^2 |z|^2 = G_i + 2 s C_i + s^2 |z|^2.

G and C need one matmul each per block of training points and serve every level: up to the
constant s^2 |z|^2, which cancels in the softmax, the energies are e_i(s) = G_i + 2 s C_i at
inverse temperature 1 / (2 s^2). The softmax over i is streamed with the shared
`RunningSoftmax` (per query and level; each block is folded tile of queries by tile, level by
level, `fold_levels`), giving at each level

    W_sigma = E[max_i w_i],   entropy -sum w log w,   effective count 1 / sum w_i^2,
    source weight w_{i*} (i* the training index of x; exactly exp(-logsumexp) since e_{i*} = 0).

Numerics (`jaxmem.denoisers.empirical.scan_blocks`): G and C come from matmuls on data centred
on the training mean; G_{i*} = C_{i*} = 0 exactly for the source; every pair the rounding-error
certificate flags (clean point close to x_i relative to their norms: duplicates and near
duplicates of any multiplicity; or G_i possibly tying the smallest G) gets G and C from the direct
difference x - x_i, which serves every level. Every other energy errs by at most
`empirical.TRUST_FACTOR` times a direct float32 evaluation's worst case.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.validation import require
from jaxmem.denoisers import empirical
from jaxmem.denoisers.empirical import RunningSoftmax
from jaxmem.geometry.queries import check_queries, map_query_chunks

NO_SOURCE = -1
CONCENTRATION_FIELDS = ("max_weight", "entropy", "effective_count", "source_weight")
# On CPU each block's queries are folded in tiles of rows whose [rows, block] float32 buffers
# (energies, exponentials, ...) take this many bytes: 32 rows of a 1024-point block, which stay
# in L2 across the passes of a level. Quiet 2-core machine, bench inputs (Q 512, N 4096, block
# 1024, 40 levels), median of 5 alternating rounds against the fold before tiles: 8 rows 0.89x
# its time, 16 rows 0.86x, 32 rows 0.84-0.85x, 64 rows 0.95x, 128 rows 0.92x.
CPU_TILE_BYTES = 128 * 1024


def num_query_tiles(num_queries: int, block: int, query_tile: int | None = None) -> int:
    """Tiles the queries of one block are folded in: the most that keep >= query_tile rows each
    and divide num_queries. query_tile None: CPU_TILE_BYTES // (4 block) rows on CPU, all queries
    in one tile elsewhere (an accelerator wants whole-block kernels)."""
    if query_tile is None:
        query_tile = max(1, CPU_TILE_BYTES // (4 * block)) if jax.default_backend() == "cpu" else num_queries
    return max(n for n in range(1, max(1, num_queries // query_tile) + 1) if num_queries % n == 0)


def fold_levels(state: RunningSoftmax, gram, cross, valid, sigmas) -> RunningSoftmax:
    """Folds one block into the per-level states [L, T]: gram, cross [T, B], valid [B], sigmas [L].

    The block is summarised level by level (lax.scan) with `RunningSoftmax.of_energies`: the
    energies gram + 2 s cross (padding +inf) of a level are the loop carry, written by the
    previous step, so the block minimum and the exponents read one materialised buffer. The
    summaries [L, T] are merged into the state once, after the scan.
    """
    def energies(sigma):
        return jnp.where(valid, gram + 2.0 * sigma * cross, jnp.inf)

    def level(level_energies, xs):
        next_sigma, inv_temperature = xs
        summary = RunningSoftmax.of_energies(inv_temperature, level_energies, valid)
        # A zero-valued data dependency of each row on its summary, the carry's last reader
        # (mass_logit is finite): the next energies are written after it, into the carry's own
        # buffer; without it XLA copies the carry twice per level. Row by row, so rows sharded
        # over devices need no collective.
        return energies(next_sigma + 0.0 * summary.mass_logit[:, None]), summary

    xs = (jnp.roll(sigmas, -1), state.inv_temperature)
    return state.merge(jax.lax.scan(level, energies(sigmas[0]), xs)[1])


@functools.partial(jax.jit, static_argnames="query_tile")
def concentration_kernel(clean, noise, source, params, sigmas, query_tile: int | None = None) -> dict:
    """Per-query concentration at every level in one pass; clean/noise [Q, d], source [Q], sigmas [L].

    query_tile: rows per query tile of the fold (`num_query_tiles`; None: the platform's default).
    Returns {field: [Q, L]} for CONCENTRATION_FIELDS.
    """
    clean, noise, sigmas = clean.astype(jnp.float32), noise.astype(jnp.float32), sigmas.astype(jnp.float32)
    num_levels, num_queries = sigmas.shape[0], clean.shape[0]
    tiles = num_query_tiles(num_queries, params["points"].shape[1], query_tile)
    rows = num_queries // tiles

    # Tile j holds queries j, j + tiles, ...: with the queries sharded over devices, each device
    # keeps its own rows of every tile.
    def to_tiles(a):  # [Q, ...] -> [tiles, rows, ...]
        return jnp.swapaxes(a.reshape(rows, tiles, *a.shape[1:]), 0, 1)

    def state_to_tiles(a):  # [L, Q] -> [tiles, L, rows]
        return jnp.moveaxis(a.reshape(num_levels, rows, tiles), 2, 0)

    def fold(state, terms, centred_points, valid):
        def tile(xs):
            tile_state, gram, cross = xs
            return fold_levels(tile_state, gram, cross, valid, sigmas)

        folded = jax.lax.map(tile, (jax.tree.map(state_to_tiles, state), *map(to_tiles, terms)))
        return jax.tree.map(lambda a: jnp.moveaxis(a, 0, 2).reshape(num_levels, num_queries), folded)

    inv_temperature = jnp.broadcast_to((0.5 / jnp.square(sigmas))[:, None], (num_levels, num_queries))
    state = empirical.scan_blocks(params, clean, fold, RunningSoftmax.init(inv_temperature), noise, source)
    state = jax.tree.map(jnp.transpose, state)  # [L, Q] -> [Q, L]
    source_weight = jnp.where(source[:, None] >= 0, jnp.exp(-state.log_partition()), 0.0)
    return {"max_weight": state.max_weight(), "entropy": state.entropy(),
            "effective_count": state.effective_count(), "source_weight": source_weight}


def posterior_concentration(params: dict, clean: np.ndarray, noise: np.ndarray, sigmas: np.ndarray,
                            source: np.ndarray | None = None, chunk_size: int = 1024, mesh=None) -> dict:
    """Concentration statistics of noisy queries x_q + s z_q for every s in `sigmas`.

    params: `empirical.make_params(train)`. clean, noise: [Q, d] float32 (z ~ N(0, I); the same
    draw serves every level). sigmas: [L] > 0. source: [Q] training index of each clean point
    (NO_SOURCE = -1 for points outside the training set); default all NO_SOURCE.
    Returns {field: [Q, L] float32} for CONCENTRATION_FIELDS (entropy in nats). Queries are
    processed in chunks sharded over the mesh.
    """
    clean, noise = np.asarray(clean, np.float32), np.asarray(noise, np.float32)
    check_queries(params, clean, noise)
    empirical.check_sigma(sigmas, "sigmas")
    source = np.full(clean.shape[0], NO_SOURCE, np.int32) if source is None else np.asarray(source, np.int32)
    require(source.shape == clean.shape[:1], "source.shape", source.shape, f"({clean.shape[0]},)")
    num_train = int(np.sum(params["valid"]))
    require(bool(np.all((source >= NO_SOURCE) & (source < num_train))), "source",
            f"range [{source.min()}, {source.max()}]", f"training indices in [0, {num_train}) or NO_SOURCE = -1")
    return map_query_chunks(concentration_kernel, (clean, noise, source),
                            (params, np.asarray(sigmas, np.float32)), chunk_size, mesh, name="concentration")


def per_sigma_concentration(params: dict, clean, noise, sigmas) -> dict:
    """Baseline for the benchmark and tests: one full streamed pass per level on y = x + s z.

    Same statistics as `concentration_kernel` (without source weights), [Q, L] each.
    """
    def one_level(sigma):
        state = empirical.posterior(params, clean + sigma * noise, jnp.full(clean.shape[:1], sigma),
                                    with_mean=False)
        return state.max_weight(), state.entropy(), state.effective_count()

    max_weight, entropy, effective_count = jax.lax.map(one_level, sigmas.astype(jnp.float32))
    return {"max_weight": max_weight.T, "entropy": entropy.T, "effective_count": effective_count.T}


per_sigma_concentration_jit = jax.jit(per_sigma_concentration)


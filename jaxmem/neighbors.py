"""Exact blocked k-nearest-neighbour search and the 1/3 memorization test.

Algorithm, per block of queries (sharded over devices along the query axis):
  1. candidates: stream the training set in blocks; score every pair by the matmul
     expansion |x|^2 - 2 <q, x> (|q|^2 is constant per query) at highest precision and keep
     the `num_candidates` lowest scores in a running merge. Memory is bounded by
     query_block x train_block, never Q x N.
  2. exact re-rank: recompute the candidates' squared distances from direct differences
     sum_j (q_j - x_j)^2 and sort them by (distance, index).
  3. certificate: the expansion's rounding error is bounded by
     err = 2 d eps (|q| + max|x|)^2. The answer is provably exact when the best score left
     out of the candidate set, minus err, still exceeds the k-th exact distance. Queries that
     fail this test (near-ties, many duplicates) are recomputed exactly on the host in float64.

The matmul expansion alone gets d1 wrong exactly where memorization lives (a sample sitting
on a training point, |q|^2 ~ |x|^2 >> |q - x|^2), which is why steps 2-3 exist.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import parallel
from jaxmem.validation import require

MEMORIZATION_RATIO = 1.0 / 3.0
_CHUNK = 32  # columns per chunk in the two-stage selection of candidates
EXTRA_CANDIDATES = 6  # beyond k: enough that generic data certifies without the host fallback


def blocks_for_memory(bytes_available: int, dim: int, num_candidates: int,
                      train_block: int = 16384) -> tuple[int, int]:
    """(query_block, train_block) whose working set fits in `bytes_available` bytes.

    Per query the working set is ~3 float32 rows of train_block scores (scores, chunk minima,
    masks) plus 2 x num_candidates x dim floats for the re-rank. query_block is a power of two
    in [256, 16384].
    """
    per_query = 4 * (3 * train_block + 2 * num_candidates * dim)
    fit = max(256, min(16384, bytes_available // per_query))
    return 2 ** int(np.log2(fit)), train_block


def default_blocks(dim: int, num_candidates: int) -> tuple[int, int]:
    """(query_block per device, train_block): fixed on CPU; on accelerators an eighth of the
    device's memory limit (memory_stats()['bytes_limit'], 16 GiB when unknown)."""
    if jax.default_backend() == "cpu":
        return 2048, 4096
    stats = jax.local_devices()[0].memory_stats() or {}
    return blocks_for_memory(stats.get("bytes_limit", 16 * 2**30) // 8, dim, num_candidates)


def train_blocking(num_train: int, num_candidates: int, train_block: int) -> tuple[int, int]:
    """(num_blocks, train_block) streaming `num_train` points in even blocks of about
    `train_block` (at least num_candidates, a multiple of the selection chunk when large): the
    training set is padded to num_blocks x train_block rows."""
    num_blocks = -(-num_train // max(num_candidates, min(train_block, num_train)))
    train_block = max(num_candidates, -(-num_train // num_blocks))  # even blocks: little padding
    if train_block >= 4 * num_candidates * _CHUNK:
        train_block = -(-train_block // _CHUNK) * _CHUNK
    return num_blocks, train_block


def _smallest(scores: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """The `count` smallest entries of each row of scores [B, n], ascending: (values, indices).

    Two stages when n splits into chunks of _CHUNK columns: one min-reduction per chunk, then
    top-k over the chunk minima, then top-k inside the `count` chosen chunks. Exact, because
    each of the `count` smallest entries lies in a chunk whose minimum is among the `count`
    smallest minima. ~35x faster than lax.top_k over the full row on CPU.
    """
    batch, n = scores.shape
    if n % _CHUNK or n < 4 * count * _CHUNK:
        values, indices = jax.lax.top_k(-scores, count)
        return -values, indices
    chunks = scores.reshape(batch, n // _CHUNK, _CHUNK)
    _, chunk_ids = jax.lax.top_k(-jnp.min(chunks, axis=2), count)  # [B, count]
    selected = jnp.take_along_axis(chunks, chunk_ids[:, :, None], axis=1).reshape(batch, count * _CHUNK)
    values, position = jax.lax.top_k(-selected, count)
    chunk_of = jnp.take_along_axis(chunk_ids, position // _CHUNK, axis=1)
    return -values, chunk_of * _CHUNK + position % _CHUNK


@functools.partial(jax.jit, static_argnames=("k", "num_candidates", "train_block"))
def knn_block(queries, train, train_sqnorm, max_train_norm, *, k, num_candidates, train_block):
    """Exact top-k for one query block.

    queries: [B, d] float32. train: [Np, d] float32 padded to a multiple of train_block;
    train_sqnorm: [Np] with +inf on padding rows. Returns squared distances [B, k], indices
    [B, k] int32 and certified [B] bool.
    """
    num_blocks = train.shape[0] // train_block
    batch = queries.shape[0]

    def scan_block(best, j):
        best_scores, best_indices = best
        x = jax.lax.dynamic_slice_in_dim(train, j * train_block, train_block)
        x_sqnorm = jax.lax.dynamic_slice_in_dim(train_sqnorm, j * train_block, train_block)
        scores = x_sqnorm[None, :] - 2.0 * jnp.dot(queries, x.T, precision=jax.lax.Precision.HIGHEST)
        scores, indices = _smallest(scores, num_candidates)
        merged_scores = jnp.concatenate([best_scores, scores], axis=1)
        merged_indices = jnp.concatenate([best_indices, indices + j * train_block], axis=1)
        best_scores, position = _smallest(merged_scores, num_candidates)
        return (best_scores, jnp.take_along_axis(merged_indices, position, axis=1)), None

    init = (jnp.full((batch, num_candidates), jnp.inf, jnp.float32),
            jnp.zeros((batch, num_candidates), jnp.int32))
    (scores, candidates), _ = jax.lax.scan(scan_block, init, jnp.arange(num_blocks))

    exact = jnp.sum(jnp.square(queries[:, None, :] - train[candidates]), axis=-1)  # [B, c]
    exact, candidates = jax.lax.sort((exact, candidates), dimension=1, num_keys=2)

    q_sqnorm = jnp.sum(jnp.square(queries), axis=1)
    d = queries.shape[1]
    error_bound = 2.0 * d * jnp.finfo(jnp.float32).eps * jnp.square(jnp.sqrt(q_sqnorm) + max_train_norm)
    best_left_out = scores[:, -1] - error_bound  # no training point outside the set scores lower
    certified = best_left_out > exact[:, k - 1] - q_sqnorm
    return exact[:, :k], candidates[:, :k], certified


@functools.partial(jax.jit, static_argnames=("padded_size",))
def _prepare_train(train, padded_size):
    """Pads train [N, d] to [padded_size, d]; squared norms [padded_size] are +inf on padding."""
    sqnorm = jnp.sum(jnp.square(train), axis=1)
    pad = padded_size - train.shape[0]
    return (jnp.pad(train, ((0, pad), (0, 0))),
            jnp.concatenate([sqnorm, jnp.full((pad,), jnp.inf, sqnorm.dtype)]),
            jnp.sqrt(jnp.max(sqnorm)))


def _exact_host(queries: np.ndarray, train: np.ndarray, k: int, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """float64 direct-difference top-k on the host for the few uncertified queries."""
    train64 = train.astype(np.float64)
    out_d, out_i = [], []
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk].astype(np.float64)
        sq = np.stack([np.sum(np.square(train64 - row), axis=1) for row in q])
        order = np.lexsort((np.broadcast_to(np.arange(len(train)), sq.shape), sq), axis=1)[:, :k]
        out_i.append(order)
        out_d.append(np.take_along_axis(sq, order, axis=1))
    return np.concatenate(out_d), np.concatenate(out_i)


def _validate(queries: np.ndarray, train: np.ndarray, k: int) -> None:
    require(queries.ndim == 2 and train.ndim == 2, "queries.ndim, train.ndim", (queries.ndim, train.ndim),
            "2 and 2 (flatten images to [n, d])")
    require(queries.shape[1] == train.shape[1], "queries.shape[1] vs train.shape[1]",
            (queries.shape[1], train.shape[1]), "equal dimensions d")
    require(len(train) > 0 and len(queries) > 0, "len(queries), len(train)", (len(queries), len(train)),
            "both >= 1")
    require(1 <= k <= len(train), "k", k, f"1 <= k <= N = {len(train)} training points")
    for name, array in (("queries", queries), ("train", train)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} holds NaN or inf values; nearest neighbours need finite data")


def knn(queries, train, k: int = 2, *, query_block: int | None = None, train_block: int | None = None,
        num_candidates: int | None = None, mesh=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest training points of every query (Euclidean).

    Args:
      queries: [Q, d] array. train: [N, d] array (cast to float32 on device).
      k: neighbours per query, 1 <= k <= N.
      query_block: queries per device per call (default from the platform).
      train_block: training points per streamed block (default from the platform).
      num_candidates: candidates kept for the exact re-rank (default k + 6, at most N).
      mesh: 1-D device mesh for the query axis (default: all devices).
    Returns:
      distances [Q, k] float64 (Euclidean, ascending; exact re-ranked values) and indices
      [Q, k] int64 into `train`; ties are broken by the lower index.
    """
    queries = np.asarray(queries, np.float32)
    train = np.asarray(train, np.float32)
    _validate(queries, train, k)
    n = len(train)
    mesh = mesh if mesh is not None else parallel.make_mesh()
    candidates = min(num_candidates or k + EXTRA_CANDIDATES, n)
    per_device, default_train_block = default_blocks(train.shape[1], candidates)
    require(candidates >= k, "num_candidates", num_candidates, f">= k = {k}")
    num_blocks, train_block = train_blocking(n, candidates, train_block or default_train_block)
    block = (query_block or per_device) * mesh.size

    train_dev, sqnorm_dev, max_norm = _prepare_train(
        jax.device_put(train, parallel.replicated(mesh)), num_blocks * train_block)

    sq_out = np.empty((len(queries), k), np.float64)
    idx_out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), block):
        chunk = queries[start:start + block]
        padded, size = parallel.pad_to_multiple(chunk, mesh.size)
        chunk_dev = jax.device_put(padded, parallel.sharding_along(mesh, 2))
        sq, idx, certified = knn_block(chunk_dev, train_dev, sqnorm_dev, max_norm, k=k,
                                        num_candidates=candidates, train_block=train_block)
        sq, idx, certified = (np.array(parallel.to_host(a))[:size] for a in (sq, idx, certified))
        if candidates < n and not certified.all():  # with every point a candidate, nothing is left out
            redo = np.nonzero(~certified)[0]
            sq[redo], idx[redo] = _exact_host(chunk[redo], train, k)
        sq_out[start:start + size] = sq
        idx_out[start:start + size] = idx
    return np.sqrt(np.maximum(sq_out, 0.0)), idx_out


def memorization_test(samples, train, *, ratio: float = MEMORIZATION_RATIO, **knn_kwargs
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Memorized iff |g - NN1(g)| < ratio * |g - NN2(g)| (ratio 1/3; Yoon et al., Gu et al. 2023).

    samples: [S, ...] and train: [N, ...] (flattened to [*, d]). Exact duplicates in `train` are
    merged first, so a copy of a twice-stored image counts as memorized. Returns (flags bool [S],
    distances [S, 2] to the nearest and second-nearest distinct training points, nearest index
    [S] into `train`, the lowest index among duplicates).
    """
    require(len(samples) >= 1, "samples", np.shape(samples), "at least one sample [S >= 1, ...]")
    samples = np.asarray(samples, np.float32).reshape(len(samples), -1)
    train, first = np.unique(np.asarray(train, np.float32).reshape(len(train), -1), axis=0, return_index=True)
    require(len(train) >= 2, "distinct training points", len(train), ">= 2 for the ratio test")
    distances, indices = knn(samples, train, k=2, **knn_kwargs)
    return distances[:, 0] < ratio * distances[:, 1], distances, first[indices[:, 0]]


def memorization_flags(samples, train, **kwargs) -> np.ndarray:
    """bool [S]: which samples pass the 1/3 test (see memorization_test)."""
    return memorization_test(samples, train, **kwargs)[0]


def memorization_rate(samples, train, **kwargs) -> float:
    """Fraction of samples that pass the 1/3 nearest-neighbour test (see memorization_flags)."""
    return float(np.mean(memorization_flags(samples, train, **kwargs)))

"""Per-query kernels: input checks, sharded chunked execution, Monte Carlo summaries.

The geometry kernels are independent per query, so the query axis is the data axis: every
chunk is split over the mesh (`jaxmem.parallel.sharding_along`), the training set and the
noise grid are replicated, and jit's partitioner runs each device's slice. Chunks bound the
memory of the [chunk, block] temporaries; a Python loop over chunks (not over queries
or noise levels) logs progress.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from jaxmem import parallel
from jaxmem.validation import require
from jaxmem.denoisers import empirical
from jaxmem.progress import Progress


def map_query_chunks(kernel: Callable, queries: tuple, shared: tuple, chunk_size: int,
                     mesh=None, name: str = "queries") -> dict:
    """Applies kernel(*query_chunk, *shared) over chunks of the leading query axis.

    queries: arrays [Q, ...] (same Q), split into chunks of at most `chunk_size` (rounded up to
    a multiple of the device count) and sharded over the mesh along that axis. shared: pytrees
    replicated on every device. kernel returns a pytree of arrays with leading axis = chunk.
    Returns that pytree for all Q queries as numpy arrays.
    """
    num_queries = queries[0].shape[0]
    require(num_queries > 0, f"{name} (number of queries)", num_queries, ">= 1 (the query set is empty)")
    require(all(q.shape[0] == num_queries for q in queries), f"{name} leading sizes",
            [q.shape[0] for q in queries], "all equal")
    require(isinstance(chunk_size, int | np.integer) and chunk_size >= 1, "chunk_size", chunk_size,
            "an integer >= 1")
    mesh = mesh if mesh is not None else parallel.make_mesh()
    chunk = -(-min(int(chunk_size), num_queries) // mesh.size) * mesh.size
    padded = [parallel.pad_to_multiple(np.asarray(q), chunk)[0] for q in queries]
    shared = jax.device_put(shared, parallel.replicated(mesh))
    progress = Progress(name, total=num_queries, unit="query")
    outputs = []
    for start in range(0, padded[0].shape[0], chunk):
        chunk_args = [jax.device_put(q[start:start + chunk], parallel.sharding_along(mesh, q.ndim))
                      for q in padded]
        outputs.append(jax.device_get(kernel(*chunk_args, *shared)))
        progress.update(min(chunk, num_queries - start))
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:num_queries], *outputs)


def check_queries(params: dict, clean: np.ndarray, noise: np.ndarray, field: str = "queries") -> None:
    """Shape checks shared by the geometry kernels: [Q, d] queries matching the training set."""
    d = empirical.dimension(params)
    require(clean.ndim == 2 and clean.shape[0] > 0, f"{field}.shape", tuple(clean.shape),
            "[Q, d] with Q >= 1 (the query set is empty or not 2-D)")
    require(clean.shape[1] == d, f"{field} dimension d", clean.shape[1],
            f"d = {d}, the training set's dimension")
    require(noise.shape == clean.shape, "noise.shape", tuple(noise.shape), f"{tuple(clean.shape)} (as {field})")


def mean_and_standard_error(per_query: np.ndarray, draws: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean over queries and its standard error, per level; per_query [Q, L] -> ([L], [L]).

    Q = points * draws, laid out point-major (the draws of one clean point adjacent). Draws of
    one point are correlated across levels and share the point, so the standard error is over
    the independent points' means: std(ddof=1) / sqrt(points); with a single point it is over
    the draws instead.
    """
    per_query = np.asarray(per_query, np.float64)
    per_point = per_query.reshape(-1, draws, per_query.shape[-1]).mean(axis=1)
    samples = per_point if per_point.shape[0] > 1 else per_query
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0]) if samples.shape[0] > 1 else np.zeros(samples.shape[1])
    return per_query.mean(axis=0), se

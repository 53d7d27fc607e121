"""Improved precision and recall (Kynkaanniemi et al. 2019) from features.

Each feature set approximates its manifold by the union of balls around its points, a ball's
radius being the distance to the point's k-th nearest neighbour in the same set (k = 3, the
point itself not counted). Then

    precision = fraction of generated features inside the real manifold,
    recall    = fraction of real features inside the generated manifold.

Radii come from jaxmem.neighbors.knn (exact, re-ranked). Membership is "some i with
|q - p_i|^2 <= r_i^2", i.e. min_i (|q - p_i|^2 - r_i^2) <= 0. That margin is computed on
device, queries sharded over devices and the points streamed in blocks, by the matmul expansion
|q|^2 - 2 q.p + |p|^2 on features centred at the points' mean; queries whose margin lies within
the expansion's rounding bound 2 d eps (|q| + max|p|)^2 of zero are decided again on the host in
float64 from exact differences, so a sample sitting on a training image is never misjudged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import neighbors, parallel
from jaxmem.validation import require

NEIGHBOURS = 3
_POINT_BLOCK = 4096
_QUERY_BLOCK = 1024  # per device


def knn_radii(features: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """[n] float64: distance of each feature vector to its k-th nearest other vector of the set."""
    require(len(features) > k, "number of feature vectors", len(features), f"> k = {k} for k-NN radii")
    distances, _ = neighbors.knn(features, features, k=k + 1)  # column 0 is the point itself
    return distances[:, k]


@functools.partial(jax.jit, static_argnames="block")
def _margins(queries, points, radii_sq, *, block):
    """min_i (|q - p_i|^2 - r_i^2) [Q] for queries [Q, d], points [P, d] (P a multiple of block;
    padding points carry r^2 = -inf)."""
    hi = jax.lax.Precision.HIGHEST
    q_sq = jnp.sum(queries * queries, axis=1)

    def step(best, chunk):
        p, r_sq = chunk
        d_sq = q_sq[:, None] - 2.0 * jnp.matmul(queries, p.T, precision=hi) + jnp.sum(p * p, axis=1)[None, :]
        return jnp.minimum(best, jnp.min(d_sq - r_sq[None, :], axis=1)), None

    chunks = (points.reshape(-1, block, points.shape[1]), radii_sq.reshape(-1, block))
    best, _ = jax.lax.scan(step, jnp.full(queries.shape[0], jnp.inf, queries.dtype), chunks)
    return best


def _exact_margins(queries: np.ndarray, points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """The same margins from direct float64 differences (host; for the few ambiguous queries)."""
    return np.array([np.min(np.sum((points - q) ** 2, axis=1) - radii ** 2) for q in queries])


def inside_manifold(queries: np.ndarray, points: np.ndarray, radii: np.ndarray, mesh=None) -> np.ndarray:
    """bool [Q]: whether each query [Q, d] lies in some ball (points [P, d], radii [P])."""
    mesh = mesh if mesh is not None else parallel.make_mesh()
    raw_queries, raw_points = np.asarray(queries, np.float64), np.asarray(points, np.float64)
    centre = raw_points.mean(axis=0)
    queries = (raw_queries - centre).astype(np.float32)
    points = (raw_points - centre).astype(np.float32)
    block = min(_POINT_BLOCK, len(points))
    padded_points, n = parallel.pad_to_multiple(points, block)
    radii_sq = np.full(len(padded_points), -np.inf, np.float32)
    radii_sq[:n] = np.square(radii)
    points_dev = jax.device_put(padded_points, parallel.replicated(mesh))
    radii_dev = jax.device_put(radii_sq, parallel.replicated(mesh))
    eps = np.finfo(np.float32).eps
    max_norm = float(np.max(np.linalg.norm(points, axis=1)))
    inside = np.empty(len(queries), bool)
    step = _QUERY_BLOCK * mesh.size
    for start in range(0, len(queries), step):
        chunk = queries[start:start + step]
        padded, size = parallel.pad_to_multiple(chunk, mesh.size)
        margin = parallel.to_host(_margins(jax.device_put(padded, parallel.sharding_along(mesh, 2)),
                                           points_dev, radii_dev, block=block))[:size].astype(np.float64)
        bound = 2.0 * chunk.shape[1] * eps * (np.linalg.norm(chunk, axis=1) + max_norm) ** 2
        unsure = np.nonzero(np.abs(margin) <= bound)[0]
        if unsure.size:
            margin[unsure] = _exact_margins(raw_queries[start + unsure], raw_points, radii)
        inside[start:start + size] = margin <= 0.0
    return inside


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = NEIGHBOURS, mesh=None
                     ) -> tuple[float, float]:
    """(precision, recall) of generated features [n_g, d] against real features [n_r, d]."""
    real, generated = np.asarray(real, np.float32), np.asarray(generated, np.float32)
    require(real.ndim == 2 and generated.ndim == 2 and real.shape[1] == generated.shape[1], "feature shapes",
            (real.shape, generated.shape), "[n_r, d] and [n_g, d]")
    precision = inside_manifold(generated, real, knn_radii(real, k), mesh).mean()
    recall = inside_manifold(real, generated, knn_radii(generated, k), mesh).mean()
    return float(precision), float(recall)

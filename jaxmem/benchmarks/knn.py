"""Bench entry: exact top-2 nearest neighbours (the 1/3 memorization test's kernel).

Compares jaxmem.neighbors.knn with a plain jnp blocked baseline (matmul-expansion scores per
block of training points, a running lax.top_k; no re-rank, no certificate) on the same inputs
in the same run; at the host-sized sizes also with a numpy brute force (matmul expansion +
argpartition) and with faiss IndexFlatL2 / torch.cdist+topk when those optional packages are
installed, and with the search's product alone, [Q, d] x [d, N], twice: as XLA computes it
(jaxmem's floor: no selection, no re-rank) and as numpy's BLAS does (OpenBLAS sgemm, the kind
of kernel faiss runs): the two bound what selection costs and what the matmul library gives
away. Every row reports the fraction of the device's measured matmul rate
(2 Q N d FLOP per search).

Sizes (queries Q, training points N, dimension d):
  quick  500 x 2,000 x 784        tests and the CPU dry run of launch/gpu_check.py
  cpu    2,000 x 10,000 x 784     `make bench` on a CPU host (BENCHMARKS.md, CPU)
  full   50,000 x 50,000 x 3,072  an accelerator: CIFAR-sized samples against CIFAR-10's training
                                  set (the host baselines would take minutes: not run)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.benchmarks.harness import alternate, matmul_rate
from jaxmem.neighbors import knn

NAME = "knn"
SIZES = {"quick": (500, 2000, 784), "cpu": (2000, 10000, 784), "full": (50_000, 50_000, 3072)}
HOST_BASELINE_SIZES = ("quick", "cpu")
BASELINE_BLOCK = 4096  # training points per block of the jnp baseline ([Q, block] scores)


@functools.partial(jax.jit, static_argnames=("block",))
def jnp_blocked_top2(queries, train, block: int = BASELINE_BLOCK):
    """Indices [Q, 2] of the two smallest |x|^2 - 2 <q, x> over train [N, d] (float32, HIGHEST
    precision), streamed over blocks of `block` training points with a running top-2."""
    n, dim = train.shape
    block = min(block, n)
    num_blocks = -(-n // block)
    sqnorm = jnp.sum(jnp.square(train), axis=1)
    sqnorm = jnp.pad(sqnorm, (0, num_blocks * block - n), constant_values=jnp.inf).reshape(num_blocks, block)
    blocks = jnp.pad(train, ((0, num_blocks * block - n), (0, 0))).reshape(num_blocks, block, dim)

    def scan_block(best, j):
        values, indices = best
        scores = sqnorm[j][None, :] - 2.0 * jnp.matmul(queries, blocks[j].T, precision=jax.lax.Precision.HIGHEST)
        ids = jnp.broadcast_to(j * block + jnp.arange(block, dtype=jnp.int32), scores.shape)
        top, position = jax.lax.top_k(-jnp.concatenate([values, scores], axis=1), 2)
        return (-top, jnp.take_along_axis(jnp.concatenate([indices, ids], axis=1), position, axis=1)), None

    init = (jnp.full((queries.shape[0], 2), jnp.inf, jnp.float32), jnp.zeros((queries.shape[0], 2), jnp.int32))
    (_, indices), _ = jax.lax.scan(scan_block, init, jnp.arange(num_blocks))
    return indices


def _numpy_top2(queries, train):
    scores = np.sum(train * train, axis=1)[None, :] - 2.0 * queries @ train.T
    part = np.argpartition(scores, 1, axis=1)[:, :2]
    order = np.argsort(np.take_along_axis(scores, part, 1), axis=1)
    return np.take_along_axis(part, order, 1)


def _host_baselines(queries, train):
    yield "numpy expansion+argpartition", lambda: _numpy_top2(queries, train)
    try:
        import faiss

        index = faiss.IndexFlatL2(train.shape[1])
        index.add(train)
        yield "faiss IndexFlatL2", lambda: index.search(queries, 2)
    except ImportError:
        pass
    try:
        import torch

        tq, tx = torch.from_numpy(queries), torch.from_numpy(train)
        yield "torch cdist+topk", lambda: torch.topk(torch.cdist(tq, tx), 2, largest=False)
    except ImportError:
        pass


def _products(queries, train):
    """The search's product alone, [Q, d] x [d, N]: XLA's dot (HIGHEST precision) and numpy's BLAS."""
    product = jax.jit(lambda q, x: jnp.dot(q, x.T, precision=jax.lax.Precision.HIGHEST))
    on_device = jnp.asarray(queries), jnp.asarray(train)
    yield "the product alone: XLA dot (no selection)", lambda: product(*on_device)
    yield "the product alone: numpy BLAS sgemm", lambda: queries @ train.T


def run(size: str, rounds: int = 5) -> list[dict]:
    """Every side timed in alternating rounds (jaxmem.benchmarks.harness.alternate); rows: entry, method, shape,
    median_s, spread, ratio_vs_baseline (the side's time over jaxmem's in the same round, median;
    ratio_min / ratio_max its range), matmul_fraction, load_max, other_cores_max, quiet."""
    nq, n, d = SIZES[size]
    rng = np.random.default_rng(0)
    train = rng.standard_normal((n, d), dtype=np.float32)
    queries = rng.standard_normal((nq, d), dtype=np.float32)
    flops = 2.0 * nq * n * d
    peak = matmul_rate()
    ours = "jaxmem knn (exact, re-ranked)"
    sides = {ours: lambda: knn(queries, train, k=2),
             f"jnp blocked expansion+top_k (block {BASELINE_BLOCK}, not exact)": lambda: jnp_blocked_top2(queries, train)}
    if size in HOST_BASELINE_SIZES:
        sides.update(_host_baselines(queries, train))
        sides.update(_products(queries, train))
    timings = alternate(sides, rounds=rounds, reference=ours)
    rows = []
    for method, timing in timings.items():
        ratio = {"ratio_vs_baseline": timing.pop("ratio_median", 1.0), "ratio_min": timing.pop("ratio_min", 1.0),
                 "ratio_max": timing.pop("ratio_max", 1.0)}
        rows.append({"entry": NAME, "method": method, "shape": f"{nq}x{n}x{d}", **timing, **ratio,
                     "matmul_fraction": flops / timing["median_s"] / peak, "matmul_peak_gflops": peak / 1e9})
    _, idx = knn(queries, train, k=2)
    rows[0]["agrees_with_jnp_baseline"] = float(np.mean(idx == np.asarray(jnp_blocked_top2(queries, train))))
    if size in HOST_BASELINE_SIZES:
        rows[0]["agrees_with_numpy"] = float(np.mean(idx == _numpy_top2(queries, train)))
    return rows

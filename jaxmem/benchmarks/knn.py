"""Bench entry: exact top-2 nearest neighbours (the 1/3 memorization test's kernel).

Compares jaxmem.neighbors.knn with a plain numpy brute force (matmul expansion +
argpartition) on the same inputs, and with faiss IndexFlatL2 / torch.cdist+topk when those
optional packages are installed. Reports the fraction of the measured matmul rate reached.
"""

from __future__ import annotations

import numpy as np

from jaxmem.benchmarks.harness import matmul_rate, time_fn
from jaxmem.neighbors import knn

NAME = "knn"
SIZES = {"quick": (500, 2000, 784), "full": (2000, 10000, 784)}  # (queries, train, d)


def _numpy_top2(queries, train):
    scores = np.sum(train * train, axis=1)[None, :] - 2.0 * queries @ train.T
    part = np.argpartition(scores, 1, axis=1)[:, :2]
    order = np.argsort(np.take_along_axis(scores, part, 1), axis=1)
    return np.take_along_axis(part, order, 1)


def _baselines(queries, train):
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


def run(size: str) -> list[dict]:
    nq, n, d = SIZES[size]
    rng = np.random.default_rng(0)
    train = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(nq, d)).astype(np.float32)
    flops = 2.0 * nq * n * d
    peak = matmul_rate()
    ours = time_fn(lambda: knn(queries, train, k=2), repeats=5)
    rows = [{"entry": NAME, "method": "jaxmem knn (exact, re-ranked)", "shape": f"{nq}x{n}x{d}",
             "median_s": ours["median_s"], "ratio_vs_baseline": 1.0,
             "matmul_fraction": flops / ours["median_s"] / peak, "matmul_peak_gflops": peak / 1e9}]
    reference = _numpy_top2(queries, train)
    _, idx = knn(queries, train, k=2)
    rows[0]["agrees_with_numpy"] = float(np.mean(idx == reference))
    for method, fn in _baselines(queries, train):
        t = time_fn(fn, repeats=5)["median_s"]
        rows.append({"entry": NAME, "method": method, "shape": f"{nq}x{n}x{d}", "median_s": t,
                     "ratio_vs_baseline": t / ours["median_s"],
                     "matmul_fraction": flops / t / peak, "matmul_peak_gflops": peak / 1e9})
    return rows

"""Bench entry: the whole sigma grid from one pair of matmuls per block versus a pass per level.

Both methods compute W (max weight), entropy and effective count for the same noisy queries
x_q + s z_q at every level s of a 40-level grid:
  shared_matmul   jaxmem.geometry.concentration.concentration_kernel: G = |x - x_i|^2 and
                  C = <z, x - x_i> once per block, all levels from them (4 Q N d flops); the
                  levels' softmax passes run on tiles of queries (L2-sized on CPU), one
                  exponential per energy
  per_sigma       the baseline: y = x + s z formed per level and streamed through the empirical
                  denoiser's posterior (L passes, 2 L Q N d flops)
matmul_fraction = matmul flops / time / measured matmul rate (the roofline of the distance work).

Sizes (queries Q, training points N, d, block, repeats):
  quick  128 x 1,024 x 3,072      tests and the CPU dry run of launch/gpu_check.py
  cpu    512 x 4,096 x 3,072      `make bench` on a CPU host (BENCHMARKS.md, CPU)
  full   10,000 x 50,000 x 3,072  an accelerator: the cifar10_50k measurement (10,000 noisy queries
                                  against 50,000 CIFAR-sized images); only the shared path is timed
                                  (the per-level baseline does 20x the matmul work)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import noise
from jaxmem.benchmarks.harness import alternate, matmul_rate
from jaxmem.denoisers import empirical
from jaxmem.geometry import concentration

NAME = "geometry"

SIZES = {
    "quick": (128, 1024, 3072, 512, 7),
    "cpu": (512, 4096, 3072, 1024, 3),
    "full": (10_000, 50_000, 3072, 2048, 3),
}
BASELINE_SIZES = ("quick", "cpu")
NUM_SIGMAS = 40


def _inputs(num_queries: int, num_train: int, dim: int, block: int):
    key = jax.random.PRNGKey(0)
    train = jax.random.uniform(key, (num_train, dim), jnp.float32, -1.0, 1.0)
    source = jnp.arange(num_queries, dtype=jnp.int32) % num_train
    z = jax.random.normal(jax.random.fold_in(key, 1), (num_queries, dim), jnp.float32)
    sigmas = jnp.asarray(noise.log_sigmas(NUM_SIGMAS), jnp.float32)
    return empirical.make_params(np.asarray(train), block), train[source], z, source, sigmas


def run(size: str) -> list[dict]:
    """Times both methods on the same inputs in alternating rounds (harness.alternate); rows: entry,
    method, shape, median_s, spread, load_max, other_cores_max, quiet, matmul_fraction; the shared row's
    ratio_vs_baseline is the baseline's time over its own in the same round (median; ratio_min /
    ratio_max the range).

    "full" times only the shared path (the per-level baseline would take 20x longer); its
    ratio_vs_baseline is None there.
    """
    num_queries, num_train, dim, block, repeats = SIZES[size]
    params, clean, z, source, sigmas = _inputs(num_queries, num_train, dim, block)
    rate = matmul_rate()
    shape = f"Q={num_queries} N={num_train} d={dim} L={NUM_SIGMAS} block={block}"

    sides = {"shared_matmul": lambda: concentration.concentration_kernel(clean, z, source, params, sigmas)}
    if size in BASELINE_SIZES:
        sides["per_sigma (baseline)"] = lambda: concentration.per_sigma_concentration_jit(params, clean, z, sigmas)
    timings = alternate(sides, rounds=repeats, reference="shared_matmul")
    flops = {"shared_matmul": 4.0 * num_queries * num_train * dim,
             "per_sigma (baseline)": 2.0 * NUM_SIGMAS * num_queries * num_train * dim}
    rows = [{"entry": NAME, "method": method, "shape": shape, **timing, "ratio_vs_baseline": None,
             "matmul_fraction": flops[method] / timing["median_s"] / rate} for method, timing in timings.items()]
    if size in BASELINE_SIZES:
        baseline = rows[1]
        rows[0].update(ratio_vs_baseline=baseline.pop("ratio_median"), ratio_min=baseline.pop("ratio_min"),
                       ratio_max=baseline.pop("ratio_max"))
        baseline["ratio_vs_baseline"] = 1.0
        shared_w = concentration.concentration_kernel(clean, z, source, params, sigmas)["max_weight"]
        baseline_w = concentration.per_sigma_concentration_jit(params, clean, z, sigmas)["max_weight"]
        rows[0]["max_abs_diff_W"] = float(jnp.max(jnp.abs(shared_w - baseline_w)))
    for row in rows:
        row["matmul_rate_gflops"] = rate / 1e9
    return rows

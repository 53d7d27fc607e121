"""Bench entry: the GMM grid trainer's model-step versus the same models trained one at a time.

Problem (the paper's size): d = 50, K = 12, N = 200 training points, M = 100 components,
R = 100 noise draws per point and step, full batch. The grid is S training sets of C member
models (the capacities of one set share its draws: jaxmem.train.gmm_grid), one compiled
program; the baseline trains each model alone (S = C = 1) with the same code, one program call
per model, in the same run. A third row times the grid with R = 26 stratified draws, which
has a lower gradient variance than R = 100 i.i.d. draws (results/gmm_estimators).
`ms_per_model_step` = time / (steps x models); `matmul_fraction` = the step's five
[N R, d] x [d, M]-sized products (10 N R d M FLOP) per second over the matmul rate measured in
the same run.

Sizes (S sets x C members, timed steps per call):
  quick  1 x 4, 5 steps     tests and the CPU dry run of launch/gpu_check.py
  cpu    2 x 8, 20 steps    `make bench` on a CPU host (BENCHMARKS.md, CPU)
  full   4 x 10, 100 steps  an accelerator: the `paper` preset's grid at d = 50 (its 4 values of K
                            x 10 capacities per training set)
The extrapolated wall times of the crossover presets are the `crossover_time` entry.
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from jaxmem import noise
from jaxmem.benchmarks.harness import matmul_rate, time_fn
from jaxmem.data.gmm import isotropic_gmm
from jaxmem.train import gmm_grid

NAME = "gmm"
SIZES = {"quick": dict(sets=1, members=4, steps=5), "cpu": dict(sets=2, members=8, steps=20),
         "full": dict(sets=4, members=10, steps=100)}
DIM, COMPONENTS, TRAIN, CAPACITY, DRAWS = 50, 12, 200, 100, 100
POINT_BLOCK = 0


def grid_arrays(sets: int, members: int, dim: int = DIM, num_train: int = TRAIN, capacity: int = CAPACITY,
                components: int = COMPONENTS):
    """S sets (data seeds 0..S-1) of C members with the partial-memorisation start (means = the
    first M training points): params {"means": [S, C, M, d], "log_var": [S, C]}, batch
    {"train": [S, N, d], "point_mask": [S, N], "component_mask": [S, C, M]}, rngs [S, 2]."""
    train = np.stack([isotropic_gmm(dim, components, num_train, 1, seed=s).train for s in range(sets)])
    params = {"means": np.repeat(train[:, None, :capacity], members, axis=1),
              "log_var": np.full((sets, members), np.log(1e-6), np.float32)}
    batch = {"train": train, "point_mask": np.ones((sets, num_train), np.float32),
             "component_mask": np.ones((sets, members, capacity), bool)}
    rngs = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in range(sets)])
    return params, batch, rngs


def grid_program(draws: int, estimator: str, batch_size: int = 0):
    """(jitted chunk(state, batch, steps), optimizer) of the grid trainer with R = `draws`."""
    times = noise.vp_times()
    loss_fn = gmm_grid.make_gmm_loss(times, np.ones_like(times), draws, POINT_BLOCK, estimator, batch_size)
    optimizer = optax.adam(gmm_grid.adam_schedule(50_000))
    return jax.jit(gmm_grid.grid_chunk(loss_fn, optimizer), static_argnums=2), optimizer


def run(size: str) -> list[dict]:
    sets, members, steps = SIZES[size]["sets"], SIZES[size]["members"], SIZES[size]["steps"]
    models = sets * members
    rate = matmul_rate()
    params, batch, rngs = grid_arrays(sets, members)
    timings = {}
    for label, draws, estimator in [("grid", DRAWS, "iid"), ("grid_stratified", 26, "stratified")]:
        chunk, optimizer = grid_program(draws, estimator)
        state = gmm_grid.init_grid(params, rngs, optimizer)
        timings[label] = (time_fn(lambda: chunk(state, batch, steps), repeats=3), draws)
        if label == "grid":
            one = lambda tree, s, c: jax.tree_util.tree_map(lambda x: x[s:s + 1, c:c + 1], tree)  # noqa: E731
            singles = [(gmm_grid.init_grid(one(params, s, c), rngs[s:s + 1], optimizer),
                        {**jax.tree_util.tree_map(lambda x: x[s:s + 1], batch),
                         "component_mask": batch["component_mask"][s:s + 1, c:c + 1]})
                       for s in range(sets) for c in range(members)]
            timings["alone"] = (time_fn(lambda: [chunk(st, b, steps) for st, b in singles], repeats=3), draws)
    shape = f"S={sets} x C={members} d={DIM} K={COMPONENTS} N={TRAIN} M={CAPACITY} steps={steps}"
    rows = []
    for label, method in [("grid", "grid, members share draws (R=100 iid)"),
                          ("alone", "one model at a time (same code, R=100 iid)"),
                          ("grid_stratified", "grid, R=26 stratified (lower variance than R=100 iid)")]:
        timing, draws = timings[label]
        ms = 1e3 * timing["median_s"] / (steps * models)
        flops = 10.0 * TRAIN * draws * DIM * CAPACITY
        rows.append({"entry": NAME, "method": method, "shape": shape + f" R={draws}", "median_s": timing["median_s"],
                     "ratio_vs_baseline": timings["alone"][0]["median_s"] / timing["median_s"],
                     "ms_per_model_step": ms, "model_steps_per_s": 1e3 / ms,
                     "matmul_fraction": flops / (ms * 1e-3) / rate, "matmul_gflops": rate / 1e9})
    return rows

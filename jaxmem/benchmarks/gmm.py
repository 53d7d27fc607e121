"""Bench entry: the vmapped GMM grid trainer versus the same models trained one at a time.

Both methods run the same compiled chunk of jaxmem.train.gmm_grid (the vmapped step of
jaxmem.train.loop under lax.scan): once with all G models on the model axis, once per model
with G = 1, in the same run. Problem: d = 50, K = 12, N = 200, M = 100 components, 100 noise
draws per training point (the paper's size), full batch.
`ms_per_model_step` = time / (steps x models); `model_steps_per_s` is its inverse.
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from jaxmem import noise
from jaxmem.benchmarks.harness import time_fn
from jaxmem.data.gmm import isotropic_gmm
from jaxmem.train import gmm_grid

NAME = "gmm"
SIZES = {"quick": dict(models=4, steps=5), "full": dict(models=16, steps=20)}
DIM, COMPONENTS, TRAIN, CAPACITY, DRAWS = 50, 12, 200, 100, 100


def _grid(models: int):
    """G models with different data seeds: params, batch, rngs stacked on a leading model axis."""
    sets = [isotropic_gmm(DIM, COMPONENTS, TRAIN, 1, seed=g) for g in range(models)]
    train = np.stack([s.train for s in sets])
    params = {"means": train[:, :CAPACITY].copy(), "log_var": np.full(models, np.log(1e-6), np.float32)}
    batch = {"train": train, "point_mask": np.ones((models, TRAIN), np.float32),
             "component_mask": np.ones((models, CAPACITY), bool)}
    rngs = np.stack([np.asarray(jax.random.PRNGKey(g)) for g in range(models)])
    return params, batch, rngs


def run(size: str) -> list[dict]:
    models, steps = SIZES[size]["models"], SIZES[size]["steps"]
    times = noise.vp_times()
    loss_fn = gmm_grid.make_gmm_loss(times, np.ones_like(times), DRAWS)
    optimizer = optax.adam(gmm_grid.adam_schedule(50_000))
    chunk = jax.jit(gmm_grid.grid_chunk(loss_fn, optimizer), static_argnums=2)
    params, batch, rngs = _grid(models)
    state = gmm_grid.init_grid(params, rngs, optimizer)
    one = lambda tree, g: jax.tree_util.tree_map(lambda x: x[g:g + 1], tree)  # noqa: E731
    singles = [(one(state, g), one(batch, g)) for g in range(models)]

    grid = time_fn(lambda: chunk(state, batch, steps), repeats=3)
    alone = time_fn(lambda: [chunk(s, b, steps) for s, b in singles], repeats=3)
    shape = f"G={models} d={DIM} K={COMPONENTS} N={TRAIN} M={CAPACITY} R={DRAWS} steps={steps}"
    rows = []
    for method, timing in [("vmapped grid (one program)", grid), ("one model at a time (same code)", alone)]:
        ms = 1e3 * timing["median_s"] / (steps * models)
        rows.append({"entry": NAME, "method": method, "shape": shape, "median_s": timing["median_s"],
                     "ratio_vs_baseline": timing["median_s"] / grid["median_s"],
                     "ms_per_model_step": ms, "model_steps_per_s": 1e3 / ms})
    return rows

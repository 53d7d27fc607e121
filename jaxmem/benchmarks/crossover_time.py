"""Bench entry: the extrapolated training wall time of crossover presets (launch/gmm_crossover.py).

A crossover preset trains one compiled grid program per d (or per (d, N) with
training.grid_per_train_size): S = |K| x |N of the grid| x seeds training sets of C member
models, each padded to the grid's largest N and M (the padded work is computed). One step of a
grid costs 10 P R d M_max S C FLOP (P points per step: N_max, or the minibatch; R noise draws).
This entry builds the grids from the preset's config fields, times one step of the cheapest and
of the most expensive grid with jaxmem.train.gmm_grid (the trainer the experiment runs), fits
t(grid) = a + b FLOP through the two and sums rounds x steps x t over all grids. Training
only: sampling and evaluation are not included (a small part of `paper`: see the slice of
launch/gpu_check.py for the end-to-end time of one grid). For search = 'adaptive' the
number of rounds is data-dependent: every round is counted (an upper bound), each with
model.search_points members and M_max = N.

Sizes (presets, timed steps per call):
  quick  smoke, demo     tests and the CPU dry run of launch/gpu_check.py
  cpu    paper, curve    2 steps per call (the largest paper grid is ~1 s per step on 2 cores)
  full   paper, curve    50 steps per call, on an accelerator
"""

from __future__ import annotations

import os

from jaxmem.benchmarks.gmm import grid_arrays, grid_program
from jaxmem.benchmarks.harness import matmul_rate, time_fn
from jaxmem.config import load_config
from jaxmem.train import gmm_grid

NAME = "crossover_time"
SIZES = {"quick": (("smoke", "demo"), 5), "cpu": (("paper", "curve"), 2), "full": (("paper", "curve"), 50)}
CONFIG_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "gmm_crossover.py")


def preset_grids(config) -> list[dict]:
    """The grid programs of a crossover config, one dict each: dim, train (N_max), points (P per
    step), sets (S), members (C), capacity (M_max), rounds (times a grid of this shape is
    trained), draws (R), estimator, batch_size, steps, flops_per_step (10 P R d M_max S C)."""
    data, model, training = config.data, config.model, config.training
    sizes = [int(n) for n in data.train_sizes]
    groups = [[n] for n in sizes] if training.grid_per_train_size else [sizes]
    adaptive = model.search == "adaptive"
    shapes = []  # (members, M_max as a function of N_max, rounds)
    if adaptive:
        shapes.append((int(model.search_points), lambda n: n, 1 + int(model.search_rounds)))
    else:
        fractions = [float(f) for f in model.capacity_fractions]
        shapes.append((len(fractions), lambda n: max(1, round(max(fractions) * n)), 1))
    if int(model.refine_points) > 0:
        shapes.append((int(model.refine_points), lambda n: n, 1))
    if int(model.window_rounds) > 0:  # at most search_points + 1 capacities per window end
        shapes.append((2 * (int(model.search_points) + 1), lambda n: n, int(model.window_rounds)))
    grids = []
    for dim in (int(d) for d in data.dims):
        for group in groups:
            n_max = max(group)
            points = min(int(training.batch_size), n_max) if training.batch_size > 0 else n_max
            sets = len(data.num_components) * len(group) * int(model.num_seeds)
            for members, capacity_of, rounds in shapes:
                capacity, draws = capacity_of(n_max), int(training.noise_draws)
                grids.append(dict(dim=dim, train=n_max, points=points, sets=sets, members=members,
                                  capacity=capacity, rounds=rounds, draws=draws, estimator=str(training.estimator),
                                  batch_size=int(training.batch_size), steps=int(training.steps),
                                  flops_per_step=10.0 * points * draws * dim * capacity * sets * members))
    return grids


def extrapolate(grids: list[dict], measured: list[tuple[float, float]]) -> float:
    """Seconds to train every grid: t(FLOP) = a + b FLOP through the measured (flops_per_step,
    seconds per step) points (one point, or a negative slope: the mean time per step)."""
    (f1, t1), (f2, t2) = measured[0], measured[-1]
    slope = (t2 - t1) / (f2 - f1) if f2 != f1 else 0.0
    if slope < 0:
        slope, t1 = 0.0, 0.5 * (t1 + t2)
    return float(sum(g["rounds"] * g["steps"] * (t1 + slope * (g["flops_per_step"] - f1)) for g in grids))


def time_grid(grid: dict, steps: int) -> float:
    """Median seconds per step of one grid of this shape (synthetic isotropic data, partial start)."""
    params, batch, rngs = grid_arrays(grid["sets"], grid["members"], grid["dim"], grid["train"],
                                      grid["capacity"], components=min(12, grid["train"]))
    chunk, optimizer = grid_program(grid["draws"], grid["estimator"], grid["batch_size"])
    state = gmm_grid.init_grid(params, rngs, optimizer)
    return time_fn(lambda: chunk(state, batch, steps), repeats=3)["median_s"] / steps


def run(size: str) -> list[dict]:
    presets, steps = SIZES[size]
    rate = matmul_rate()
    rows = []
    for preset in presets:
        grids = preset_grids(load_config(f"{CONFIG_PATH}:{preset}"))
        ends = sorted(grids, key=lambda g: g["flops_per_step"])
        ends = [ends[0]] if ends[0]["flops_per_step"] == ends[-1]["flops_per_step"] else [ends[0], ends[-1]]
        measured = [(g["flops_per_step"], time_grid(g, steps)) for g in ends]
        largest, seconds = ends[-1], measured[-1][1]
        models = sum(g["rounds"] * g["sets"] * g["members"] for g in grids)
        model_steps = sum(g["rounds"] * g["sets"] * g["members"] * g["steps"] for g in grids)
        bound = "upper bound: every search round" if any(g["rounds"] > 1 for g in grids) else "training only"
        rows.append({"entry": NAME, "method": f"crossover preset {preset!r} (extrapolated)",
                     "shape": (f"{len(grids)} grids; largest S={largest['sets']} x C={largest['members']} "
                               f"d={largest['dim']} N={largest['train']} M={largest['capacity']} R={largest['draws']}"),
                     "median_s": seconds, "ratio_vs_baseline": None,
                     "model_steps_per_s": largest["sets"] * largest["members"] / seconds,
                     "matmul_fraction": largest["flops_per_step"] / seconds / rate, "matmul_gflops": rate / 1e9,
                     "smallest_grid_s_per_step": measured[0][1], "models": models, "model_steps": model_steps,
                     "total_tflop": sum(g["rounds"] * g["steps"] * g["flops_per_step"] for g in grids) / 1e12,
                     "extrapolated_h": extrapolate(grids, measured) / 3600,
                     "extrapolates": f"{preset}: {models:,} models, {model_steps:,} model-steps ({bound})"})
    return rows

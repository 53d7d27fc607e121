"""Why the cheap schedule failed and what fixes it: s^2 over training at the anchor, per optimizer
setting (launch/gmm_escape_probe.py; results/gmm_crossover/escape.md).

Trains the anchor's data set (d = 50, K = 12, N = 200, seed 0; the `anchor_full` preset) at
M = 100 and M = 160 from the memorising start (s^2 = 1e-6) with the laboratory's grid trainer
(4 stratified draws per point and step) under each SETTINGS entry and records the shared
variance s^2 of both models every steps / 20 steps. The models have left the memorising start
when s^2 reaches the paper schedule's end values (0.42 at M = 100, 0.15 at M = 160).
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import optax

from jaxmem import io
from jaxmem.experiments.gmm_crossover.grids import build_grid, make_data_sets, make_loss_and_optimizer, times_of
from jaxmem.train import gmm_grid

DIM, TRAIN_SIZE = 50, 200
CAPACITIES = [100, 160]
ESCAPED_S2 = 0.2  # s^2 of the M = 100 model that counts as having left the memorising start
# (label, steps, peak lr, schedule: 'paper' (10% warm-up, linear decay to 1e-6) or 'constant', Adam b2)
SETTINGS = [
    ("paper schedule, lr 1e-3, b2 0.999", 50_000, 1e-3, "paper", 0.999),
    ("cheap schedule (old), lr 1e-2, b2 0.999", 3_000, 1e-2, "paper", 0.999),
    ("constant lr 1e-3, b2 0.999", 10_000, 1e-3, "constant", 0.999),
    ("constant lr 3e-3, b2 0.999", 10_000, 3e-3, "constant", 0.999),
    ("constant lr 1e-3, b2 0.99", 5_000, 1e-3, "constant", 0.99),
    ("constant lr 1e-3, b2 0.9", 5_000, 1e-3, "constant", 0.9),
    ("constant lr 3e-3, b2 0.99", 5_000, 3e-3, "constant", 0.99),
    ("constant lr 3e-3, b2 0.9", 5_000, 3e-3, "constant", 0.9),
    ("constant lr 1e-2, b2 0.99", 5_000, 1e-2, "constant", 0.99),
    ("constant lr 1e-2, b2 0.9", 5_000, 1e-2, "constant", 0.9),
    ("cheap schedule (now), lr 1e-2, b2 0.9", 3_000, 1e-2, "paper", 0.9),
]


def trajectory(anchor: ml_collections.ConfigDict, steps: int, peak_lr: float, schedule: str,
               b2: float) -> list[tuple[int, float, float]]:
    """[(step, s^2 at M = 100, s^2 at M = 160)] every steps / 20 steps of one setting, trained
    from the `anchor` config (configs/gmm_crossover.py:anchor_full; left unchanged)."""
    config = anchor.copy_and_resolve_references()
    config.training.update(noise_draws=4, estimator="stratified", steps=steps, peak_lr=peak_lr,
                           optimizer="jaxmem")  # escape.md studies Adam on log s^2
    data_sets = make_data_sets(config, DIM, (TRAIN_SIZE,))
    models, params, batch, rngs = build_grid(config, DIM, data_sets, [CAPACITIES])
    loss_fn, _ = make_loss_and_optimizer(config.training, times_of(config))
    lr = gmm_grid.adam_schedule(steps, peak_lr) if schedule == "paper" else peak_lr
    points = []

    def record(state, step):
        points.append((step, *np.exp(np.asarray(state.params["log_var"])[0]).tolist()))

    gmm_grid.train_grid(params, batch, rngs, loss_fn=loss_fn, optimizer=optax.adam(lr, b2=b2), steps=steps,
                        chunk_steps=max(steps // 20, 1), on_chunk=record, name=f"{steps} steps")
    return points


def run(anchor: ml_collections.ConfigDict, folder: str, settings=SETTINGS) -> list[dict]:
    """Every setting's trajectory; writes escape.csv (every record), escape.md (per setting: the
    first recorded step at which s^2 of the M = 100 model reached ESCAPED_S2, and both models'
    s^2 at the end) and escape.png into `folder`. Returns the rows of escape.csv."""
    from jaxmem.plots.crossover import save_escape  # imported here: pyplot costs every launcher start ~0.5 s
    rows = []
    for label, steps, peak_lr, schedule, b2 in settings:
        for step, s2_100, s2_160 in trajectory(anchor, steps, peak_lr, schedule, b2):
            rows.append(dict(setting=label, step=step, s2_M100=s2_100, s2_M160=s2_160))
    io.write_csv(os.path.join(folder, "escape.csv"), rows, ("setting", "step", "s2_M100", "s2_M160"))
    summary = []
    for label, steps, *_ in settings:
        mine = [r for r in rows if r["setting"] == label]
        escaped = [r["step"] for r in mine if r["s2_M100"] >= ESCAPED_S2]
        summary.append(dict(setting=label, steps=steps, first_step_s2_M100_above_0_2=escaped[0] if escaped else "never",
                            final_s2_M100=mine[-1]["s2_M100"], final_s2_M160=mine[-1]["s2_M160"]))
    io.write_text(os.path.join(folder, "escape.md"), "# Leaving the memorising start (launch/gmm_escape_probe.py)\n\n"
                  + io.markdown_table(summary) + "\n\nEvery record: escape.csv; figure: escape.png.\n")
    save_escape(os.path.join(folder, "escape.png"), rows, [label for label, *_ in settings])
    return rows

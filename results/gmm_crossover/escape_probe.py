"""Why the cheap schedule failed and what fixes it: s^2 over training at the anchor, per optimizer.

    .venv/bin/python results/gmm_crossover/escape_probe.py   # ~10 min on one core

Trains the anchor's data set (d = 50, K = 12, N = 200, seed 0) at M = 100 and M = 160 from the
memorising start (s^2 = 1e-6) with the laboratory's grid trainer (4 stratified draws per point
and step) under each SETTINGS entry, records the shared variance s^2 of both models every
STEPS / 20 steps, and writes escape.csv (every record), escape.md (per setting: the first
recorded step at which s^2 of the M = 100 model reached 0.2, and both models' s^2 at the end)
and escape.png next to this file. The models have left the memorising start when s^2 reaches
the paper schedule's end values (0.42 at M = 100, 0.15 at M = 160).
"""

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from jaxmem import io  # noqa: E402
from jaxmem.config import load_config  # noqa: E402
from jaxmem.experiments.gmm_crossover.grids import build_grid, make_data_sets, make_loss_and_optimizer  # noqa: E402
from jaxmem.train import gmm_grid  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CAPACITIES = [100, 160]
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


def trajectory(steps: int, peak_lr: float, schedule: str, b2: float) -> list[tuple[int, float, float]]:
    config = load_config(os.path.join(HERE, "..", "..", "configs", "gmm_crossover.py") + ":anchor_full")
    config.training.update(noise_draws=4, estimator="stratified", steps=steps, peak_lr=peak_lr,
                           optimizer="jaxmem")  # escape.md studies Adam on log s^2
    data_sets = make_data_sets(config, 50, (200,))
    models, params, batch, rngs = build_grid(config, 50, data_sets, [CAPACITIES])
    loss_fn, _ = make_loss_and_optimizer(config)
    lr = gmm_grid.adam_schedule(steps, peak_lr) if schedule == "paper" else peak_lr
    points = []

    def record(state, step):
        points.append((step, *np.exp(np.asarray(state.params["log_var"])[0]).tolist()))

    gmm_grid.train_grid(params, batch, rngs, loss_fn=loss_fn, optimizer=optax.adam(lr, b2=b2), steps=steps,
                        chunk_steps=max(steps // 20, 1), on_chunk=record, name=f"{steps} steps")
    return points


def main():
    rows = []
    for label, steps, peak_lr, schedule, b2 in SETTINGS:
        for step, s2_100, s2_160 in trajectory(steps, peak_lr, schedule, b2):
            rows.append(dict(setting=label, step=step, s2_M100=s2_100, s2_M160=s2_160))
    io.write_csv(os.path.join(HERE, "escape.csv"), rows, ("setting", "step", "s2_M100", "s2_M160"))
    summary = []
    for label, steps, *_ in SETTINGS:
        mine = [r for r in rows if r["setting"] == label]
        escaped = [r["step"] for r in mine if r["s2_M100"] >= 0.2]
        summary.append(dict(setting=label, steps=steps, first_step_s2_M100_above_0_2=escaped[0] if escaped else "never",
                            final_s2_M100=mine[-1]["s2_M100"], final_s2_M160=mine[-1]["s2_M160"]))
    io.write_text(os.path.join(HERE, "escape.md"), "# Leaving the memorising start (escape_probe.py)\n\n"
                  + io.markdown_table(summary) + "\n\nEvery record: escape.csv; figure: escape.png.\n")
    figure, axis = plt.subplots(figsize=(7.5, 5.0))
    for label, *_ in SETTINGS:
        mine = [r for r in rows if r["setting"] == label]
        axis.plot([r["step"] for r in mine], [r["s2_M100"] for r in mine], "-" if "0.999" in label else "--",
                  label=label)
    axis.axhline(0.416, color="grey", lw=0.8)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("s^2 of the M = 100 model")
    axis.set_title("leaving the memorising start (d 50, K 12, N 200): Adam b2 sets the pace")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    io.save_figure(os.path.join(HERE, "escape.png"), figure)


if __name__ == "__main__":
    main()

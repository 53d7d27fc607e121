"""The crossover experiment: memorisation capacity M* versus training-set size N.

For every data dimension d one grid of models (all K, N, seeds and capacities M of that d) is
trained by jaxmem.train.gmm_grid in one compiled program. Each trained model is then sampled
with deterministic DDIM and its memorisation ratio measured with the 1/3 nearest-neighbour
test; the per-t losses (x0 units) of the trained models and of the baselines (ground truth,
fully memorising, partially memorising for a fine grid of M) give the predicted crossovers.
Per data set (d, K, N, seed) the table holds the empirical transition M_pt (ratio crosses
0.5), its delta window (ratio first reaches delta / 1 - delta) and M* predicted by the closed
form and by the measured losses for each weighting. With model.refine_points = r > 0, r more
untrained integer M values inside each window are trained as one more grid per d (the same
training and evaluation code) and M_pt and the window are recomputed from all M values. With
model.search = 'adaptive' the first grid trains a few capacities around each set's
measured-loss prediction and later rounds bisect the bracket of M_pt to model.search_tolerance
x N (search.py), each round one more vmapped grid. With model.window_rounds = w > 0, up to w
further rounds bracket both ends of each set's delta window the same way (to
model.window_tolerance x N), so a window end is measured where the search stopped below it.

The package: grids.py (data sets, capacities, the stacked initial grid), evaluation.py (losses,
samples, baselines of many models at once), rounds.py (the first grid and the later rounds,
each trained, measured and stored), search.py (the adaptive bracket), analysis.py (a row per
data set, rows pooled over seeds, read as the config's AnalysisSettings record says), report.py
(tables, report.md). This module is the protocol: validate_config, then run.

Workdir:
  d<d>[_n<N>]/checkpoints/  orbax checkpoints of a grid while it trains (resumed on rerun)
  d<d>[_n<N>]/fingerprint.json  the config a grid belongs to (resuming another config fails)
  d<d>[_n<N>]/result.npz    everything measured for that grid (a rerun skips finished grids)
  d<d>[_n<N>]/refine_r<r>/  the same three for the refinement grid (model.refine_points = r > 0)
  d<d>[_n<N>]/round<k>/     the same three for round k of the adaptive search
  d<d>[_n<N>]/window<k>/    the same three for round k bracketing the window's ends (model.window_rounds)
  crossover.csv, crossover.md   one row per data set: M_pt, window, bracket, predicted M*, baseline losses
  crossover_by_n.csv            one row per (d, K, N): M_pt over seeds with a 95% interval
  models.csv                    one row per trained model: ratio, s^2, weighted train/val losses, round
  per_t_losses.csv              one row per (data set, model, t): x0-unit losses of the ground truth, the
                                memorising and partially memorising baselines and the trained models
  per_t_losses.png              those curves for the first data set
  report.md                     command, versions, wall time, fit with standard errors, tables, figures
  summary.json, crossover.png, memorization_ratio.png
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
from absl import logging

from jaxmem import footprint, io, theory
from jaxmem.validation import require, require_choice
from jaxmem.data import gmm as gmm_data
from jaxmem.experiments.gmm_crossover.analysis import AnalysisSettings, by_train_size, summarize
from jaxmem.experiments.gmm_crossover.grids import TEMPLATE_PIXELS, grids_of, times_of
from jaxmem.experiments.gmm_crossover.report import model_rows, per_t_rows, write_report
from jaxmem.experiments.gmm_crossover.rounds import later_rounds, run_grid
from jaxmem.train import gmm_grid

DATA_MODELS = ("isotropic", "subspace", "lowrank")
INITS = ("partial", "replicated_first", "random")
SEARCHES = ("grid", "adaptive")
WINDOW_FALLBACKS = ("nan", "capacities")  # a window end the ratio never reaches: NaN, or the first / last M


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, naming the field, on configs the experiment cannot run."""
    data, model, training = config.data, config.model, config.training
    require_choice("data.model", data.model, DATA_MODELS)
    require(len(data.dims) >= 1 and all(int(d) >= 1 for d in data.dims), "data.dims (d)",
            tuple(data.dims), "integers >= 1")
    if data.model == "lowrank":
        require(all(int(d) % TEMPLATE_PIXELS == 0 for d in data.dims), "data.dims (d)",
                tuple(data.dims), f"multiples of {TEMPLATE_PIXELS} for data.model='lowrank' (d = 64 C)")
        largest = min(int(d) for d in data.dims) // TEMPLATE_PIXELS
        require(isinstance(data.rank, int) and 0 <= data.rank <= largest, "data.rank (C)", data.rank,
                f"an integer in [1, {largest}] (d / 64 of the smallest d), or 0 for d / 64")
    elif data.model == "subspace":
        smallest_d = min(int(d) for d in data.dims)
        require(isinstance(data.rank, int) and 1 <= data.rank <= smallest_d, "data.rank (C)", data.rank,
                f"an integer in [1, {smallest_d}] (at most the smallest d)")
        require(data.off_variance >= 0, "data.off_variance (tau^2)", data.off_variance, "a float >= 0")
    else:
        require(data.rank == 0, "data.rank (C)", data.rank, "0 for data.model='isotropic' (use 'subspace' "
                "for a GMM of lower intrinsic dimension)")
    require_choice("data.replication", data.replication, gmm_data.REPLICATIONS)
    require(0.0 <= data.replicated_fraction <= 1.0, "data.replicated_fraction (p)", data.replicated_fraction,
            "a fraction in [0, 1]")
    require(isinstance(data.copies, int) and data.copies >= 1, "data.copies (r)", data.copies, "an integer >= 1")
    require(data.zipf_exponent > 0, "data.zipf_exponent", data.zipf_exponent, "a float > 0")
    require(len(data.train_sizes) >= 1 and all(int(n) >= 1 for n in data.train_sizes),
            "data.train_sizes (N)", tuple(data.train_sizes), "integers >= 1")
    require(len(data.num_components) >= 1 and all(int(k) >= 1 for k in data.num_components),
            "data.num_components (K)", tuple(data.num_components), "integers >= 1")
    smallest_n = min(int(n) for n in data.train_sizes)
    require(max(int(k) for k in data.num_components) <= smallest_n, "data.num_components (K)",
            tuple(data.num_components), f"K <= N for every N (smallest N = {smallest_n})")
    require(data.num_val >= 1, "data.num_val", data.num_val, "an integer >= 1")
    require(data.variance > 0, "data.variance (s0^2)", data.variance, "a positive float")
    fractions = tuple(model.capacity_fractions)
    require(len(fractions) >= 1 and all(f > 0 for f in fractions), "model.capacity_fractions (M/N)",
            fractions, "positive fractions")
    require(max(fractions) <= 1.0, "model.capacity_fractions (M/N)", fractions,
            f"M <= N: fractions <= 1 (M = {max(fractions)} N > N)")
    require_choice("model.init", model.init, INITS)
    require(model.init_variance > 0, "model.init_variance", model.init_variance, "a positive float")
    require(model.num_seeds >= 1, "model.num_seeds", model.num_seeds, "an integer >= 1")
    require(isinstance(model.refine_points, int) and model.refine_points >= 0, "model.refine_points",
            model.refine_points, "an integer >= 0 (0 = no refinement of the transition window)")
    require_choice("model.search", model.search, SEARCHES)
    if model.search == "adaptive":
        require(model.refine_points == 0, "model.refine_points", model.refine_points,
                "0 with model.search='adaptive' (its rounds refine the bracket themselves)")
        require(isinstance(model.search_points, int) and model.search_points >= 1, "model.search_points",
                model.search_points, "an integer >= 1 (capacities per set and round)")
        require(0 < model.search_span <= 1, "model.search_span", model.search_span, "a fraction in (0, 1]")
        require(model.search_tolerance > 0, "model.search_tolerance", model.search_tolerance,
                "a positive fraction of N (the bracket width at which the search stops)")
        require(isinstance(model.search_rounds, int) and model.search_rounds >= 0, "model.search_rounds",
                model.search_rounds, "an integer >= 0 (rounds after the first)")
        require(model.search_weighting in config.eval.weightings, "model.search_weighting",
                model.search_weighting, f"one of eval.weightings {tuple(config.eval.weightings)}")
    require(isinstance(model.window_rounds, int) and model.window_rounds >= 0, "model.window_rounds",
            model.window_rounds, "an integer >= 0 (0 = no rounds bracketing the window's ends)")
    require(model.window_tolerance > 0, "model.window_tolerance", model.window_tolerance,
            "a positive fraction of N (the bracket width of a window end at which its rounds stop)")
    if model.window_rounds > 0 and model.search != "adaptive":
        require(isinstance(model.search_points, int) and model.search_points >= 1, "model.search_points",
                model.search_points, "an integer >= 1 (capacities per window end, set and round)")
    require(training.steps >= 1, "training.steps", training.steps, "an integer >= 1")
    require(training.chunk_steps >= 1, "training.chunk_steps", training.chunk_steps, "an integer >= 1")
    require(training.point_block >= 0, "training.point_block", training.point_block,
            "an integer >= 0 (0 = the whole batch at once)")
    require(config.eval.model_batch >= 0, "eval.model_batch", config.eval.model_batch,
            "an integer >= 0 (0 = all models at once)")
    require_choice("training.estimator", training.estimator, gmm_grid.ESTIMATORS)
    require(gmm_grid.estimator_draws_allowed(training.estimator, training.noise_draws), "training.noise_draws",
            training.noise_draws, f"an even integer for training.estimator={training.estimator!r} (draws come in "
            "pairs)" if "antithetic" in training.estimator else "an integer >= 1")
    require_choice("training.optimizer", training.optimizer, gmm_grid.OPTIMIZERS)
    require(isinstance(training.batch_size, int) and 0 <= training.batch_size <= smallest_n, "training.batch_size",
            training.batch_size, f"an integer in [0, {smallest_n}] (0 = full batch; at most the smallest N)")
    require(training.peak_lr > 0 and training.final_lr >= 0, "training.peak_lr, training.final_lr",
            (training.peak_lr, training.final_lr), "peak_lr > 0, final_lr >= 0")
    require(0 <= training.warmup_fraction < 1, "training.warmup_fraction", training.warmup_fraction,
            "a fraction in [0, 1)")
    require(0 < training.adam_b2 < 1, "training.adam_b2", training.adam_b2,
            "a decay in (0, 1) (0.999: Adam's default and the paper's)")
    times = times_of(config)
    for field, weighting in [("training.weighting", training.weighting),
                             *[("eval.weightings", w) for w in config.eval.weightings]]:
        require_choice(field, weighting, theory.WEIGHTINGS)
        if weighting == "custom":
            theory.eps_loss_weights(times, "custom", training.custom_weights)
    require(config.sampling.num_samples >= 2, "sampling.num_samples", config.sampling.num_samples,
            "an integer >= 2")
    require(config.sampling.num_steps >= 1, "sampling.num_steps", config.sampling.num_steps,
            "an integer >= 1")
    require(isinstance(config.sampling.final_denoise, bool), "sampling.final_denoise", config.sampling.final_denoise,
            "True (return the clean estimate at t_min) or False (return x at t_min, the authors')")
    require(config.eval.noise_draws >= 1, "eval.noise_draws", config.eval.noise_draws, "an integer >= 1")
    require(0 < config.eval.delta < 0.5, "eval.delta", config.eval.delta, "a fraction in (0, 0.5)")
    require_choice("eval.window_fallback", config.eval.window_fallback, WINDOW_FALLBACKS)
    require(config.eval.crossover_points >= 2, "eval.crossover_points", config.eval.crossover_points,
            "an integer >= 2")
    footprint.require_fits(footprint.crossover(config))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs the sweep into `workdir`; returns the summary (fit, predictions, file paths).
    `config` is checked by validate_config (the launcher's door) beforehand."""
    started = time.perf_counter()
    settings = AnalysisSettings.of(config)  # what the analysis reads of the config
    rows, models, ratio_curves, losses = [], [], [], []
    for grid in grids_of(config):
        grid_dir = os.path.join(workdir, grid.folder)
        result = later_rounds(config, settings, grid, grid_dir, run_grid(config, grid, grid_dir))
        rows += summarize(settings, grid.dim, result)
        models += model_rows(settings, grid.dim, result)
        losses += per_t_rows(grid.dim, result)
        ratio_curves.append(dict(d=grid.dim, K=result["K"], N=result["N"], M=result["M"], ratio=result["ratio"]))
    for row in rows:
        logging.info("d=%d K=%d N=%d seed=%d: M_pt=%.1f window=[%.1f, %.1f], %d models", row["d"], row["K"],
                     row["N"], row["seed"], row["M_pt"], row["window_start"], row["window_end"], row["models"])

    fit = theory.linear_fits([r["N"] for r in rows], [r["M_pt"] for r in rows])
    predicted = {key: theory.linear_fits([r["N"] for r in rows], [r[key] for r in rows])["slope"]
                 for key in rows[0] if key.startswith("Mstar_")}
    pooled = by_train_size(rows)
    summary = dict(fit=fit, predicted_slopes=predicted, rows=rows, by_N=pooled, files={})
    if jax.process_index() == 0:  # every process trains and evaluates; process 0 writes the results
        write_results(workdir, config, summary, models, losses, ratio_curves, started)
    logging.info("M*/N slope: %.3f +- %.3f (intercept %.2f, R^2 %.4f, %d points); through the origin %.3f; "
                 "predicted slopes: %s", fit["slope"], fit["slope_se"], fit["intercept"], fit["r2"], fit["points"],
                 fit["slope_origin"], ", ".join(f"{k}={v:.3f}" for k, v in predicted.items()))
    return summary


def write_results(workdir: str, config, summary: dict, models: list[dict], losses: list[dict],
                  ratio_curves: list[dict], started: float) -> None:
    """Writes the tables, figures, report.md and summary.json of run() (begun at time.perf_counter()
    `started`) into workdir; their paths go into summary["files"]."""
    from jaxmem.plots import crossover as crossover_plots

    rows, pooled, fit = summary["rows"], summary["by_N"], summary["fit"]
    paths = summary["files"]
    paths.update(table_csv=io.write_csv(os.path.join(workdir, "crossover.csv"), rows),
                 table_md=io.write_text(os.path.join(workdir, "crossover.md"), io.markdown_table(rows)),
                 by_n_csv=io.write_csv(os.path.join(workdir, "crossover_by_n.csv"), pooled),
                 models_csv=io.write_csv(os.path.join(workdir, "models.csv"), models),
                 per_t_csv=io.write_csv(os.path.join(workdir, "per_t_losses.csv"), losses))
    paths["crossover_png"] = crossover_plots.save_crossover(os.path.join(workdir, "crossover.png"), rows, fit,
                                                            pooled)
    first_set = [r for r in losses if (r["d"], r["K"], r["N"], r["seed"]) == tuple(rows[0][k] for k in "d K N seed".split())]
    paths["per_t_png"] = crossover_plots.save_per_t_losses(os.path.join(workdir, "per_t_losses.png"), first_set)
    paths["ratio_png"] = crossover_plots.save_ratio_curves(os.path.join(workdir, "memorization_ratio.png"),
                                                           ratio_curves)
    devices = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
    paths["report_md"] = write_report(os.path.join(workdir, "report.md"), config, summary,
                                      time.perf_counter() - started, devices)
    io.write_json(os.path.join(workdir, "summary.json"), summary)
    logging.info("report: %s; figures: %s and %s", paths["report_md"], paths["crossover_png"], paths["ratio_png"])

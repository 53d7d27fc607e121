"""Memorization and sample quality against the EMA length, from one training run (launch/posthoc_ema.py).

run(config, workdir) with a configs/posthoc_ema.py config:
  1. trains (or restores) the EDM model of config.model in its own edm_training workdir
     (<workdir>/model or config.workdirs.model), which stores both power EMAs every
     model.training.snapshot_every_steps steps (jaxmem.train.trainer)
  2. for every posthoc.sigma_rels, the weights of the snapshots whose combined averaging profile is
     closest to the power EMA of that length ending at posthoc.end_step (jaxmem.train.posthoc_ema;
     a length the snapshots cannot represent is refused at validation, before training), and the
     reconstructed parameters (one pass over the snapshots for all lengths)
  3. rows: the raw parameters, every reconstructed length, and the trained classic EMA (with the
     sigma_rel of its own averaging profile); each samples model.sampling.num_samples images from
     the same starting noise: memorization rate against the training subset (1/3 test) with its
     Wilson interval, with quality.enabled FID, KID and precision/recall against the model's data
     split (jaxmem.metrics), and with per_level.num_queries one denoising step of noised training
     images at every sampling level (memorized fraction and MSE by sigma)
Workdir: model/ (the edm run: checkpoints, snapshots), posthoc_ema.csv/.md (the table),
per_level.csv, posthoc_ema.png (rate and FID against sigma_rel, the trained EMA marked),
report.md (command, versions, wall time, the table), summary.json.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import time
from importlib import metadata

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxmem import footprint, io, memorization, noise, sampling
from jaxmem.validation import ConfigError, require
from jaxmem.experiments import edm_training, sample_quality
from jaxmem.metrics import scores, weights
from jaxmem.train import posthoc_ema, trainer

COLUMNS = ["row", "sigma_rel", "gamma", "profile_error", "rate", "ci_low", "ci_high", "samples"]
QUALITY_COLUMNS = ["fid", "kid", "kid_se", "precision", "recall"]
PER_LEVEL_COLUMNS = ["row", "sigma_rel", "step", "sigma", "queries", "memorized_fraction", "ci_low", "ci_high", "mse"]
VERSIONED = ("jax", "flax", "optax", "orbax-checkpoint", "numpy")


def model_folder(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Where the model trains: config.workdirs.model or <workdir>/model."""
    return config.workdirs.model or os.path.join(workdir, "model")


def snapshot_steps(training: ml_collections.ConfigDict) -> list[int]:
    """The steps at which a complete run of `training` stores snapshots: every
    snapshot_every_steps steps and the last step."""
    every, total = training.snapshot_every_steps, trainer.total_steps(training)
    return sorted(set(range(every, total + 1, every)) | {total}) if every else []


def solve_all(config: ml_collections.ConfigDict, steps: list[int], gammas: tuple[float, ...]) -> list:
    """posthoc_ema.Reconstruction of every posthoc.sigma_rels from snapshots at `steps` holding
    averages of exponents `gammas` (ConfigError naming posthoc.* for an unreachable length)."""
    p = config.posthoc
    flat_steps = [s for s in steps for _ in gammas]
    flat_gammas = [g for _ in steps for g in gammas]
    try:
        return [posthoc_ema.solve_weights(flat_steps, flat_gammas, s, p.end_step or None, p.max_relative_error)
                for s in p.sigma_rels]
    except ConfigError as e:
        raise ConfigError(f"posthoc (sigma_rels, end_step, max_relative_error): {e}") from None


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, naming the field, before any training: the model's config, then whether the
    snapshots the run will store can represent every requested length."""
    try:
        edm_training.validate_config(config.model)
    except ConfigError as e:
        raise ConfigError(f"in model: {e}") from None
    training = config.model.training
    require(training.snapshot_every_steps > 0, "model.training.snapshot_every_steps", training.snapshot_every_steps,
            "> 0 (post-hoc EMA reconstructs from the snapshots the run stores)")
    p = config.posthoc
    require(len(p.sigma_rels) >= 1 and len(set(p.sigma_rels)) == len(p.sigma_rels), "posthoc.sigma_rels",
            tuple(p.sigma_rels), "one or more distinct relative EMA lengths")
    require(p.end_step >= 0, "posthoc.end_step", p.end_step, "0 (the last snapshot) or a step >= 1")
    require(p.max_relative_error > 0, "posthoc.max_relative_error", p.max_relative_error, "> 0")
    solve_all(config, snapshot_steps(training), trainer.power_gammas(training))
    require(config.per_level.num_queries >= 0 and config.per_level.chunk_size >= 1,
            "per_level.num_queries, per_level.chunk_size", (config.per_level.num_queries, config.per_level.chunk_size),
            ">= 0 (0 = no per-level profile) and >= 1")
    require(0 < config.eval.level < 1, "eval.level", config.eval.level, "a confidence level in (0, 1)")
    sample_quality.validate_quality_group(config.quality)
    # the reconstructed models are held together with the trained state
    size = footprint.unet_parameters(config.model.model) * footprint.FLOAT
    footprint.require_fits({**footprint.edm(config.model), "reconstructed models": (len(p.sigma_rels) + 2) * size})


def reconstruct(snapshots: trainer.Snapshots, solved: list) -> list:
    """The parameters of every reconstruction (host numpy pytrees), reading each snapshot once."""
    totals = [None] * len(solved)
    for k, step in enumerate(snapshots.steps):
        averages = snapshots.load(step)
        for i, result in enumerate(solved):
            part = posthoc_ema.combine(result.weights[k * len(averages):(k + 1) * len(averages)], list(averages))
            totals[i] = part if totals[i] is None else jax.tree_util.tree_map(np.add, totals[i], part)
    return totals


def trained_ema_sigma_rel(config: ml_collections.ConfigDict, steps: int) -> float:
    """sigma_rel of the classic EMA's averaging profile after `steps` steps (ramp-up included)."""
    t = config.model.training
    decay = trainer.ema_decay(t.batch_size, t.ema_half_life_images, t.ema_rampup_ratio)
    return posthoc_ema.ema_sigma_rel(np.asarray(decay(np.arange(steps))))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs the experiment (see the module docstring); returns the summary (also summary.json).
    `config` is checked by validate_config (the launcher's door) beforehand."""
    from jaxmem.plots.memorization import posthoc_ema_figure  # imported here: pyplot costs every launcher start ~0.5 s
    started = time.perf_counter()
    q = config.quality
    inception = weights.load() if q.enabled else None  # before training: the weights exist, or the command
    model = config.model
    data, _, result = edm_training.train_model(model, model_folder(config, workdir))
    steps = int(trainer.fetch_replicated(result.state.step))
    snapshots = trainer.read_snapshots(model, model_folder(config, workdir), data.shape)
    solved = solve_all(config, snapshots.steps, snapshots.gammas)
    for r in solved:
        logging.info("sigma_rel %.3g (gamma %.4g) ending at step %d: profile error %.2g, weights sum %.6f",
                     r.sigma_rel, r.gamma, r.end_step, r.relative_error, r.weights.sum())
    trained = trainer.fetch_replicated((result.state.params, result.state.ema_params))
    rows = [dict(row="raw parameters", sigma_rel=0.0, gamma=None, profile_error=None, params=trained[0])]
    rows += [dict(row=f"post-hoc {r.sigma_rel:g}", sigma_rel=r.sigma_rel, gamma=r.gamma,
                  profile_error=r.relative_error, params=params)
             for r, params in zip(solved, reconstruct(snapshots, solved), strict=True)]
    rows.append(dict(row="trained EMA", sigma_rel=trained_ema_sigma_rel(config, steps), gamma=None,
                     profile_error=None, params=trained[1]))

    s = model.sampling
    grid = noise.edm_sigmas(s.num_steps, s.sigma_min, s.sigma_max, s.rho)
    denoise = edm_training.sampling_denoiser(model)
    reference = reference_name = None
    if q.enabled:
        options = scores.ScoreOptions(q.kid_subsets, q.kid_subset_size, batch_size=q.batch_size or None)
        with sample_quality.logged_warnings():
            reference, reference_name = sample_quality.reference_stats(model.data, q.num_reference, q.reference_seed,
                                                                       inception, options)
    rng = np.random.default_rng(config.per_level.seed)
    queries = data.images[rng.permutation(len(data))[:config.per_level.num_queries]]
    z = rng.standard_normal(queries.shape).astype(np.float32)
    levels = []
    for row in rows:
        params = row.pop("params")
        samples = sampling.edm_generate(sampling.without_step(denoise), params, s.num_samples, data.shape, s.seed,
                                        grid, s.solver, s.batch_size, name=f"sample {row['row']}")
        found = memorization.trajectory_memorization(samples, data.images, config.eval.level)
        row.update(rate=found["rate"], ci_low=found["ci_low"], ci_high=found["ci_high"], samples=found["count"])
        if reference is not None:
            with sample_quality.logged_warnings():
                scored = scores.score_samples(samples[:q.num_samples or None], reference, inception, options,
                                              name=f"fid features {row['row']}")
            row.update({k: scored[k] for k in QUALITY_COLUMNS})
        if len(queries):
            by_level = memorization.per_level_memorization(functools.partial(denoise, params), queries, z, grid[:-1],
                                                           data.images, config.eval.level,
                                                           chunk_size=config.per_level.chunk_size)
            levels += [dict(row=row["row"], sigma_rel=row["sigma_rel"], step=i, sigma=float(sigma),
                            queries=len(queries), memorized_fraction=float(by_level["memorized_fraction"][i]),
                            ci_low=float(by_level["ci_low"][i]), ci_high=float(by_level["ci_high"][i]),
                            mse=float(by_level["mse"][i])) for i, sigma in enumerate(grid[:-1])]
        logging.info("%s: memorization rate %.3f [%.3f, %.3f]%s", row["row"], row["rate"], row["ci_low"],
                     row["ci_high"], f", FID {row['fid']:.4g}" if "fid" in row else "")

    columns = COLUMNS + (QUALITY_COLUMNS if q.enabled else [])
    summary = {"steps": steps, "images_seen": steps * model.training.batch_size, "num_train": len(data),
               "snapshots": len(snapshots.steps), "tracked_sigma_rels": list(snapshots.sigma_rels),
               "end_step": solved[0].end_step, "rows": rows, "wall_time_s": time.perf_counter() - started}
    if jax.process_index() == 0:
        path = functools.partial(os.path.join, workdir)
        io.write_csv(path("posthoc_ema.csv"), rows, columns)
        io.write_text(path("posthoc_ema.md"), io.markdown_table(rows, columns) + "\n")
        if levels:
            io.write_csv(path("per_level.csv"), levels, PER_LEVEL_COLUMNS)
        posthoc_ema_figure(path("posthoc_ema.png"), rows, levels,
                           title=f"{config.get('preset', '')}: {len(data)} training images, {steps:,} steps")
        io.write_text(path("report.md"), report(config, summary, columns, reference_name))
        io.write_json(path("summary.json"), summary)
        logging.info("results: %s", path("report.md"))
    return summary


def report(config: ml_collections.ConfigDict, summary: dict, columns: list[str], reference: str | None) -> str:
    """report.md: what ran (command, versions, wall time) and the table."""
    model, s = config.model, config.model.sampling
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in VERSIONED)
    quality = (f" fid, kid (kid_se its standard error), precision, recall (k = 3) of the first "
               f"{config.quality.num_samples or s.num_samples} samples against {reference} (FID Inception features; "
               "below 2,048 images FID is biased upward, equally for every row)." if reference else "")
    return "\n".join([
        f"# Memorization against EMA length: {config.get('preset', '')}", "",
        f"Command: `{shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])}`", "",
        f"Versions: {versions}; {jax.device_count()} {jax.devices()[0].platform} device(s). "
        f"Wall time: {summary['wall_time_s']:.0f} s (training included when it ran).", "",
        f"Model: {model.data.dataset}, {summary['num_train']} training images, {summary['steps']:,} steps "
        f"({summary['images_seen']:,} images); power EMAs sigma_rel {summary['tracked_sigma_rels']} stored every "
        f"{model.training.snapshot_every_steps} steps ({summary['snapshots']} snapshots); reconstructions end at "
        f"step {summary['end_step']:,}.", "",
        f"Each row samples {s.num_samples} images ({s.solver}, {s.num_steps} levels, seed {s.seed}: the same "
        "starting noise for every row). rate: memorized fraction (1/3 nearest-neighbour test against the "
        f"training images) with its {config.eval.level:.0%} Wilson interval [ci_low, ci_high]. profile_error: "
        "relative L2 distance between the reconstructed averaging profile and the requested one. The trained "
        "EMA's sigma_rel is that of its own averaging profile (half-life with ramp-up)." + quality, "",
        io.markdown_table(summary["rows"], columns), "",
        "![memorization rate (and FID when measured) against sigma_rel](posthoc_ema.png)", ""])

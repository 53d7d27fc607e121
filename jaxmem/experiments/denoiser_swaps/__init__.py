"""Memorization of trained networks (launch/denoiser_swaps.py): the swap table, per-level rates, the
mitigation and trajectory decompositions ("Two Calm Ends and the Wild Middle", section 3 and
Table 1; "How Diffusion Models Memorize", VE/EDM form).

run(config, workdir) with a configs/denoiser_swaps.py config:
  1. models: trains (or restores) the memorizing model A (config.memorizing: a small subset), the
     generalizing model B (config.generalizing: a large subset) and, with mitigation.enabled,
     the mitigated model C = A's recipe with the loss weight inside one region multiplied by
     mitigation.weight (lognormal sigmas unchanged, same images seen: equal compute). Each
     lives in its own edm_training workdir (<workdir>/<name>, or config.workdirs.<name> to
     reuse a run trained elsewhere) tied to its recipe by fingerprint.json; A and B may also be
     networks imported by launch/import_edm.py (their workdirs are only read; the config's data
     group says what they were trained on).
  2. regions on the swap grid (noise.edm_sigmas(swap.num_steps, ...)): the paper's indices,
     a geometry run's regimes.json, or explicit windows in step indices or sigma (swapping.py:
     the step windows and the one branch that picks A or B inside the sampler).
  3. swap table: A alone, B alone, B in A's small / medium / large window, A in B's windows,
     C alone; memorization rate of the samples against A's training set (1/3 test) with a
     Wilson interval; the same starting noise for every row. With quality.enabled, each row's
     FID, KID and precision/recall against A's data split (jaxmem.metrics). With swap.profile, B swapped into
     A one step at a time (which steps decide memorization).
  4. per level: each model denoises noised training and held-out images in one step at every
     grid level: memorized fraction (against its own training set) and MSE to the clean image.
  5. trajectories of A (per guidance scale): x* / noise / residual decomposition of the latents,
     deviation from the ideal memorizer, overestimation of the clean estimate, and the Spearman
     correlation of these scores with the nearest-neighbour distance ratio d1 / d2.
Workdir: memorizing/, generalizing/, mitigated/ (checkpoints, metrics), swap_table.csv/.md,
nearest.csv (every sample of every row: memorized, nearest training image, d1, d1 / d2),
swap_profile.csv/.png, per_level.csv/.png, mitigation.csv, trajectory.csv, correlations.csv,
guidance.csv, trajectory.png, pairs.png (A's memorized samples beside their nearest training
images), results.md (everything, figures by relative path), summary.json.

The package: models.py (steps 1-2), tables.py (steps 3-4 and the mitigation comparison),
trajectories.py (step 5); this module is the protocol: validate_config, then run.
"""

from __future__ import annotations

import functools
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxmem import footprint, io, sampling
from jaxmem.validation import ConfigError, require, require_choice
from jaxmem.denoisers import unet
from jaxmem.experiments import edm_training, sample_quality
from jaxmem.experiments.denoiser_swaps.models import (REGION_NAMES, model_configs, model_folder, regions, sigma_range,
                                            swap_grid, train_or_restore, with_imported_models)
from jaxmem.experiments.denoiser_swaps.tables import (QUALITY_COLUMNS, SwapSampler, add_quality, mitigation_rows,
                                                     nearest_rows, per_level_rows, swap_profile, swap_table)
from jaxmem.metrics import weights
from jaxmem.experiments.denoiser_swaps.trajectories import SCORES, correlations, trajectory_scores

SWAP_COLUMNS = ["row", "base", "donor", "region", "steps", "sigma_lo", "sigma_hi", "rate", "ci_low", "ci_high",
                "samples"]
MITIGATION_COLUMNS = ["model", "num_train", "images_seen", "rate", "ci_low", "ci_high", "heldout_mse",
                      "heldout_mse_region", "gap"]


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, naming the field, on configs that cannot run (before any training); the models
    are checked as with_imported_models resolves them."""
    config = with_imported_models(config)
    for name in ("memorizing", "generalizing"):
        try:
            edm_training.validate_config(config[name])
        except ConfigError as e:
            raise ConfigError(f"in {name}: {e}") from None
    require(config.memorizing.model.image_size == config.generalizing.model.image_size
            and config.memorizing.model.in_channels == config.generalizing.model.in_channels,
            "memorizing.model vs generalizing.model (image_size, in_channels)",
            [(c.model.image_size, c.model.in_channels) for c in (config.memorizing, config.generalizing)],
            "the same data shape (denoisers with different data shapes cannot be swapped)")
    named = [folder for folder in config.workdirs.values() if folder]
    require(len(set(map(os.path.abspath, named))) == len(named), "workdirs", config.workdirs.to_dict(),
            "a different folder for each model (or '' for <workdir>/<model>)")
    s = config.swap
    require_choice("swap.solver", s.solver, sampling.EDM_SOLVERS)
    require(s.regions != "geometry" or not s.regimes_path or os.path.isfile(s.regimes_path), "swap.regimes_path",
            s.regimes_path, "an existing regimes.json of a geometry run (launch/noise_regimes.py)")
    require(s.num_steps >= 3, "swap.num_steps", s.num_steps, "an integer >= 3 (three regions)")
    require(0 < s.sigma_min < s.sigma_max, "swap.sigma_min, swap.sigma_max", (s.sigma_min, s.sigma_max),
            "0 < sigma_min < sigma_max")
    require(s.num_samples >= 1 and s.batch_size >= 1, "swap.num_samples, swap.batch_size",
            (s.num_samples, s.batch_size), "integers >= 1")
    edm_training.check_label_batch("swap.batch_size", s.batch_size, config.memorizing.model.label_dim)
    edm_training.check_label_batch("swap.batch_size", s.batch_size, config.generalizing.model.label_dim)
    grid = swap_grid(config)
    found = regions(config, grid)
    m = config.mitigation
    require_choice("mitigation.region", m.region, REGION_NAMES)
    require(0 <= m.weight < 1, "mitigation.weight", m.weight, "0 <= w < 1 (the loss weight inside the region)")
    if m.enabled:  # model C trains with A's validated recipe and the region's sigma range as its loss window
        sigma_lo, sigma_hi = sigma_range(grid, found[m.region])
        require(sigma_lo < sigma_hi, "mitigation.region", m.region, f"a region of at least two grid levels (it is "
                f"sigma = {sigma_hi:g} only: model C's training.loss_window would be empty)")
    require(config.per_level.num_queries >= 1, "per_level.num_queries", config.per_level.num_queries, ">= 1")
    t = config.trajectory
    require(t.num_samples >= 2, "trajectory.num_samples", t.num_samples, "an integer >= 2")
    require(len(t.guidance_scales) >= 1 and 1.0 in tuple(t.guidance_scales), "trajectory.guidance_scales",
            tuple(t.guidance_scales), "a list of scales that includes 1.0 (no guidance)")
    for g in t.guidance_scales:
        edm_training.sampling_denoiser(config.memorizing, g)  # guidance needs an unconditional branch
    require(0 < config.eval.level < 1, "eval.level", config.eval.level, "a confidence level in (0, 1)")
    sample_quality.validate_quality_group(config.quality)
    # The models train one after another but all stay in memory for the tables.
    footprint.require_fits({f"{name} {part}": size for name in ("memorizing", "generalizing")
                            for part, size in footprint.edm(config[name]).items()})


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs the experiment (see the module docstring); returns the summary (also summary.json).
    `config` is checked by validate_config (the launcher's door) beforehand."""
    from jaxmem.plots import memorization as plots  # imported here: pyplot costs every launcher start ~0.5 s
    config = with_imported_models(config)
    if config.quality.enabled:
        weights.load()  # the Inception weights exist before hours of training, or the command that makes them
    grid = swap_grid(config)
    found = regions(config, grid)
    models = {name: train_or_restore(name, c, model_folder(config, workdir, name))
              for name, c in model_configs(config, grid, found).items()}
    primary = jax.process_index() == 0
    memorizing = models["memorizing"]
    reference = memorizing.train.images
    region_sigmas = {name: sigma_range(grid, w) for name, w in found.items()}
    path = functools.partial(os.path.join, workdir)
    lines = [f"# Memorization of trained networks: {config.get('preset', '')}", "",
             f"Swap sampler: {config.swap.solver}, {config.swap.num_steps} steps from {config.swap.sigma_max:g} to "
             f"{config.swap.sigma_min:g} (rho {config.swap.rho:g}), {config.swap.num_samples} samples, seed "
             f"{config.swap.seed}; regions ({config.swap.regions}): "
             + ", ".join(f"{n} = steps {w[0]}-{w[1]} (sigma {region_sigmas[n][0]:.3g}-{region_sigmas[n][1]:.3g})"
                         for n, w in found.items()) + ".",
             "", "## Models", "",
             io.markdown_table([dict(model=m.name, dataset=m.config.data.dataset, num_train=len(m.train),
                          parameters=unet.count_params(m.params), images_seen=m.images_seen,
                          loss_window=", ".join(f"{v:.4g}" for v in m.config.training.loss_window) or "none",
                          loss_window_weight=m.config.training.loss_window_weight) for m in models.values()],
                    ["model", "dataset", "num_train", "parameters", "images_seen", "loss_window",
                     "loss_window_weight"]), ""]

    sampler = SwapSampler(config, models, grid)
    table, details = swap_table(config, sampler, found, reference)
    quality = ""
    swap_columns, mitigation_columns = SWAP_COLUMNS, MITIGATION_COLUMNS
    if config.quality.enabled:
        quality_reference = add_quality(config, table, details)
        swap_columns, mitigation_columns = SWAP_COLUMNS + QUALITY_COLUMNS, MITIGATION_COLUMNS + QUALITY_COLUMNS
        quality = (f" fid, kid (kid_se its standard error), precision, recall (k = 3): the samples against "
                   f"{quality_reference} (FID Inception features; below 2,048 images FID is biased upward).")
    if primary:
        io.write_csv(path("swap_table.csv"), table, swap_columns)
        io.write_text(path("swap_table.md"), io.markdown_table(table, swap_columns) + "\n")
        io.write_csv(path("nearest.csv"), nearest_rows(details))
    lines += ["## Swap table", "", "A = memorizing, B = generalizing, C = mitigated; memorization rate of the "
              f"samples against A's training set (1/3 test), {config.eval.level:.0%} Wilson interval." + quality, "",
              io.markdown_table(table, swap_columns), ""]

    alone = details["A alone"]
    chosen = np.nonzero(alone["memorized"])[0][:config.eval.pairs]
    if len(chosen) and primary:
        plots.save_pairs(path("pairs.png"), alone["samples"][chosen], reference[alone["nearest"][chosen]],
                         title="A's memorized samples | nearest training image")
        lines += ["![memorized samples beside their nearest training images](pairs.png)", ""]

    summary = {"rates": {r["row"]: r["rate"] for r in table}, "regions": {n: list(w) for n, w in found.items()}}
    if config.quality.enabled:
        summary["quality"] = {r["row"]: {k: r[k] for k in QUALITY_COLUMNS} for r in table}
    if config.swap.profile:
        profile = swap_profile(config, sampler, reference)
        if primary:
            io.write_csv(path("swap_profile.csv"), profile)
            curves = (np.array([r[k] for r in profile]) for k in ("sigma", "rate", "ci_low", "ci_high"))
            plots.swap_profile_figure(path("swap_profile.png"), *curves, alone["rate"], region_sigmas,
                                      title=f"{config.get('preset', '')}: B swapped into A at a single step")
        summary["profile"] = [r["rate"] for r in profile]
        lines += ["## One-step swap profile", "", "B swapped into A at a single step.", "",
                  "![swap profile](swap_profile.png)", ""]

    levels = per_level_rows(config, models, grid)
    if primary:
        io.write_csv(path("per_level.csv"), levels)
        plots.per_level_figure(path("per_level.png"), levels, region_sigmas,
                               title=f"{config.get('preset', '')}: one denoising step by noise level")
    lines += ["## Per noise level", "", "One denoising step of noised training / held-out images; memorized "
              "against each model's own training set.", "", "![per-level memorization and MSE](per_level.png)", ""]

    if "mitigated" in models:
        mitigation = mitigation_rows(models, table, levels, found, config.mitigation.region)
        if primary:
            io.write_csv(path("mitigation.csv"), mitigation, mitigation_columns)
        summary["mitigation"] = mitigation
        lines += ["## Mitigation", "", f"C = A's recipe with the loss weight inside the {config.mitigation.region} "
                  f"region x {config.mitigation.weight:g} (equal images seen). heldout_mse: mean over grid levels "
                  "of the one-step held-out error; _region: inside the region; gap: held-out minus train."
                  + (quality or " Sample quality: quality.enabled=False."), "",
                  io.markdown_table(mitigation, mitigation_columns), ""]

    start = sampling.edm_noise(config.swap.seed, 0, config.trajectory.num_samples, memorizing.train.shape)
    per_sample, correlation_rows, guidance_rows = [], [], []
    for g in config.trajectory.guidance_scales:
        result = trajectory_scores(memorizing, grid, found, start, config.swap.solver, float(g), config.eval.level)
        for i in range(len(start)):
            per_sample.append(dict(guidance=g, sample=i, memorized=bool(result["memorized"][i]),
                                   distance_ratio=float(result["distance_ratio"][i]), nearest=int(result["nearest"][i]),
                                   **{k: float(v[i]) for k, v in result["scores"].items()}))
        correlation_rows += [dict(guidance=g, **row) for row in correlations(result)]
        guidance_rows.append(dict(guidance=g, rate=result["rate"], ci_low=result["ci_low"], ci_high=result["ci_high"],
                                  **{k: float(v.mean()) for k, v in result["scores"].items()}))
        if g == 1.0 and primary:
            plots.trajectory_figure(path("trajectory.png"), grid, result["target_coef"], result["noise_coef"],
                                    result["memorized"])
    if primary:
        io.write_csv(path("trajectory.csv"), per_sample)
        io.write_csv(path("correlations.csv"), correlation_rows)
        io.write_csv(path("guidance.csv"), guidance_rows)
    summary["correlations"] = correlation_rows
    summary["guidance"] = guidance_rows
    lines += ["## Trajectories of A", "", f"{len(start)} trajectories (the first samples of the A-alone row); "
              "x_sigma = a x* + b n + r. target_excess / noise_deficit: mean deviation from the ideal memorizer "
              "over the medium region; overestimation: mean <D - mu, x* - mu> / |x* - mu|^2 over the large region.",
              "", io.markdown_table(guidance_rows, ["guidance", "rate", "ci_low", "ci_high", *SCORES]), "",
              io.markdown_table(correlation_rows, ["guidance", "score", "spearman_vs_distance_ratio",
                                                   "pearson_vs_memorized", "mean_memorized", "mean_not_memorized"]), "",
              "![trajectory coefficients](trajectory.png)", ""]
    if primary:
        io.write_text(path("results.md"), "\n".join(lines) + "\n")
        io.write_json(path("summary.json"), summary)
        logging.info("results: %s (every table and figure) and %s", path("results.md"), path("swap_table.md"))
    return summary

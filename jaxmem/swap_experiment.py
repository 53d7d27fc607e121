"""Memorization of trained networks (launch/swap.py): the swap table, per-level rates, the
mitigation and trajectory decompositions ("Two Calm Ends and the Wild Middle", section 3 and
Table 1; "How Diffusion Models Memorize", VE/EDM form).

run(config, workdir) with a configs/swap.py config:
  1. models: trains (or restores) the memorizing model A (config.memorizing: a small subset), the
     generalizing model B (config.generalizing: a large subset) and, with mitigation.enabled,
     the mitigated model C = A's recipe with the loss weight inside one region multiplied by
     mitigation.weight (lognormal sigmas unchanged, same images seen: equal compute). Each
     lives in its own edm_experiment workdir (<workdir>/<name>, or config.workdirs.<name> to
     reuse a run trained elsewhere) tied to its recipe by fingerprint.json.
  2. regions on the swap grid (noise.edm_sigmas(swap.num_steps, ...)): the paper's indices,
     a geometry run's regimes.json, or explicit windows in step indices or sigma.
  3. swap table: A alone, B alone, B in A's small / medium / large window, A in B's windows,
     C alone; memorization rate of the samples against A's training set (1/3 test) with a
     Wilson interval; the same starting noise for every row. With swap.profile, B swapped into
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
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import logging
from scipy import stats

from jaxmem import io, memorization, noise, sampling, swap, trajectory
from jaxmem.config import ConfigError, require, require_choice
from jaxmem.data import ImageSet, load_images
from jaxmem.denoisers import unet
from jaxmem.plots import memorization as plots
from jaxmem.train import edm_experiment, trainer

REGION_SOURCES = ("paper", "geometry", "explicit")
WINDOW_UNITS = ("index", "sigma")
REGION_NAMES = ("small", "medium", "large")
SCORES = ("target_excess", "noise_deficit", "overestimation")


@dataclasses.dataclass
class Model:
    """A trained network: its config, training subset (and indices into the full split),
    sampling parameters, denoise(params, x, sigma) -> x0_hat, and images seen in training."""

    name: str
    config: ml_collections.ConfigDict
    train: ImageSet
    indices: np.ndarray
    params: object
    denoise: Callable
    images_seen: int

    def bound(self, guidance: float = 1.0) -> Callable:
        """denoise(x, sigma) with the parameters bound (and guidance scale g)."""
        denoise = self.denoise if guidance == 1 else edm_experiment.sampling_denoiser(self.config, guidance)
        return functools.partial(denoise, self.params)


# --------------------------------------------------------------------------- config and regions


def swap_grid(config: ml_collections.ConfigDict) -> np.ndarray:
    """The sampler grid [num_steps + 1] (EDM rho-grid ending in 0) of the swap table."""
    s = config.swap
    return noise.edm_sigmas(s.num_steps, s.sigma_min, s.sigma_max, s.rho)


def regions(config: ml_collections.ConfigDict, grid: np.ndarray) -> dict[str, swap.Window]:
    """{"small", "medium", "large": inclusive step window} on the grid, validated and disjoint."""
    s, num_steps = config.swap, len(grid) - 1
    require_choice("swap.regions", s.regions, REGION_SOURCES)
    if s.regions == "paper":
        require(num_steps == swap.PAPER_STEPS, "swap.num_steps", num_steps,
                f"{swap.PAPER_STEPS} with swap.regions='paper' (the paper's indices are on the 18-level grid)")
        found = dict(swap.PAPER_REGIONS)
    elif s.regions == "geometry":
        require(bool(s.regimes_path), "swap.regimes_path", s.regimes_path,
                "the regimes.json of a geometry run (launch/geometry.py) when swap.regions='geometry'")
        found = swap.regions_from_regimes(s.regimes_path, num_steps)
    else:
        require_choice("swap.windows_in", s.windows_in, WINDOW_UNITS)
        found = {}
        for name in REGION_NAMES:
            window = tuple(s.windows[name])
            if s.windows_in == "sigma":
                found[name] = swap.sigma_window(grid, *window)
            else:
                found[name] = swap.check_windows([window], num_steps)[0]
    missing = [name for name in REGION_NAMES if name not in found]
    require(not missing, "swap regions", sorted(found), f"all of small, medium, large on the {num_steps}-step "
            f"grid (missing: {', '.join(missing)}); give them with swap.regions='explicit'")
    swap.check_windows(list(found.values()), num_steps)  # disjoint
    return {name: found[name] for name in REGION_NAMES}


def sigma_range(grid: np.ndarray, window: swap.Window) -> tuple[float, float]:
    """(sigma_lo, sigma_hi) of the levels of an inclusive step window."""
    return float(grid[window[1]]), float(grid[window[0]])


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, naming the field, on configs that cannot run (before any training)."""
    for name in ("memorizing", "generalizing"):
        try:
            edm_experiment.validate_config(config[name])
        except ConfigError as e:
            raise ConfigError(f"in {name}: {e}") from None
    require(config.memorizing.model.image_size == config.generalizing.model.image_size
            and config.memorizing.model.in_channels == config.generalizing.model.in_channels,
            "memorizing.model vs generalizing.model (image_size, in_channels)",
            [(c.model.image_size, c.model.in_channels) for c in (config.memorizing, config.generalizing)],
            "the same data shape (denoisers with different data shapes cannot be swapped)")
    s = config.swap
    require_choice("swap.solver", s.solver, sampling.EDM_SOLVERS)
    require(s.num_steps >= 3, "swap.num_steps", s.num_steps, "an integer >= 3 (three regions)")
    require(0 < s.sigma_min < s.sigma_max, "swap.sigma_min, swap.sigma_max", (s.sigma_min, s.sigma_max),
            "0 < sigma_min < sigma_max")
    require(s.num_samples >= 1 and s.batch_size >= 1, "swap.num_samples, swap.batch_size",
            (s.num_samples, s.batch_size), "integers >= 1")
    edm_experiment.check_label_batch("swap.batch_size", s.batch_size, config.memorizing.model.label_dim)
    edm_experiment.check_label_batch("swap.batch_size", s.batch_size, config.generalizing.model.label_dim)
    regions(config, swap_grid(config))
    m = config.mitigation
    require_choice("mitigation.region", m.region, REGION_NAMES)
    require(0 <= m.weight < 1, "mitigation.weight", m.weight, "0 <= w < 1 (the loss weight inside the region)")
    require(config.per_level.num_queries >= 1, "per_level.num_queries", config.per_level.num_queries, ">= 1")
    t = config.trajectory
    require(t.num_samples >= 2, "trajectory.num_samples", t.num_samples, "an integer >= 2")
    require(len(t.guidance_scales) >= 1 and 1.0 in tuple(t.guidance_scales), "trajectory.guidance_scales",
            tuple(t.guidance_scales), "a list of scales that includes 1.0 (no guidance)")
    for g in t.guidance_scales:
        edm_experiment.sampling_denoiser(config.memorizing, g)  # guidance needs an unconditional branch
    require(0 < config.eval.level < 1, "eval.level", config.eval.level, "a confidence level in (0, 1)")


def mitigated_config(config: ml_collections.ConfigDict, grid: np.ndarray,
                     found: dict[str, swap.Window]) -> ml_collections.ConfigDict:
    """A's config with training.loss_window = the mitigation region's sigma range, weight w.

    grid, found: the swap grid and its regions (swap_grid, regions)."""
    mitigated = copy.deepcopy(config.memorizing)
    window = found[config.mitigation.region]
    with mitigated.unlocked():
        mitigated.training.loss_window = sigma_range(grid, window)
        mitigated.training.loss_window_weight = float(config.mitigation.weight)
    return mitigated


def model_configs(config: ml_collections.ConfigDict, grid: np.ndarray,
                  found: dict[str, swap.Window]) -> dict[str, ml_collections.ConfigDict]:
    """{"memorizing", "generalizing" (, "mitigated")}: the edm configs of the models to train."""
    configs = {"memorizing": config.memorizing, "generalizing": config.generalizing}
    if config.mitigation.enabled:
        configs["mitigated"] = mitigated_config(config, grid, found)
    return configs


# --------------------------------------------------------------------------- models


def train_or_restore(name: str, config: ml_collections.ConfigDict, folder: str) -> Model:
    """Trains model `name` in `folder` (resuming) or restores it when finished."""
    recipe = {k: v for k, v in config.to_dict().items() if k not in ("sampling", "eval")}
    io.check_fingerprint(os.path.join(folder, "fingerprint.json"), json.dumps(recipe, sort_keys=True, default=str),
                         f"the checkpoints of another {name} model")
    data, indices, result = edm_experiment.train_model(config, folder)
    steps = int(trainer.fetch_replicated(result.state.step))
    return Model(name, config, data, indices, edm_experiment.sampling_params(config, result),
                 edm_experiment.sampling_denoiser(config), steps * config.training.batch_size)


def model_folder(config: ml_collections.ConfigDict, workdir: str, name: str) -> str:
    """Where model `name` trains: config.workdirs.<name> (e.g. a finished launch/train.py run of
    the same recipe) or <workdir>/<name>."""
    return config.workdirs[name] or os.path.join(workdir, name)


def held_out(model: Model, full: ImageSet) -> np.ndarray:
    """The images of the model's split `full` outside its training subset, [M, H, W, C] (M may be 0)."""
    keep = np.ones(len(full), bool)
    keep[model.indices] = False
    return full.images[keep]


# --------------------------------------------------------------------------- swap table


def pair_step(base: Model, donor: Model) -> Callable:
    """step_denoise(params, x, sigma, step) for edm_generate: donor inside params["windows"]
    (int32 [W, 2], jaxmem.swap.window_array), base elsewhere. Windows are traced, so one
    compiled sampler serves every row of the table with this (base, donor) pair."""

    def step(params, x, sigma, index):
        return jax.lax.cond(swap.in_windows(index, params["windows"]),
                            lambda: donor.denoise(params["donor"], x, sigma),
                            lambda: base.denoise(params["base"], x, sigma))

    return step


def swap_rows(models: dict[str, Model], found: dict[str, swap.Window]) -> list[dict]:
    """The table's rows: (label, base, donor, region or None)."""
    rows = [dict(row="A alone", base="memorizing", donor="generalizing", region=None),
            dict(row="B alone", base="generalizing", donor="memorizing", region=None)]
    rows += [dict(row=f"B in A: {name}", base="memorizing", donor="generalizing", region=name) for name in found]
    rows += [dict(row=f"A in B: {name}", base="generalizing", donor="memorizing", region=name) for name in found]
    if "mitigated" in models:
        rows.append(dict(row="C alone", base="mitigated", donor="generalizing", region=None))
    return rows


class SwapSampler:
    """Samples the swap table's rows with one compiled program per (base, donor) pair."""

    def __init__(self, config: ml_collections.ConfigDict, models: dict[str, Model], grid: np.ndarray):
        self.config, self.models, self.grid = config, models, grid
        self.shape = models["memorizing"].train.shape
        self.steps: dict[tuple[str, str], Callable] = {}

    def sample(self, base: str, donor: str, windows) -> np.ndarray:
        """[swap.num_samples, H, W, C] from base with donor inside windows (list of index pairs)."""
        key = (base, donor)
        if key not in self.steps:
            swap.check_same_shapes(self.models[base].bound(), self.models[donor].bound(), self.shape)
            self.steps[key] = pair_step(self.models[base], self.models[donor])
        s = self.config.swap
        params = {"base": self.models[base].params, "donor": self.models[donor].params,
                  "windows": swap.window_array(windows, len(self.grid) - 1)}
        return sampling.edm_generate(self.steps[key], params, s.num_samples, self.shape, s.seed, self.grid,
                                     s.solver, s.batch_size)


def swap_table(config, sampler: SwapSampler, found: dict[str, swap.Window], reference: np.ndarray) -> tuple[list, dict]:
    """Rows of the swap table with rates against `reference` (A's training images), and the
    trajectory_memorization result of each row (samples kept for the pairs figure)."""
    rows, details = [], {}
    for spec in swap_rows(sampler.models, found):
        window = found.get(spec["region"]) if spec["region"] else None
        samples = sampler.sample(spec["base"], spec["donor"], [window] if window else [])
        result = memorization.trajectory_memorization(samples, reference, config.eval.level)
        details[spec["row"]] = dict(result, samples=samples)
        lo, hi = sigma_range(sampler.grid, window) if window else (None, None)
        rows.append(dict(spec, steps=f"{window[0]}-{window[1]}" if window else "", sigma_lo=lo, sigma_hi=hi,
                         rate=result["rate"], ci_low=result["ci_low"], ci_high=result["ci_high"],
                         samples=result["count"]))
        logging.info("swap %s: memorization rate %.3f [%.3f, %.3f]", spec["row"], result["rate"],
                     result["ci_low"], result["ci_high"])
    return rows, details


def nearest_rows(details: dict) -> list[dict]:
    """Per row and sample (sample k starts from noise k in every row): memorized, the nearest
    training image's index in A's training set, its distance d1 and d1 / d2."""
    return [dict(row=row, sample=k, memorized=bool(result["memorized"][k]), nearest=int(result["nearest"][k]),
                 nearest_distance=float(result["nearest_distance"][k]),
                 distance_ratio=float(result["distance_ratio"][k]))
            for row, result in details.items() for k in range(result["count"])]


def swap_profile(config, sampler: SwapSampler, reference: np.ndarray) -> list[dict]:
    """B swapped into A at one step i at a time: rate per step, [num_steps] rows."""
    rows = []
    for i in range(len(sampler.grid) - 1):
        samples = sampler.sample("memorizing", "generalizing", [(i, i)])
        result = memorization.trajectory_memorization(samples, reference, config.eval.level)
        rows.append(dict(step=i, sigma=float(sampler.grid[i]), rate=result["rate"], ci_low=result["ci_low"],
                         ci_high=result["ci_high"]))
    return rows


# --------------------------------------------------------------------------- per level


def per_level_rows(config, models: dict[str, Model], grid: np.ndarray) -> list[dict]:
    """One-step memorized fraction and MSE by level for every model on training and held-out images."""
    q, rng = config.per_level.num_queries, np.random.default_rng(config.per_level.seed)
    levels = grid[:-1]
    rows, splits_loaded = [], {}
    for name, model in models.items():
        d = model.config.data
        source = (d.dataset, d.split, d.data_dir, d.path)
        if source not in splits_loaded:  # the models usually share one split: load it once
            splits_loaded[source] = load_images(*source)
        splits = {"train": model.train.images, "held-out": held_out(model, splits_loaded[source])}
        for split, images in splits.items():
            if not len(images):
                logging.info("per-level: %s has no held-out images (it trains on the whole split)", name)
                continue
            clean = images[rng.permutation(len(images))[:q]]
            z = rng.standard_normal(clean.shape).astype(np.float32)
            result = memorization.per_level_memorization(
                model.bound(), clean, z, levels, model.train.images, config.eval.level,
                chunk_size=config.per_level.chunk_size)
            for i, sigma in enumerate(levels):
                rows.append(dict(model=name, split=split, step=i, sigma=float(sigma), queries=len(clean),
                                 memorized_fraction=float(result["memorized_fraction"][i]),
                                 ci_low=float(result["ci_low"][i]), ci_high=float(result["ci_high"][i]),
                                 mse=float(result["mse"][i])))
    return rows


def mitigation_rows(models: dict[str, Model], table: list[dict], levels: list[dict], found, region: str) -> list[dict]:
    """Memorization and held-out denoising error of every model at its compute (images seen)."""
    window = found[region]
    out = []
    for label, name in (("A alone", "memorizing"), ("C alone", "mitigated"), ("B alone", "generalizing")):
        if name not in models:
            continue
        row = next(r for r in table if r["row"] == label)
        heldout = [r for r in levels if r["model"] == name and r["split"] == "held-out"]
        train = [r for r in levels if r["model"] == name and r["split"] == "train"]
        inside = [r["mse"] for r in heldout if window[0] <= r["step"] <= window[1]]
        heldout_mse = float(np.mean([r["mse"] for r in heldout])) if heldout else None
        out.append(dict(model=name, images_seen=models[name].images_seen, num_train=len(models[name].train),
                        rate=row["rate"], ci_low=row["ci_low"], ci_high=row["ci_high"], heldout_mse=heldout_mse,
                        heldout_mse_region=float(np.mean(inside)) if inside else None,
                        gap=heldout_mse - float(np.mean([r["mse"] for r in train])) if heldout else None))
    return out


# --------------------------------------------------------------------------- trajectories


def trajectory_scores(model: Model, grid: np.ndarray, found, start, solver: str, guidance: float,
                      level: float) -> dict:
    """Decomposition scores of the model's trajectories from unit noise `start` [T, H, W, C].

    Per sample: memorized, distance_ratio d1/d2, nearest (trajectory_memorization of the final
    latents against the model's training set); target_excess and noise_deficit (mean over the
    latents in the medium region), overestimation (mean over the large region's steps), see
    jaxmem.trajectory. Also the coefficients a, b by level ([n + 1, T]) for the figure.
    """
    denoise = model.bound(guidance)
    solve = jax.jit(lambda z: sampling.edm_trajectory(lambda x, s, i: denoise(x, s), z, grid, solver))
    latents, estimates = solve(start)
    result = memorization.trajectory_memorization(np.asarray(latents[-1]), model.train.images, level)
    target = model.train.images[result["nearest"]]
    parts = trajectory.decompose(latents, target, start)
    deviation = trajectory.schedule_deviation(parts, grid)
    over = trajectory.overestimation(estimates, target, model.train.images.mean(axis=0))
    (m0, m1), (l0, l1) = found["medium"], found["large"]
    scores = {"target_excess": np.asarray(deviation["target_excess"][m0:m1 + 1]).mean(axis=0),
              "noise_deficit": np.asarray(deviation["noise_deficit"][m0:m1 + 1]).mean(axis=0),
              "overestimation": np.asarray(over[l0:l1 + 1]).mean(axis=0)}
    return dict(result, scores=scores, target_coef=np.asarray(parts["target_coef"]),
                noise_coef=np.asarray(parts["noise_coef"]))


def correlations(result: dict) -> list[dict]:
    """Spearman correlation of each score with d1/d2 (negative: the score rises as samples
    memorize) and the point-biserial (Pearson) correlation with the memorized flag; NaN when
    either side is constant."""
    rows = []
    flags = result["memorized"].astype(np.float64)
    for name in SCORES:
        score = result["scores"][name].astype(np.float64)
        varied = np.ptp(score) > 0
        rho = stats.spearmanr(score, result["distance_ratio"]).statistic if varied else np.nan
        r = np.corrcoef(score, flags)[0, 1] if varied and np.ptp(flags) > 0 else np.nan
        rows.append(dict(score=name, spearman_vs_distance_ratio=float(rho), pearson_vs_memorized=float(r),
                         mean_memorized=float(score[flags > 0].mean()) if flags.any() else None,
                         mean_not_memorized=float(score[flags == 0].mean()) if (flags == 0).any() else None))
    return rows


# --------------------------------------------------------------------------- the experiment


SWAP_COLUMNS = ["row", "base", "donor", "region", "steps", "sigma_lo", "sigma_hi", "rate", "ci_low", "ci_high",
                "samples"]
MITIGATION_COLUMNS = ["model", "num_train", "images_seen", "rate", "ci_low", "ci_high", "heldout_mse",
                      "heldout_mse_region", "gap"]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs the experiment (see the module docstring); returns the summary (also summary.json)."""
    validate_config(config)
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
    if primary:
        io.write_csv(path("swap_table.csv"), table, SWAP_COLUMNS)
        io.write_text(path("swap_table.md"), io.markdown_table(table, SWAP_COLUMNS) + "\n")
        io.write_csv(path("nearest.csv"), nearest_rows(details))
    lines += ["## Swap table", "", "A = memorizing, B = generalizing, C = mitigated; memorization rate of the "
              f"samples against A's training set (1/3 test), {config.eval.level:.0%} Wilson interval.", "",
              io.markdown_table(table, SWAP_COLUMNS), ""]

    alone = details["A alone"]
    chosen = np.nonzero(alone["memorized"])[0][:config.eval.pairs]
    if len(chosen) and primary:
        plots.save_pairs(path("pairs.png"), alone["samples"][chosen], reference[alone["nearest"][chosen]],
                         title="A's memorized samples | nearest training image")
        lines += ["![memorized samples beside their nearest training images](pairs.png)", ""]

    summary = {"rates": {r["row"]: r["rate"] for r in table}, "regions": {n: list(w) for n, w in found.items()}}
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
            io.write_csv(path("mitigation.csv"), mitigation, MITIGATION_COLUMNS)
        summary["mitigation"] = mitigation
        lines += ["## Mitigation", "", f"C = A's recipe with the loss weight inside the {config.mitigation.region} "
                  f"region x {config.mitigation.weight:g} (equal images seen). heldout_mse: mean over grid levels "
                  "of the one-step held-out error; _region: inside the region; gap: held-out minus train. "
                  "FID/KID are not computed (no Inception network is shipped).", "",
                  io.markdown_table(mitigation, MITIGATION_COLUMNS), ""]

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
    return summary

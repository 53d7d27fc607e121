"""The measurements of the swap experiment on its models: the swap table (one denoiser inside
another's noise window) with the sample quality of each row, the one-step swap profile,
per-level memorization and error, and the mitigation comparison at equal compute.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import ml_collections
import numpy as np
from absl import logging

from jaxmem import memorization, sampling
from jaxmem.data import load_images
from jaxmem.experiments import sample_quality
from jaxmem.experiments.denoiser_swaps import swapping
from jaxmem.experiments.denoiser_swaps.models import Model, held_out, sigma_range
from jaxmem.metrics import scores, weights

QUALITY_COLUMNS = ["fid", "kid", "kid_se", "precision", "recall"]


def pair_step(base: Model, donor: Model) -> Callable:
    """step_denoise(params, x, sigma, step) for edm_generate: donor inside params["windows"]
    (int32 [W, 2], swapping.window_array), base elsewhere. Windows are traced, so one
    compiled sampler serves every row of the table with this (base, donor) pair."""

    def step(params, x, sigma, index):
        return swapping.switch_in_windows(index, params["windows"], functools.partial(donor.denoise, params["donor"]),
                                          functools.partial(base.denoise, params["base"]), x, sigma)

    return step


def swap_rows(models: dict[str, Model], found: dict[str, swapping.Window]) -> list[dict]:
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

    def sample(self, base: str, donor: str, windows, label: str) -> np.ndarray:
        """[swap.num_samples, H, W, C] from base with donor inside windows (list of index pairs);
        `label` names the progress lines."""
        key = (base, donor)
        if key not in self.steps:
            swapping.check_same_shapes(self.models[base].bound(), self.models[donor].bound(), self.shape)
            self.steps[key] = pair_step(self.models[base], self.models[donor])
        s = self.config.swap
        params = {"base": self.models[base].params, "donor": self.models[donor].params,
                  "windows": swapping.window_array(windows, len(self.grid) - 1)}
        return sampling.edm_generate(self.steps[key], params, s.num_samples, self.shape, s.seed, self.grid,
                                     s.solver, s.batch_size, name=f"sample {label}")


def swap_table(config, sampler: SwapSampler, found: dict[str, swapping.Window],
               reference: np.ndarray) -> tuple[list, dict]:
    """Rows of the swap table with rates against `reference` (A's training images), and the
    trajectory_memorization result of each row (samples kept for the pairs figure)."""
    rows, details = [], {}
    for spec in swap_rows(sampler.models, found):
        window = found.get(spec["region"]) if spec["region"] else None
        samples = sampler.sample(spec["base"], spec["donor"], [window] if window else [], spec["row"])
        result = memorization.trajectory_memorization(samples, reference, config.eval.level)
        details[spec["row"]] = dict(result, samples=samples)
        lo, hi = sigma_range(sampler.grid, window) if window else (None, None)
        rows.append(dict(spec, steps=f"{window[0]}-{window[1]}" if window else "", sigma_lo=lo, sigma_hi=hi,
                         rate=result["rate"], ci_low=result["ci_low"], ci_high=result["ci_high"],
                         samples=result["count"]))
        logging.info("swap %s: memorization rate %.3f [%.3f, %.3f]", spec["row"], result["rate"],
                     result["ci_low"], result["ci_high"])
    return rows, details


def add_quality(config, table: list[dict], details: dict, params=None) -> str:
    """Adds QUALITY_COLUMNS to every row of `table` in place: FID, KID and precision/recall of the
    row's first quality.num_samples samples (0 = all) against the memorizing model's data split
    (a class-balanced subset of quality.num_reference images, 0 = all; cached statistics).
    Returns the reference's name. `params`: the Inception weights (default: weights.load())."""
    q = config.quality
    params = params if params is not None else weights.load()
    options = scores.ScoreOptions(q.kid_subsets, q.kid_subset_size, batch_size=q.batch_size or None)
    with sample_quality.logged_warnings():
        reference, name = sample_quality.reference_stats(config.memorizing.data, q.num_reference, q.reference_seed,
                                                         params, options)
        for row in table:
            samples = details[row["row"]]["samples"][:q.num_samples or None]
            result = scores.score_samples(samples, reference, params, options, name=f"fid features {row['row']}")
            row.update({k: result[k] for k in QUALITY_COLUMNS})
            logging.info("swap %s: FID %.4g, precision %.3f, recall %.3f (against %s)", row["row"], result["fid"],
                         result["precision"], result["recall"], name)
    return name


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
        samples = sampler.sample("memorizing", "generalizing", [(i, i)], f"B in A at step {i}")
        result = memorization.trajectory_memorization(samples, reference, config.eval.level)
        rows.append(dict(step=i, sigma=float(sampler.grid[i]), rate=result["rate"], ci_low=result["ci_low"],
                         ci_high=result["ci_high"]))
    return rows


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
    """Memorization, held-out denoising error and (when the table has them) sample quality of
    every model at its compute (images seen)."""
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
                        gap=heldout_mse - float(np.mean([r["mse"] for r in train])) if heldout else None,
                        **{k: row[k] for k in QUALITY_COLUMNS if k in row}))
    return out

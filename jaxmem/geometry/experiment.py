"""The geometry experiment: concentration, coverage, MSE and Wiener curves, and the regime map.

run(config, workdir) writes into workdir:
  split_indices.npz      training / held-out indices into the data source(s)
  concentration.csv      sigma, W (max weight), entropy, effective count, source weight (+ standard errors)
  coverage.csv           sigma, C (shell coverage of held-out points) + standard error, exact chi-square shell mass
  mse.csv                sigma, empirical-optimum MSE on training and held-out points, gap, Wiener MSE (held-out)
  wiener_distance.csv    sigma, E|D_wiener - D_empirical|^2 on noisy held-out points
  regimes.json           regime boundaries, sigma intervals, EDM-grid index ranges, per-level labels
  geometry.png           W and C (and MSE) against log sigma with the regimes shaded
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxmem import io, noise
from jaxmem.config import require, require_choice
from jaxmem.data import DATASETS, balanced_subset, load_images, train_heldout_split
from jaxmem.denoisers import empirical, linear
from jaxmem.geometry import concentration, coverage, mse, queries, regimes
from jaxmem.plots import geometry as geometry_plot

HELDOUT_SPLITS = ("", "test")
TFDS_DATASETS = ("mnist", "cifar10")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, naming the field, on values the experiment cannot run with."""
    data = config.data
    require_choice("data.dataset", data.dataset, DATASETS)
    require_choice("data.heldout_split", data.heldout_split, HELDOUT_SPLITS)
    require(not data.heldout_split or data.dataset in TFDS_DATASETS, "data.heldout_split", data.heldout_split,
            f"'' for dataset {data.dataset!r} (a separate held-out split exists only for {', '.join(TFDS_DATASETS)})")
    require(data.n_train >= 1, "data.n_train", data.n_train, "an integer >= 1")
    require(data.n_heldout >= 1, "data.n_heldout", data.n_heldout, "an integer >= 1")
    grid = config.grid
    require(grid.num_sigmas >= 2, "grid.num_sigmas", grid.num_sigmas, "an integer >= 2")
    require(0 < grid.sigma_min < grid.sigma_max, "grid.sigma_min, grid.sigma_max",
            (grid.sigma_min, grid.sigma_max), "0 < sigma_min < sigma_max")
    for group, limit, limit_name in (("concentration", data.n_train, "data.n_train"),
                                     ("coverage", data.n_heldout, "data.n_heldout"),
                                     ("mse", min(data.n_train, data.n_heldout), "min(data.n_train, data.n_heldout)")):
        points, draws = config[group].num_points, config[group].draws
        require(1 <= points <= limit, f"{group}.num_points", points, f"1 <= num_points <= {limit_name} = {limit}")
        require(draws >= 1, f"{group}.draws", draws, "an integer >= 1")
    require(config.coverage.c > 0, "coverage.c", config.coverage.c, "c > 0")
    for field in ("block_size", "chunk_size", "mse_chunk_size"):
        require(config.compute[field] >= 1, f"compute.{field}", config.compute[field], "an integer >= 1")


def load_split(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray, dict]:
    """(train [n_train, d], heldout [n_heldout, d], indices) as flat float32 in [-1, 1]."""
    data = config.data
    source = load_images(data.dataset, "train", data.data_dir or None, data.path or None)
    if data.heldout_split:
        heldout_source = load_images(data.dataset, data.heldout_split, data.data_dir or None, data.path or None)
        train_idx = balanced_subset(source.labels, data.n_train, config.seed)
        heldout_idx = balanced_subset(heldout_source.labels, data.n_heldout, config.seed + 1)
    else:
        heldout_source = source
        train_idx, heldout_idx = train_heldout_split(source.labels, data.n_train, data.n_heldout, config.seed)
    indices = {"train": train_idx, "heldout": heldout_idx}
    return source.take(train_idx).flat, heldout_source.take(heldout_idx).flat, indices


def noisy_queries(points: np.ndarray, num_points: int, draws: int, seed: int, key) -> tuple[np.ndarray, ...]:
    """num_points of `points` (seeded choice), each repeated `draws` times, with N(0, I) noise.

    Returns (chosen point indices [num_points * draws] point-major, clean [Q, d], noise [Q, d]).
    """
    chosen = np.sort(np.random.default_rng(seed).choice(points.shape[0], num_points, replace=False))
    index = np.repeat(chosen, draws)
    z = np.asarray(jax.random.normal(key, (index.size, points.shape[1]), np.float32))
    return index, points[index], z


def _columns(sigmas: np.ndarray, **curves) -> list[dict]:
    """Rows {sigma, name: value, ...} from per-level arrays."""
    return [{"sigma": float(s), **{k: float(v[i]) for k, v in curves.items()}} for i, s in enumerate(sigmas)]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Measures every curve of the geometry study and writes them (see module docstring)."""
    check_config(config)
    started = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    train, heldout, indices = load_split(config)
    io.save_npz(os.path.join(workdir, "split_indices.npz"), **indices)
    sigmas = noise.log_sigmas(config.grid.num_sigmas, config.grid.sigma_min, config.grid.sigma_max)
    params = empirical.make_params(train, config.compute.block_size)
    key = jax.random.PRNGKey(config.seed)
    chunk, mse_chunk = config.compute.chunk_size, config.compute.mse_chunk_size
    logging.info("geometry: %s, N = %d training, %d held-out, d = %d, %d levels in [%g, %g]",
                 config.data.dataset, len(train), len(heldout), train.shape[1], len(sigmas), sigmas[0], sigmas[-1])

    cc = config.concentration
    source, clean, z = noisy_queries(train, cc.num_points, cc.draws, config.seed, jax.random.fold_in(key, 0))
    stats = concentration.posterior_concentration(params, clean, z, sigmas, source, chunk)
    summary = {name: queries.mean_and_standard_error(stats[name], cc.draws) for name in concentration.CONCENTRATION_FIELDS}
    conc_curves = {}
    for name, (mean, se) in summary.items():
        conc_curves[name], conc_curves[name + "_se"] = mean, se

    cv = config.coverage
    _, clean, z = noisy_queries(heldout, cv.num_points, cv.draws, config.seed + 1, jax.random.fold_in(key, 1))
    covered = coverage.shell_coverage(params, clean, z, sigmas, cv.c, chunk)
    cov_mean, cov_se = queries.mean_and_standard_error(covered, cv.draws)
    shell_mass = coverage.chi2_shell_mass(train.shape[1], cv.c)

    mc = config.mse
    _, train_clean, train_z = noisy_queries(train, mc.num_points, mc.draws, config.seed + 2, jax.random.fold_in(key, 2))
    _, held_clean, held_z = noisy_queries(heldout, mc.num_points, mc.draws, config.seed + 3, jax.random.fold_in(key, 3))
    wiener = linear.make_params(train)
    mse_train = queries.mean_and_standard_error(mse.mse_curve(empirical.apply, params, train_clean, train_z, sigmas, mse_chunk), mc.draws)
    mse_held = queries.mean_and_standard_error(mse.mse_curve(empirical.apply, params, held_clean, held_z, sigmas, mse_chunk), mc.draws)
    mse_wiener = queries.mean_and_standard_error(mse.mse_curve(linear.apply, wiener, held_clean, held_z, sigmas, mse_chunk), mc.draws)
    distance = queries.mean_and_standard_error(mse.denoiser_distance_curve(linear.apply, wiener, empirical.apply, params,
                                                                   held_clean, held_z, sigmas, mse_chunk), mc.draws)

    regime = regimes.regime_map(sigmas, conc_curves["max_weight"], cov_mean, config.regimes.w_threshold,
                                config.regimes.c_threshold, config.regimes.edm_steps)
    labels = regimes.label_levels(conc_curves["max_weight"], cov_mean, config.regimes.w_threshold,
                                  config.regimes.c_threshold)
    regime["levels"] = [{"sigma": float(s), "regime": str(r)} for s, r in zip(sigmas, labels)]
    regime["elapsed_s"] = time.perf_counter() - started

    paths = {
        "concentration": io.write_csv(os.path.join(workdir, "concentration.csv"), _columns(sigmas, **conc_curves)),
        "coverage": io.write_csv(os.path.join(workdir, "coverage.csv"), _columns(
            sigmas, coverage=cov_mean, coverage_se=cov_se, chi2_shell_mass=np.full(len(sigmas), shell_mass))),
        "mse": io.write_csv(os.path.join(workdir, "mse.csv"), _columns(
            sigmas, train_mse=mse_train[0], train_mse_se=mse_train[1], heldout_mse=mse_held[0],
            heldout_mse_se=mse_held[1], generalization_gap=mse_held[0] - mse_train[0],
            wiener_heldout_mse=mse_wiener[0], wiener_heldout_mse_se=mse_wiener[1])),
        "wiener_distance": io.write_csv(os.path.join(workdir, "wiener_distance.csv"), _columns(
            sigmas, wiener_empirical_sq_distance=distance[0], wiener_empirical_sq_distance_se=distance[1])),
        "regimes": io.write_json(os.path.join(workdir, "regimes.json"), regime),
    }
    figure = geometry_plot.geometry_figure(sigmas, conc_curves["max_weight"], cov_mean, regime,
                                           mse_train=mse_train[0], mse_heldout=mse_held[0], mse_wiener=mse_wiener[0],
                                           title=f"{config.data.dataset}, N = {len(train)}, d = {train.shape[1]}")
    paths["figure"] = io.save_figure(os.path.join(workdir, "geometry.png"), figure)
    for name, path in paths.items():
        logging.info("wrote %s: %s", name, path)
    logging.info("regimes: %s (%.1f s)", {k: (v["sigma_min"], v["sigma_max"], v["edm_indices"])
                                          for k, v in regime["regimes"].items()}, regime["elapsed_s"])
    return {"paths": paths, "regimes": regime, "sigmas": sigmas, "max_weight": conc_curves["max_weight"],
            "coverage": cov_mean}

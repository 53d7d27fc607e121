"""The geometry experiment: concentration, coverage, MSE and Wiener curves, and the regime map.

run(config, workdir) writes into workdir:
  fingerprint.json       the config fields the curves depend on (resuming another config fails)
  split_indices.npz      training / held-out indices into the data source(s)
  concentration.csv      sigma, W (max weight), entropy, effective count, source weight (+ standard errors)
  coverage.csv           sigma, C (shell coverage of held-out points) + standard error, exact chi-square shell mass
  mse.csv                sigma, empirical-optimum MSE on training and held-out points, gap, Wiener MSE (held-out)
  wiener_distance.csv    sigma, E|D_wiener - D_empirical|^2 on noisy held-out points
  regimes.json           regime boundaries, sigma intervals, EDM-grid index ranges, per-level labels
  geometry.png           W and C (and MSE) against log sigma with the regimes shaded

Rerunning in the same workdir resumes: each curve file already written by the same config is
loaded, not measured again. The regime map and figure are rebuilt from the curve files on every
run (so regimes.* and compute.* may change between runs); the returned curves are read back from
those files too, so a resumed run returns exactly what a fresh one does.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxmem import footprint, io, noise
from jaxmem.validation import require, require_choice
from jaxmem.data import balanced_subset, check_source, load_images, train_heldout_split
from jaxmem.denoisers import empirical, linear
from jaxmem.geometry import concentration, coverage, mse, queries, regimes

HELDOUT_SPLITS = ("", "test")
TFDS_DATASETS = ("mnist", "cifar10")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, naming the field, on values the experiment cannot run with."""
    data = config.data
    check_source(data.dataset, data.path)
    require_choice("data.heldout_split", data.heldout_split, HELDOUT_SPLITS)
    require(not data.heldout_split or data.dataset in TFDS_DATASETS, "data.heldout_split", data.heldout_split,
            f"'' for dataset {data.dataset!r} (a separate held-out split exists only for {', '.join(TFDS_DATASETS)})")
    require(data.num_train >= 1, "data.num_train", data.num_train, "an integer >= 1")
    require(data.num_heldout >= 1, "data.num_heldout", data.num_heldout, "an integer >= 1")
    grid = config.grid
    require(grid.num_sigmas >= 2, "grid.num_sigmas", grid.num_sigmas, "an integer >= 2")
    require(0 < grid.sigma_min < grid.sigma_max, "grid.sigma_min, grid.sigma_max",
            (grid.sigma_min, grid.sigma_max), "0 < sigma_min < sigma_max")
    for group, limit, limit_name in (("concentration", data.num_train, "data.num_train"),
                                     ("coverage", data.num_heldout, "data.num_heldout"),
                                     ("mse", min(data.num_train, data.num_heldout),
                                      "min(data.num_train, data.num_heldout)")):
        points, draws = config[group].num_points, config[group].draws
        require(1 <= points <= limit, f"{group}.num_points", points, f"1 <= num_points <= {limit_name} = {limit}")
        require(draws >= 1, f"{group}.draws", draws, "an integer >= 1")
    require(config.coverage.c > 0, "coverage.c", config.coverage.c, "c > 0")
    for field in ("w_threshold", "c_threshold"):
        value = config.regimes[field]
        require(0.0 < value < 1.0, f"regimes.{field}", value, "a probability in (0, 1)")
    require(config.regimes.edm_steps >= 2, "regimes.edm_steps", config.regimes.edm_steps, "an integer >= 2")
    for field in ("block_size", "chunk_size", "mse_chunk_size"):
        require(config.compute[field] >= 1, f"compute.{field}", config.compute[field], "an integer >= 1")
    footprint.require_fits(footprint.geometry(config))


def load_split(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray, dict]:
    """(train [num_train, d], heldout [num_heldout, d], indices) as flat float32 in [-1, 1]."""
    data = config.data
    source = load_images(data.dataset, "train", data.data_dir or None, data.path or None)
    if data.heldout_split:
        heldout_source = load_images(data.dataset, data.heldout_split, data.data_dir or None, data.path or None)
        train_idx = balanced_subset(source.labels, data.num_train, config.seed)
        heldout_idx = balanced_subset(heldout_source.labels, data.num_heldout, config.seed + 1)
    else:
        heldout_source = source
        train_idx, heldout_idx = train_heldout_split(source.labels, data.num_train, data.num_heldout, config.seed)
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


def _as_written(rows: list[dict]) -> dict[str, np.ndarray]:
    """{column: values [L]} of curve rows as their file holds them (io.format_cell's rounding),
    without the sigma column: a fresh run derives the regimes from what a resumed one reads."""
    return {name: np.array([float(io.format_cell(row[name])) for row in rows]) for name in rows[0] if name != "sigma"}


def _read_curves(path: str) -> dict[str, np.ndarray]:
    """{column: values [L]} of a curve file written by run, without the sigma column."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {name: np.array([float(row[name]) for row in rows]) for name in rows[0] if name != "sigma"}


def fingerprint(config: ml_collections.ConfigDict) -> str:
    """JSON of the config fields the curves depend on. Left out: compute.* (memory and speed,
    not the numbers beyond float rounding) and regimes.* (re-derived from the curves every run)."""
    groups = {group: config[group].to_dict() for group in ("data", "grid", "concentration", "coverage", "mse")}
    return json.dumps({"seed": config.seed, **groups}, sort_keys=True)


def _with_standard_errors(per_query: dict, draws: int) -> dict:
    """{name: [Q, L]} -> {name: mean [L], name_se: standard error [L]}."""
    curves = {}
    for name, values in per_query.items():
        curves[name], curves[name + "_se"] = queries.mean_and_standard_error(values, draws)
    return curves


def measure_concentration(config, params, train, sigmas, key) -> dict:
    """W, entropy, effective count, source weight (+ _se) per level, over noisy training points."""
    group = config.concentration
    source, clean, z = noisy_queries(train, group.num_points, group.draws, config.seed, key)
    stats = concentration.posterior_concentration(params, clean, z, sigmas, source, config.compute.chunk_size)
    return _with_standard_errors(stats, group.draws)


def measure_coverage(config, params, heldout, sigmas, key) -> dict:
    """Shell coverage C (+ _se) per level over noisy held-out points, and the exact chi-square mass."""
    group = config.coverage
    _, clean, z = noisy_queries(heldout, group.num_points, group.draws, config.seed + 1, key)
    covered = coverage.shell_coverage(params, clean, z, sigmas, group.c, config.compute.chunk_size)
    curves = _with_standard_errors({"coverage": covered}, group.draws)
    curves["chi2_shell_mass"] = np.full(len(sigmas), coverage.chi2_shell_mass(heldout.shape[1], group.c))
    return curves


def _mse_queries(config, points, heldout: bool, key) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noise) [Q, d] of the MSE group on training or held-out points; the same for every
    curve that uses them, so the MSE and the Wiener distance see the same noisy inputs."""
    group, which = config.mse, int(heldout)
    _, clean, z = noisy_queries(points, group.num_points, group.draws, config.seed + 2 + which,
                                jax.random.fold_in(key, which))
    return clean, z


def measure_mse(config, params, wiener_params, train, heldout, sigmas, key) -> dict:
    """MSE curves (+ _se): empirical optimum on training / held-out points, their gap, Wiener on held-out."""
    chunk = config.compute.mse_chunk_size
    train_clean, train_z = _mse_queries(config, train, False, key)
    held_clean, held_z = _mse_queries(config, heldout, True, key)
    errors = {
        "train_mse": mse.mse_curve(empirical.apply, params, train_clean, train_z, sigmas, chunk),
        "heldout_mse": mse.mse_curve(empirical.apply, params, held_clean, held_z, sigmas, chunk),
        "wiener_heldout_mse": mse.mse_curve(linear.apply, wiener_params, held_clean, held_z, sigmas,
                                            chunk),
    }
    curves = _with_standard_errors(errors, config.mse.draws)
    curves["generalization_gap"] = curves["heldout_mse"] - curves["train_mse"]
    return curves


def measure_wiener_distance(config, params, wiener_params, heldout, sigmas, key) -> dict:
    """E|D_wiener - D_empirical|^2 (+ _se) per level on the MSE group's noisy held-out points."""
    held_clean, held_z = _mse_queries(config, heldout, True, key)
    distance = mse.denoiser_distance_curve(linear.apply, wiener_params, empirical.apply, params,
                                           held_clean, held_z, sigmas, config.compute.mse_chunk_size)
    return _with_standard_errors({"wiener_empirical_sq_distance": distance}, config.mse.draws)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Measures every curve of the geometry study not yet in workdir and writes them (see module
    docstring). `config` is checked by validate_config (the launcher's door) beforehand."""
    from jaxmem.plots import geometry as geometry_plot  # imported here: pyplot costs every launcher start ~0.5 s
    started = time.perf_counter()

    def path(name):
        return os.path.join(workdir, name)

    os.makedirs(workdir, exist_ok=True)
    primary = jax.process_index() == 0  # every process measures; process 0 writes the results
    train, heldout, indices = load_split(config)  # bad data fails before the workdir is tied to the config
    resuming = io.check_fingerprint(path("fingerprint.json"), fingerprint(config), "curves of another config")
    if primary:
        io.save_npz(path("split_indices.npz"), **indices)
    sigmas = noise.log_sigmas(config.grid.num_sigmas, config.grid.sigma_min, config.grid.sigma_max)
    params = empirical.make_params(train, config.compute.block_size)
    wiener_params = functools.cache(lambda: linear.make_params(train))  # SVD once, only if needed
    key = jax.random.PRNGKey(config.seed)
    logging.info("geometry: %s, N = %d training, %d held-out, d = %d, %d levels in [%g, %g]",
                 config.data.dataset, len(train), len(heldout), train.shape[1], len(sigmas), sigmas[0], sigmas[-1])

    measures = {
        "concentration": lambda: measure_concentration(config, params, train, sigmas, jax.random.fold_in(key, 0)),
        "coverage": lambda: measure_coverage(config, params, heldout, sigmas, jax.random.fold_in(key, 1)),
        "mse": lambda: measure_mse(config, params, wiener_params(), train, heldout, sigmas,
                                   jax.random.fold_in(key, 2)),
        "wiener_distance": lambda: measure_wiener_distance(config, params, wiener_params(), heldout, sigmas,
                                                           jax.random.fold_in(key, 2)),
    }
    paths, curves = {}, {}
    for name, measure in measures.items():
        paths[name] = path(name + ".csv")
        if resuming and os.path.exists(paths[name]):  # no fingerprint yet: curves of unknown config
            logging.info("%s: loading %s, written by an earlier run of this config", name, paths[name])
            curves[name] = _read_curves(paths[name])
        else:
            rows = _columns(sigmas, **measure())
            if primary:
                logging.info("wrote %s: %s", name, io.write_csv(paths[name], rows))
            curves[name] = _as_written(rows)
    conc, cover, mse_curves = curves["concentration"], curves["coverage"], curves["mse"]

    thresholds = (config.regimes.w_threshold, config.regimes.c_threshold)
    regime = regimes.regime_map(sigmas, conc["max_weight"], cover["coverage"], *thresholds, config.regimes.edm_steps)
    labels = regimes.label_levels(conc["max_weight"], cover["coverage"], *thresholds)
    regime["levels"] = [{"sigma": float(s), "regime": str(r)} for s, r in zip(sigmas, labels)]
    regime["elapsed_s"] = time.perf_counter() - started
    paths["regimes"], paths["figure"] = path("regimes.json"), path("geometry.png")
    if primary:
        io.write_json(paths["regimes"], regime)
        figure = geometry_plot.geometry_figure(
            sigmas, conc["max_weight"], cover["coverage"], regime, mse_train=mse_curves["train_mse"],
            mse_heldout=mse_curves["heldout_mse"], mse_wiener=mse_curves["wiener_heldout_mse"],
            title=f"{config.data.dataset}, N = {len(train)}, d = {train.shape[1]}")
        io.save_figure(paths["figure"], figure)
        for name in ("regimes", "figure"):
            logging.info("wrote %s: %s", name, paths[name])
    logging.info("regimes (sigma_min, sigma_max, EDM indices): %s; %.1f s",
                 {k: (v["sigma_min"], v["sigma_max"], v["edm_indices"]) for k, v in regime["regimes"].items()},
                 regime["elapsed_s"])
    logging.info("results: %s and %s", paths["regimes"], paths["figure"])
    return {"paths": paths, "regimes": regime, "sigmas": sigmas, "max_weight": conc["max_weight"],
            "coverage": cover["coverage"]}

"""Real data (digits) behaviour, the smoke preset end to end, and config validation."""

import csv
import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxmem import footprint
from jaxmem.config import load_config
from jaxmem.data import load_images, train_heldout_split
from jaxmem.denoisers import empirical
from jaxmem.experiments import noise_regimes as experiment
from jaxmem.geometry import concentration, coverage, queries

from conftest import REPO

CONFIG = os.path.join(REPO, "configs", "noise_regimes.py")


def test_digits_concentration_falls_and_coverage_rises_with_sigma():
    digits = load_images("digits")
    train_idx, held_idx = train_heldout_split(digits.labels, 600, 150, seed=0)
    train, held = digits.flat[train_idx], digits.flat[held_idx]
    params = empirical.make_params(train, block_size=256)
    sigmas = np.geomspace(0.02, 30, 24)
    key = jax.random.PRNGKey(0)
    source = np.repeat(np.arange(0, 600, 4), 2)  # 150 training points x 2 draws
    z = np.asarray(jax.random.normal(key, (source.size, train.shape[1])))
    stats = concentration.posterior_concentration(params, train[source], z, sigmas, source)
    max_weight, _ = queries.mean_and_standard_error(stats["max_weight"], draws=2)
    clean = np.repeat(held, 2, axis=0)
    held_noise = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), clean.shape))
    covered = coverage.shell_coverage(params, clean, held_noise, sigmas)
    cover, _ = queries.mean_and_standard_error(covered, draws=2)
    assert np.all(np.diff(max_weight) <= 0) and max_weight[0] > 0.999 and max_weight[-1] < 0.01
    assert np.all(np.diff(cover) >= 0) and cover[0] == 0.0 and cover[-1] == 1.0
    assert np.all(np.diff(queries.mean_and_standard_error(stats["entropy"], 2)[0]) >= 0)


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


CURVES = ("concentration", "coverage", "mse", "wiener_distance")
MEASURES = ("measure_concentration", "measure_coverage", "measure_mse", "measure_wiener_distance")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke-preset run shared by the tests below: (config, workdir, result)."""
    config = load_config(CONFIG + ":smoke")
    workdir = tmp_path_factory.mktemp("smoke")
    return config, workdir, experiment.run(config, str(workdir))


@pytest.mark.slow
def test_smoke_preset_end_to_end(smoke_run):
    config, tmp_path, result = smoke_run
    for name in ("concentration.csv", "coverage.csv", "mse.csv", "wiener_distance.csv", "regimes.json",
                 "geometry.png", "split_indices.npz"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = _read_csv(tmp_path / "concentration.csv")
    assert len(rows) == config.grid.num_sigmas
    assert {"sigma", "max_weight", "max_weight_se", "entropy", "effective_count", "source_weight"} <= set(rows[0])
    mse_rows = _read_csv(tmp_path / "mse.csv")
    assert float(mse_rows[0]["train_mse"]) < 1e-6 < float(mse_rows[0]["heldout_mse"])  # memorized at small sigma
    regime = json.loads((tmp_path / "regimes.json").read_text())
    assert set(regime["regimes"]) <= {"small", "medium", "large", "neither"} and "small" in regime["regimes"]
    assert len(regime["levels"]) == config.grid.num_sigmas
    assert result["paths"]["figure"].endswith("geometry.png")
    with np.load(tmp_path / "split_indices.npz") as split:
        assert len(split["train"]) == config.data.num_train and len(np.intersect1d(split["train"], split["heldout"])) == 0


def _measuring_fails(monkeypatch):
    def fail(*args):
        raise AssertionError("a curve was measured again")

    for name in MEASURES:
        monkeypatch.setattr(experiment, name, fail)


@pytest.mark.slow
def test_rerun_loads_every_curve_and_rebuilds_the_regime_map(smoke_run, tmp_path, monkeypatch):
    config, first_dir, first = smoke_run
    workdir = tmp_path / "run"
    shutil.copytree(first_dir, workdir)
    stamps = {name: os.path.getmtime(workdir / f"{name}.csv") for name in CURVES}
    _measuring_fails(monkeypatch)
    again = experiment.run(config, str(workdir))
    assert {name: os.path.getmtime(workdir / f"{name}.csv") for name in CURVES} == stamps
    for name in ("sigmas", "max_weight", "coverage"):
        np.testing.assert_array_equal(again[name], first[name])
    assert {**again["regimes"], "elapsed_s": 0} == {**first["regimes"], "elapsed_s": 0}
    config = load_config(CONFIG + ":smoke")  # regimes.* and compute.* do not change the curves: still resumes
    config.regimes.w_threshold, config.compute.chunk_size = 0.3, 8
    rethresholded = experiment.run(config, str(workdir))
    np.testing.assert_array_equal(rethresholded["max_weight"], first["max_weight"])
    assert rethresholded["regimes"]["thresholds"]["w_threshold"] == 0.3
    assert json.loads((workdir / "regimes.json").read_text())["thresholds"]["w_threshold"] == 0.3


@pytest.mark.slow
def test_rerun_with_another_config_fails_naming_workdir_and_field(smoke_run, monkeypatch):
    _, workdir, _ = smoke_run
    stamp = os.path.getmtime(workdir / "fingerprint.json")
    _measuring_fails(monkeypatch)
    config = load_config(CONFIG + ":smoke")
    config.mse.draws = 3
    with pytest.raises(ValueError, match=rf"{workdir}.*curves of another config.*mse\.draws.*new --workdir"):
        experiment.run(config, str(workdir))
    assert os.path.getmtime(workdir / "fingerprint.json") == stamp


@pytest.mark.slow
def test_curves_without_fingerprint_are_measured_again(smoke_run, tmp_path, monkeypatch):
    """A workdir of a run before fingerprints: its curves are of unknown config, so not trusted."""
    config, first_dir, _ = smoke_run
    workdir = tmp_path / "run"
    shutil.copytree(first_dir, workdir)
    os.remove(workdir / "fingerprint.json")
    stored = {name: experiment._read_curves(workdir / f"{name}.csv") for name in CURVES}
    measured = []
    for name, measure in zip(CURVES, MEASURES):
        monkeypatch.setattr(experiment, measure, lambda *args, _name=name: measured.append(_name) or stored[_name])
    experiment.run(config, str(workdir))
    assert tuple(measured) == CURVES and (workdir / "fingerprint.json").exists()


@pytest.mark.parametrize("field, value, message", [
    ("data.dataset", "imagenet", "data.dataset"),
    ("data.heldout_split", "validation", "data.heldout_split"),
    ("concentration.num_points", 10_000, "concentration.num_points"),
    ("coverage.draws", 0, "coverage.draws"),
    ("grid.sigma_min", 0.0, "grid.sigma_min"),
    ("coverage.c", -1.0, "coverage.c"),
    ("data.heldout_split", "test", "data.heldout_split"),  # digits has no separate test split
    ("regimes.w_threshold", 1.0, "regimes.w_threshold"),
])
def test_bad_config_fields_are_named(field, value, message):
    config = load_config(CONFIG + ":smoke")
    group, name = field.split(".")
    config[group][name] = value
    with pytest.raises(ValueError, match=message):
        experiment.validate_config(config)


def test_presets_exist_and_validate():
    for preset in ("smoke", "digits", "mnist", "cifar10_1k", "cifar10_50k"):
        with footprint.checking(not preset.startswith("cifar10")):  # CIFAR-10: sized for a device, not this host
            experiment.validate_config(load_config(f"{CONFIG}:{preset}"))
    assert load_config(CONFIG + ":cifar10_1k").grid.num_sigmas == 40
    with pytest.raises(ValueError, match="valid presets"):
        load_config(CONFIG + ":nope")


def test_cifar10_preset_path_with_mock_tfds(tmp_path):
    """cifar10_1k's data path (tfds train split for training, test split held out), tiny sizes."""
    import tensorflow_datasets as tfds

    config = load_config(CONFIG + ":cifar10_1k")
    config.data.update(num_train=24, num_heldout=12)
    config.grid.num_sigmas = 6
    config.concentration.update(num_points=6, draws=1)
    config.coverage.update(num_points=6, draws=1)
    config.mse.update(num_points=4, draws=1)
    with tfds.testing.mock_data(num_examples=40):
        result = experiment.run(config, str(tmp_path))
    rows = _read_csv(tmp_path / "coverage.csv")
    assert len(rows) == 6 and float(rows[0]["chi2_shell_mass"]) == pytest.approx(0.99875, abs=1e-5)  # d = 3072
    assert result["max_weight"][0] == pytest.approx(1.0)

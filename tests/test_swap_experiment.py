"""The swap experiment on trained networks (launch/denoiser_swaps.py): end to end on the smoke preset,
the traced-window sampler, correlations, and bad configs."""

import csv
import os
import re
import types

import numpy as np
import pytest

from jaxmem import footprint, noise, sampling
from jaxmem.experiments.denoiser_swaps import swapping
from jaxmem.experiments import denoiser_swaps as swap_experiment
from jaxmem.experiments.denoiser_swaps import models, tables, trajectories
from jaxmem.config import load_config
from jaxmem.denoisers import empirical, linear

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "denoiser_swaps.py")


def smoke_config():
    return load_config(f"{CONFIG}:smoke")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("swap"))
    summary = swap_experiment.run(smoke_config(), workdir)
    return workdir, summary


@pytest.mark.slow
def test_smoke_writes_the_table_and_every_figure(smoke_run):
    workdir, summary = smoke_run
    table = read_csv(os.path.join(workdir, "swap_table.csv"))
    assert [r["row"] for r in table] == ["A alone", "B alone"] + [f"{who} in {base}: {region}" for who, base in
                                                                 (("B", "A"), ("A", "B"))
                                                                 for region in ("small", "medium", "large")] + ["C alone"]
    for row in table:
        low, rate, high = float(row["ci_low"]), float(row["rate"]), float(row["ci_high"])
        assert 0.0 <= low <= rate <= high <= 1.0 and int(row["samples"]) == 20
        assert summary["rates"][row["row"]] == pytest.approx(rate)
    assert {r["row"]: r["steps"] for r in table}["B in A: medium"] == "2-3"
    nearest = read_csv(os.path.join(workdir, "nearest.csv"))
    assert len(nearest) == 9 * 20
    for row in table:  # the per-sample flags add up to each row's rate
        flags = [r["memorized"] == "True" for r in nearest if r["row"] == row["row"]]
        assert np.mean(flags) == pytest.approx(float(row["rate"]))
    assert all(0 <= int(r["nearest"]) < 32 and float(r["distance_ratio"]) <= 1.0 for r in nearest)
    # 3 models x (train, held-out) x 6 levels; every model has held-out images on digits
    levels = read_csv(os.path.join(workdir, "per_level.csv"))
    assert len(levels) == 36 and {(r["model"], r["split"]) for r in levels} == {
        (m, s) for m in ("memorizing", "generalizing", "mitigated") for s in ("train", "held-out")}
    assert all(float(r["mse"]) > 0 for r in levels)
    assert len(read_csv(os.path.join(workdir, "trajectory.csv"))) == 10 * 2  # two guidance scales
    assert len(read_csv(os.path.join(workdir, "swap_profile.csv"))) == 6
    assert [r["model"] for r in read_csv(os.path.join(workdir, "mitigation.csv"))] == [
        "memorizing", "mitigated", "generalizing"]
    with open(os.path.join(workdir, "results.md")) as f:
        report = f.read()
    linked = re.findall(r"\]\(([^)]+\.png)\)", report)
    assert {"swap_profile.png", "per_level.png", "trajectory.png"} <= set(linked)
    assert all(os.path.isfile(os.path.join(workdir, name)) for name in linked)


@pytest.mark.slow
def test_rerun_reuses_the_trained_models_and_reproduces_the_table(smoke_run, tmp_path):
    workdir, summary = smoke_run
    with open(os.path.join(workdir, "memorizing", "metrics.jsonl")) as f:
        logged = f.read()
    config = smoke_config()
    with config.unlocked():  # a new workdir reusing the models trained in the first one
        for name in ("memorizing", "generalizing", "mitigated"):
            config.workdirs[name] = os.path.join(workdir, name)
    again = swap_experiment.run(config, str(tmp_path))
    with open(os.path.join(workdir, "memorizing", "metrics.jsonl")) as f:
        assert f.read() == logged  # restored, not retrained
    assert not os.path.exists(tmp_path / "memorizing")
    assert again["rates"] == summary["rates"]


@pytest.mark.slow
def test_changed_model_recipe_is_refused_on_an_existing_workdir(smoke_run, tmp_path):
    workdir, _ = smoke_run
    config = smoke_config()
    with config.unlocked():
        config.memorizing.model.channels = 8
    with pytest.raises(ValueError, match="memorizing"):
        models.train_or_restore("memorizing", config.memorizing, os.path.join(workdir, "memorizing"))


def test_mitigated_model_undertrains_the_chosen_region():
    config = smoke_config()
    grid = models.swap_grid(config)
    mitigated = models.model_configs(config, grid, models.regions(config, grid))["mitigated"]
    first, last = config.swap.windows.medium
    assert tuple(mitigated.training.loss_window) == (grid[last], grid[first])
    assert mitigated.training.loss_window_weight == pytest.approx(0.1)
    assert mitigated.training.total_images == config.memorizing.training.total_images  # equal compute
    assert mitigated.data.num_train == config.memorizing.data.num_train


def test_traced_windows_sample_like_the_base_and_the_donor_alone():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20, 16)).astype(np.float32)
    memorizer = types.SimpleNamespace(denoise=empirical.apply)
    wiener = types.SimpleNamespace(denoise=linear.apply)
    params = {"base": linear.make_params(train), "donor": empirical.make_params(train)}
    grid = noise.edm_sigmas(8)
    step = tables.pair_step(wiener, memorizer)

    def generate(windows):
        return sampling.edm_generate(step, dict(params, windows=swapping.window_array(windows, 8)), 12, (16,), 3, grid,
                                     "euler", batch_size=12)

    def alone(denoise, p):
        return sampling.edm_generate(lambda q, x, s, i: denoise(q, x, s), p, 12, (16,), 3, grid, "euler", 12)

    before = sampling._generate_programs.cache_info().misses
    np.testing.assert_allclose(generate([]), alone(linear.apply, params["base"]), atol=1e-5)
    np.testing.assert_allclose(generate([(0, 7)]), alone(empirical.apply, params["donor"]), atol=1e-5)
    mixed = generate([(3, 5)])
    assert not np.allclose(mixed, generate([]), atol=1e-3)
    # three window tables, one compiled sampler (plus one per lone denoiser)
    assert sampling._generate_programs.cache_info().misses - before == 3


def test_window_array_and_membership():
    table = swapping.window_array([(6, 13), (0, 2)], 18, size=3)
    assert table.tolist() == [[0, 2], [6, 13], [-1, -1]]
    inside = [bool(swapping.in_windows(i, table)) for i in range(18)]
    assert inside == [i <= 2 or 6 <= i <= 13 for i in range(18)]
    assert not any(bool(swapping.in_windows(i, swapping.window_array([], 18))) for i in range(18))


def test_correlations_of_scores_with_the_distance_ratio():
    ratio = np.linspace(0.05, 0.9, 12)
    result = {"distance_ratio": ratio, "memorized": ratio < 1 / 3,
              "scores": {"target_excess": -ratio, "noise_deficit": np.exp(-ratio), "overestimation": np.ones(12)}}
    rows = {r["score"]: r for r in trajectories.correlations(result)}
    assert rows["target_excess"]["spearman_vs_distance_ratio"] == pytest.approx(-1.0)
    assert rows["noise_deficit"]["spearman_vs_distance_ratio"] == pytest.approx(-1.0)
    assert rows["target_excess"]["pearson_vs_memorized"] > 0.5
    assert np.isnan(rows["overestimation"]["spearman_vs_distance_ratio"])  # constant score
    assert rows["target_excess"]["mean_memorized"] == pytest.approx(-ratio[ratio < 1 / 3].mean())


def _override(config, **fields):
    with config.unlocked():
        for path, value in fields.items():
            node = config
            *parents, leaf = path.split("__")
            for key in parents:
                node = node[key]
            node[leaf] = value
    return config


@pytest.mark.parametrize("fields, message", [
    (dict(swap__windows__medium=(1, 2)), "overlap"),
    (dict(swap__windows_in="sigma", swap__windows__small=(100.0, 200.0)), "outside"),
    (dict(swap__windows__small=(4, 6)), "first <= last"),
    (dict(generalizing__model__image_size=16), r"the data's image shape \(H, W, C\) = \(8, 8, 1\)"),
    (dict(memorizing__model__label_dim=0), "unconditional branch"),
    (dict(memorizing__model__label_dropout=0.0), "unconditional branch"),
    (dict(swap__regions="paper"), "18"),
    (dict(swap__regions="geometry"), "regimes_path"),
    (dict(swap__regions="somewhere"), "swap.regions"),
    (dict(mitigation__weight=1.5), "mitigation.weight"),
    (dict(trajectory__guidance_scales=(2.0,)), "includes 1.0"),
    (dict(swap__batch_size=16), "multiple of model.label_dim"),
])
def test_bad_configs_fail_before_training(fields, message):
    with pytest.raises(ValueError, match=message):
        swap_experiment.validate_config(_override(smoke_config(), **fields))


def test_geometry_regions_must_cover_all_three(tmp_path):
    path = tmp_path / "regimes.json"
    path.write_text('{"edm_grid": {"steps": 6}, "regimes": {"medium": {"edm_indices": [2, 3]}}}')
    config = _override(smoke_config(), swap__regions="geometry", swap__regimes_path=str(path))
    with pytest.raises(ValueError, match="missing: small, large"):
        models.regions(config, models.swap_grid(config))


def test_every_preset_builds_and_validates():
    for preset in ("smoke", "digits", "mnist", "cifar10"):
        config = load_config(f"{CONFIG}:{preset}")
        with footprint.checking(preset != "cifar10"):  # CIFAR-10: sized for a device, not this host
            swap_experiment.validate_config(config)
        found = models.regions(config, models.swap_grid(config))
        assert set(found) == {"small", "medium", "large"}
    cifar = load_config(f"{CONFIG}:cifar10")
    assert models.regions(cifar, models.swap_grid(cifar)) == swapping.PAPER_REGIONS


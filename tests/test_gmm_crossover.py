"""The crossover experiment: config validation, theory, and the smoke preset end to end."""

import csv
import json
import os

import numpy as np
import pytest

from jaxmem import footprint, noise, theory
from jaxmem.experiments import gmm_crossover as crossover
from jaxmem.experiments.gmm_crossover import analysis
from jaxmem.config import load_config

CONFIG = "configs/gmm_crossover.py"


@pytest.fixture
def config(request):
    from tests.conftest import REPO

    return load_config(os.path.join(REPO, CONFIG) + ":smoke")


@pytest.mark.parametrize("field, value, message", [
    ("model.capacity_fractions", (0.5, 1.2), r"model.capacity_fractions \(M/N\).*M <= N"),
    ("data.num_components", (2, 9), r"data.num_components \(K\).*K <= N"),
    ("data.dims", (0,), r"data.dims \(d\).*>= 1"),
    ("training.steps", 0, r"training.steps = 0 is invalid"),
    ("training.weighting", "l2", r"training.weighting = 'l2'.*'eps', 'x0', 'custom'"),
    ("eval.weightings", ("x0", "snr"), r"eval.weightings = 'snr'"),
    ("data.model", "mnist", r"data.model = 'mnist'.*'isotropic', 'subspace', 'lowrank'"),
    ("training.weighting", "custom", r"custom_weights"),
    ("model.refine_points", -1, r"model.refine_points = -1 is invalid.*>= 0"),
    ("model.search", "bisect", r"model.search = 'bisect'.*'grid', 'adaptive'"),
    ("training.batch_size", 9, r"training.batch_size = 9 is invalid.*at most the smallest N"),
    ("training.estimator", "qmc", r"training.estimator = 'qmc'"),
    ("training.noise_draws", 0, r"training.noise_draws = 0 is invalid"),
    ("training.adam_b2", 1.0, r"training.adam_b2 = 1.0 is invalid.*\(0, 1\)"),
])
def test_bad_config_names_the_field(config, field, value, message):
    group, name = field.split(".")
    with config.unlocked():
        config[group][name] = value
    with pytest.raises(ValueError, match=message):
        crossover.validate_config(config)


def test_presets_are_valid_and_paper_matches_the_reference():
    from tests.conftest import REPO

    for preset in ("smoke", "demo"):
        crossover.validate_config(load_config(os.path.join(REPO, CONFIG) + f":{preset}"))
    with footprint.checking(False):  # accelerator presets: sized for a device's memory, not this host's
        for preset in ("paper", "scale"):
            crossover.validate_config(load_config(os.path.join(REPO, CONFIG) + f":{preset}"))
    paper = load_config(os.path.join(REPO, CONFIG) + ":paper")
    assert tuple(paper.data.dims) == (30, 40, 50, 60) and tuple(paper.data.num_components) == (3, 6, 9, 12)
    assert tuple(paper.data.train_sizes) == (50, 100, 150, 200)
    assert paper.training.steps == 50_000 and paper.training.noise_draws == 100
    assert paper.sampling.num_samples == 50 and paper.sampling.num_steps == 25
    demo = load_config(os.path.join(REPO, CONFIG) + ":demo")
    assert len(demo.data.train_sizes) >= 3


def test_theory_weightings_and_crossings():
    t = noise.vp_times()
    # x0 units with s0 = 1: 1/(1 + psi) = t^2, so M*/N = 1 - mean(t^2) over the grid.
    assert theory.formula_crossover_fraction(t, "x0") == pytest.approx(1 - np.mean(t**2))
    assert theory.formula_crossover_fraction(t, "eps") > 0.999  # psi_t ~ 1e6 at t = 0.001 dominates
    flat = theory.eps_loss_weights(t, "custom", 1 / noise.vp_snr(t))
    assert theory.formula_crossover_fraction(t, "custom", custom=flat) == pytest.approx(
        theory.formula_crossover_fraction(t, "x0"))
    np.testing.assert_allclose(theory.x0_loss_weights(t, "x0"), 1.0)
    assert theory.measured_crossover([10, 20, 30], [5.0, 3.0, 1.0], 2.0) == pytest.approx(25.0)
    assert np.isnan(theory.measured_crossover([10, 20], [5.0, 3.0], 1.0))
    assert theory.first_crossing([1, 2, 3, 4], [0.0, 0.2, 0.6, 1.0], 0.5) == pytest.approx(2.75)
    fit = theory.linear_fits([50, 100, 150, 200], [40, 80, 120, 160])
    assert fit["slope"] == pytest.approx(0.8) and fit["r2"] == pytest.approx(1.0)


@pytest.mark.slow
def test_smoke_preset_end_to_end_and_rerun_skips(config, tmp_path):
    workdir = str(tmp_path)
    summary = crossover.run(config, workdir)
    for name in ("crossover.csv", "crossover.md", "models.csv", "crossover.png", "memorization_ratio.png",
                 "summary.json", "per_t_losses.csv", "per_t_losses.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    rows = summary["rows"]
    assert [(r["N"], r["K"]) for r in rows] == [(8, 2), (12, 2)]
    header = open(os.path.join(workdir, "crossover.csv")).readline().strip().split(",")
    assert {"N", "M_pt", "window_start", "window_end", "Mstar_formula_x0", "Mstar_measured_x0"} <= set(header)
    with np.load(os.path.join(workdir, "d6", "result.npz")) as f:
        assert f["ratio"].shape == (6,) and np.all((f["ratio"] >= 0) & (f["ratio"] <= 1))
        assert np.all(f["skipped"] == 0) and f["pmem_loss"].shape[-1] == 26
        first_gen, trained_loss, trained_m = f["gen_loss"][0], f["train_loss"], f["M"]
    per_t = list(csv.DictReader(open(os.path.join(workdir, "per_t_losses.csv"))))
    of_set = [r for r in per_t if (r["N"], r["seed"]) == ("8", "0")]
    gen = [float(r["train_loss"]) for r in of_set if r["model"] == "generalizing"]
    np.testing.assert_allclose(gen, first_gen, rtol=1e-5)  # the result's arrays per t (CSV: 6 digits)
    assert len(gen) == 26 and {r["model"] for r in of_set} == {"generalizing", "memorizing", "partial", "trained"}
    trained = [r for r in of_set if r["model"] == "trained"]
    assert len(trained) == 26 * 3 and all(np.isfinite(float(r["val_loss"])) for r in trained)
    g = int(np.nonzero(trained_m == int(trained[0]["M"]))[0][0])  # set 0's smallest M
    np.testing.assert_allclose([float(r["train_loss"]) for r in trained[:26]], trained_loss[g], rtol=1e-5)
    stamp = os.path.getmtime(os.path.join(workdir, "d6", "result.npz"))
    again = crossover.run(config, workdir)  # finished grids are reused, not retrained
    assert os.path.getmtime(os.path.join(workdir, "d6", "result.npz")) == stamp
    assert json.loads(json.dumps(again["fit"])) == json.loads(json.dumps(summary["fit"]))
    with config.unlocked():
        config.training.steps = 21
    with pytest.raises(ValueError, match="another config"):
        crossover.run(config, workdir)
    os.remove(os.path.join(workdir, "d6", "result.npz"))  # unfinished: checkpoints of the old config remain
    with pytest.raises(ValueError, match="checkpoints of another config"):
        crossover.run(config, workdir)


@pytest.mark.slow
def test_lowrank_data_per_size_grids_and_memory_bounds_run(config, tmp_path):
    with config.unlocked():
        config.data.update(model="lowrank", dims=(64,), train_sizes=(8, 12))
        config.training.update(grid_per_train_size=True, point_block=16, steps=4, chunk_steps=4)
        config.eval.model_batch = 2
    summary = crossover.run(config, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "d64_n8")) == ["checkpoints", "fingerprint.json", "result.npz"]
    assert [r["N"] for r in summary["rows"]] == [8, 12]
    assert np.isnan(summary["rows"][0]["Mstar_formula_x0"])  # no isotropic ground truth for templates
    with config.unlocked():
        config.data.dims = (50,)
    with pytest.raises(ValueError, match="multiples of 64"):
        crossover.validate_config(config)


@pytest.mark.slow
def test_smoke_with_refinement_trains_inside_the_window_and_rerun_skips(config, tmp_path):
    # A larger lr and 16 samples give the smoke grid a memorisation transition with a window
    # wide enough to hold untrained integer M values (the plain smoke models all memorise).
    with config.unlocked():
        config.model.refine_points = 2
        config.training.update(steps=40, chunk_steps=20, peak_lr=0.1)
        config.sampling.num_samples = 16
    workdir = str(tmp_path)
    summary = crossover.run(config, workdir)
    with np.load(os.path.join(workdir, "d6", "result.npz")) as f:
        first = {k: f[k] for k in f.files}
    models = list(csv.DictReader(open(os.path.join(workdir, "models.csv"))))
    refined = [m for m in models if m["refinement"] == "True"]
    assert len(models) == len(first["M"]) + len(refined) and len(refined) >= 2
    for before, after in zip(analysis.summarize(analysis.AnalysisSettings.of(config), 6, first), summary["rows"]):
        new = sorted(int(m["M"]) for m in refined if int(m["N"]) == before["N"])
        assert len(new) <= 2 and not set(new) & set(first["M"][first["N"] == before["N"]].tolist())
        assert all(before["window_start"] < m < before["window_end"] for m in new)
        union = sorted((int(m["M"]), float(m["ratio"])) for m in models if int(m["N"]) == before["N"])
        assert after["M_pt"] == pytest.approx(theory.first_crossing(*zip(*union), 0.5))

    refine_result = os.path.join(workdir, "d6", "refine_r2", "result.npz")
    stamps = [os.path.getmtime(p) for p in (os.path.join(workdir, "d6", "result.npz"), refine_result)]
    again = crossover.run(config, workdir)  # both grids finished: nothing is retrained
    assert [os.path.getmtime(p) for p in (os.path.join(workdir, "d6", "result.npz"), refine_result)] == stamps
    same = lambda a, b: json.dumps(a["rows"]) == json.dumps(b["rows"])  # noqa: E731 (NaN-safe)
    assert same(again, summary)
    assert sorted(os.listdir(os.path.dirname(refine_result))) == ["checkpoints", "fingerprint.json", "result.npz"]
    os.remove(refine_result)  # unfinished refinement: resumed from its last checkpoint, same results
    assert same(crossover.run(config, workdir), summary)


def test_the_optimizer_uses_the_configured_adam_b2(config):
    """Two updates of the crossover's optimizer on a changing gradient equal optax.adam's with
    the config's b2 (and differ from the default's: the field is not ignored)."""
    import jax.numpy as jnp
    import optax

    from jaxmem.experiments.gmm_crossover.grids import make_loss_and_optimizer, times_of
    from jaxmem.train import gmm_grid

    config.training.adam_b2 = 0.5
    _, optimizer = make_loss_and_optimizer(config.training, times_of(config))
    training = config.training
    schedule = gmm_grid.adam_schedule(training.steps, training.peak_lr, training.final_lr, training.warmup_fraction)

    def two_updates(opt):
        params = {"log_var": jnp.zeros(3)}
        state = opt.init(params)
        for g in (jnp.array([1.0, -2.0, 0.5]), jnp.array([0.1, 3.0, -0.5])):
            updates, state = opt.update({"log_var": g}, state, params)
        return updates["log_var"]

    ours = two_updates(optimizer)
    np.testing.assert_allclose(ours, two_updates(optax.adam(schedule, b2=0.5)), rtol=1e-6)
    assert not np.allclose(ours, two_updates(optax.adam(schedule)), rtol=1e-3)

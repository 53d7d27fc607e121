"""The laboratory on structured data: replicated training points and low intrinsic
dimension. Float64 brute force for the weighted baselines and the subspace ground truth,
closed forms for the predicted M*, bit-for-bit identity with the plain laboratory at r = 1."""

import csv
import os

import numpy as np
import pytest

from jaxmem import noise, theory
from jaxmem.config import load_config
from jaxmem.data import gmm as gmm_data
from jaxmem.experiments import gmm_crossover as crossover
from jaxmem.experiments.gmm_crossover import evaluation, structure
from jaxmem.experiments.gmm_crossover.grids import DataSet, times_of

CONFIG = os.path.join("configs", "gmm_crossover.py")


@pytest.fixture()
def config():
    from tests.conftest import REPO

    return load_config(os.path.join(REPO, CONFIG) + ":smoke")


def test_multiplicity_profiles_and_stored_rows():
    counts = gmm_data.multiplicities(50, "fraction", 0.1, 10, seed=(0, 1))
    assert counts.dtype == np.int64 and sorted(np.unique(counts).tolist()) == [1, 10]
    assert np.sum(counts == 10) == 5 and counts.sum() == 50 + 5 * 9
    assert np.array_equal(counts, gmm_data.multiplicities(50, "fraction", 0.1, 10, seed=(0, 1)))  # seeded
    zipf = gmm_data.multiplicities(40, "zipf", copies=8, exponent=1.0, seed=3)
    assert sorted(zipf.tolist(), reverse=True)[:4] == [8, 4, 3, 2] and zipf.min() == 1
    data = gmm_data.replicate(gmm_data.isotropic_gmm(5, 2, 6, 2, seed=0), [1, 3, 1, 1, 2, 1])
    rows = gmm_data.training_rows(data)
    assert rows.shape == (9, 5) and np.array_equal(rows[:6], data.train)  # distinct points first
    np.testing.assert_array_equal(rows[6:], data.train[[1, 1, 4]])
    plain = gmm_data.isotropic_gmm(5, 2, 6, 2, seed=0)
    assert gmm_data.training_rows(plain) is plain.train


def test_closed_form_with_replication_reduces_to_the_formula_and_matches_its_piecewise_form():
    times = noise.vp_times()
    fraction = theory.formula_crossover_fraction(times, "x0")
    assert theory.covered_capacity(np.ones(200), fraction) == pytest.approx(200 * fraction, rel=1e-12)
    assert theory.covered_capacity(np.full(200, 10), fraction) == pytest.approx(200 * fraction, rel=1e-12)
    uncovered = 1.0 - fraction
    for p, r in [(0.1, 10), (0.3, 10), (0.05, 3)]:
        n = 200
        counts = np.ones(n)
        counts[: int(round(p * n))] = r
        rows = n * (1 + p * (r - 1))
        covered = (1 - uncovered) * rows
        expected = covered / r if covered <= p * n * r else p * n + covered - p * n * r
        assert theory.covered_capacity(counts, fraction) == pytest.approx(expected, rel=1e-9)
        assert theory.covered_capacity(counts, fraction) < n * fraction  # replicated points are covered first
    # Per-dimension variances: tau = 0 leaves the isotropic formula whatever C.
    v = np.concatenate([np.full(5, 1.0), np.zeros(45)])
    assert theory.formula_crossover_fraction(times, "x0", v) == pytest.approx(fraction, rel=1e-12)
    assert theory.formula_crossover_fraction(times, "x0", [2.0]) == pytest.approx(
        1 - np.mean(times**2 / (times**2 + 2.0 * (1 - times**2))), rel=1e-12)


def _posterior_mean(x_t, t, means, covariance):
    """Float64 brute force: E[x0 | x_t] of a uniform GMM with components N(mu_k, covariance)."""
    alpha, sigma = noise.vp_alpha(t), noise.vp_sigma(t)
    cov_t = alpha**2 * covariance + sigma**2 * np.eye(len(covariance))
    inv = np.linalg.inv(cov_t)
    diff = x_t[:, None, :] - alpha * means[None]                                     # [P, K, d]
    logits = -0.5 * np.einsum("pkd,de,pke->pk", diff, inv, diff)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    gain = alpha * covariance @ inv                                                  # [d, d]
    per_component = means[None] + np.einsum("de,pke->pkd", gain, diff)
    return np.einsum("pk,pkd->pd", weights, per_component)


def _brute_force_loss(denoise, points, weights, eps, times):
    """Weighted mean over points (and mean over draws) of |x0_hat - x0|^2 per t, float64."""
    out = []
    for t in times:
        x_t = noise.vp_alpha(t) * points[:, None] + noise.vp_sigma(t) * eps            # [N, R, d]
        x0 = denoise(x_t.reshape(-1, points.shape[1]), t).reshape(x_t.shape)
        per_point = np.mean(np.sum((x0 - points[:, None]) ** 2, axis=-1), axis=1)
        out.append(per_point @ weights / weights.sum())
    return np.array(out)


def test_weighted_baselines_equal_brute_force(config):
    config.eval.update(noise_draws=3, crossover_points=6)
    data = gmm_data.replicate(gmm_data.isotropic_gmm(6, 2, 6, 2, seed=4), [1, 1, 4, 1, 2, 1])
    times = times_of(config)[::5]
    eps = np.asarray(evaluation.eval_noise(6, config.eval.noise_draws, 6, evaluation.TRAIN_SPLIT), np.float64)
    gen, mem, pmem_m, pmem = evaluation.baseline_losses([DataSet(2, 6, 0, data)], eps.astype(np.float32), times,
                                                        config.eval.crossover_points, config.eval.model_batch)
    order = np.array([2, 4, 0, 1, 3, 5])  # the most replicated first, point order among equals
    points, weights = data.train[order].astype(np.float64), np.array([4, 2, 1, 1, 1, 1], np.float64)
    truth = lambda x, t: _posterior_mean(x, t, data.means.astype(np.float64), np.eye(6))  # noqa: E731
    np.testing.assert_allclose(gen[0], _brute_force_loss(truth, points, weights, eps, times), rtol=2e-4, atol=1e-5)
    for j, m in enumerate(pmem_m[0].astype(int)):
        memorize = lambda x, t, m=m: _posterior_mean(x, t, points[:m], 1e-30 * np.eye(6))  # noqa: E731
        np.testing.assert_allclose(pmem[0, j], _brute_force_loss(memorize, points, weights, eps, times),
                                   rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(mem[0], pmem[0, -1])


def test_subspace_truth_losses_equal_the_anisotropic_gmm_brute_force(config):
    config.eval.noise_draws = 2
    data = gmm_data.subspace_gmm(8, 3, 2, 5, 2, seed=1, variance=0.7, off_variance=0.05)
    basis = data.basis.astype(np.float64)
    assert np.allclose(basis.T @ basis, np.eye(3), atol=1e-6)
    covariance = 0.7 * basis @ basis.T + 0.05 * (np.eye(8) - basis @ basis.T)
    times = times_of(config)[::6]
    eps = np.asarray(evaluation.eval_noise(5, config.eval.noise_draws, 8, evaluation.TRAIN_SPLIT), np.float64)
    weights = np.array([1.0, 3.0, 1.0, 2.0, 1.0])
    ours = evaluation.truth_losses(data, data.train, weights.astype(np.float32), eps.astype(np.float32), times)
    truth = lambda x, t: _posterior_mean(x, t, data.means.astype(np.float64), covariance)  # noqa: E731
    np.testing.assert_allclose(ours, _brute_force_loss(truth, data.train.astype(np.float64), weights, eps, times),
                               rtol=2e-4, atol=1e-5)
    flat = gmm_data.subspace_gmm(8, 3, 2, 50, 2, seed=1, variance=0.7, off_variance=0.0)
    residual = flat.train - flat.train @ flat.basis @ flat.basis.T
    assert np.abs(residual).max() < 1e-5  # tau = 0: the points lie in the subspace


def _run(config, workdir):
    crossover.run(config, str(workdir))
    with np.load(os.path.join(workdir, "d6", "result.npz")) as f:
        return {k: f[k] for k in f.files if k != "fingerprint"}


@pytest.mark.slow
def test_replication_with_one_copy_is_the_plain_laboratory_bit_for_bit(config, tmp_path):
    plain = _run(config, tmp_path / "plain")
    with config.unlocked():
        config.data.update(replication="fraction", replicated_fraction=0.5, copies=1)
    once = _run(config, tmp_path / "once")
    assert plain.keys() == once.keys()
    for key in plain:
        np.testing.assert_array_equal(plain[key], once[key], err_msg=key)


@pytest.mark.slow
def test_replicated_smoke_reports_per_multiplicity_rates_and_the_sweep_analysis(config, tmp_path):
    with config.unlocked():
        config.data.update(replication="fraction", replicated_fraction=0.25, copies=5)
        config.training.update(steps=40, chunk_steps=20, peak_lr=0.1)
        config.sampling.num_samples = 16
    run_dir = tmp_path / "p0.25"
    summary = crossover.run(config, str(run_dir))
    for row in summary["rows"]:
        assert row["replicated_points"] == round(0.25 * row["N"]) and row["rows"] == row["N"] + 4 * round(0.25 * row["N"])
        counts = np.ones(row["N"])
        counts[: round(0.25 * row["N"])] = 5
        fraction = theory.formula_crossover_fraction(times_of(config), "x0")
        assert row["Mstar_formula_x0"] == pytest.approx(theory.covered_capacity(counts, fraction))
    models = list(csv.DictReader(open(run_dir / "models.csv")))
    for m in models:
        assert float(m["ratio_x1"]) + float(m["ratio_x5"]) == pytest.approx(float(m["ratio"]))
    with np.load(run_dir / "d6" / "result.npz") as f:
        assert f["set_multiplicity"].shape == (2, 12) and set(np.unique(f["landed_multiplicity"])) <= {0, 1, 5}

    # The sweep hook over this run (and a failed one, which it skips).
    rows = [{"run": "p0.25", "status": "done", "data.replicated_fraction": "0.25"},
            {"run": "p0.5", "status": "failed", "data.replicated_fraction": "0.5"}]
    lines = structure.analyze(rows, str(tmp_path), field="data.replicated_fraction")
    table = list(csv.DictReader(open(tmp_path / "structure.csv")))
    assert [(float(r["value"]), int(r["N"])) for r in table] == [(0.25, 8), (0.25, 12)]
    for pooled, row in zip(table, summary["rows"]):
        assert float(pooled["M_pt"]) == pytest.approx(row["M_pt"], rel=1e-5, nan_ok=True)
        assert float(pooled["Mstar_formula_x0"]) == pytest.approx(row["Mstar_formula_x0"], rel=1e-5)  # csv: 6 digits
    landed = list(csv.DictReader(open(tmp_path / "multiplicity.csv")))
    assert len(landed) == 2 * len(models) and {int(r["multiplicity"]) for r in landed} == {1, 5}
    for r in landed:
        model = next(m for m in models if (m["N"], m["M"]) == (r["N"], r["M"]))
        share = 0.75 if r["multiplicity"] == "1" else 0.25
        if float(model["ratio"]) > 0:
            expected = float(model[f"ratio_x{r['multiplicity']}"]) / float(model["ratio"]) / share
            assert float(r["rate_per_point_relative"]) == pytest.approx(expected, rel=1e-5)
    for png in ("structure.png", "multiplicity.png"):
        assert os.path.getsize(tmp_path / png) > 1000
    assert "## The crossover against data.replicated_fraction" in lines[0]


@pytest.mark.parametrize("fields, message", [
    (dict(replication="fraction", replicated_fraction=1.5), r"data.replicated_fraction \(p\) = 1.5 is invalid"),
    (dict(replication="fraction", replicated_fraction=-0.1), r"data.replicated_fraction \(p\) = -0.1"),
    (dict(replication="fraction", copies=0), r"data.copies \(r\) = 0 is invalid.*>= 1"),
    (dict(replication="poisson"), r"data.replication = 'poisson'.*'none', 'fraction', 'zipf'"),
    (dict(replication="zipf", zipf_exponent=0.0), r"data.zipf_exponent = 0.0"),
    (dict(model="subspace", rank=7), r"data.rank \(C\) = 7 is invalid.*\[1, 6\]"),
    (dict(model="subspace", rank=0), r"data.rank \(C\) = 0 is invalid"),
    (dict(model="subspace", rank=2, off_variance=-1.0), r"data.off_variance"),
    (dict(rank=3), r"data.rank \(C\) = 3 is invalid.*'isotropic'"),
    (dict(model="lowrank", dims=(128,), rank=3), r"data.rank \(C\) = 3 is invalid.*\[1, 2\]"),
])
def test_bad_structure_fields_name_the_field(config, fields, message):
    with config.unlocked():
        config.data.update(**fields)
    with pytest.raises(ValueError, match=message):
        crossover.validate_config(config)


def test_replicated_first_init_starts_on_the_most_replicated_points(config):
    from jaxmem.experiments.gmm_crossover.grids import build_grid, make_data_sets

    with config.unlocked():
        config.data.update(replication="fraction", replicated_fraction=0.25, copies=3, train_sizes=(8, 12))
        config.model.init = "replicated_first"
    data_sets = make_data_sets(config, 6, (8, 12))
    _, params, _, _ = build_grid(config, 6, data_sets)
    for s, (_, n, _, data) in enumerate(data_sets):
        counts = gmm_data.multiplicity_of(data)
        m = int(round(0.5 * n))  # the smoke grid's M/N = 0.5 member
        starts = params["means"][s, 1, :m]
        replicated = data.train[counts == 3]
        np.testing.assert_array_equal(starts[: len(replicated)], replicated)
    with config.unlocked():
        config.model.init = "partial"
    _, plain, _, _ = build_grid(config, 6, data_sets)
    np.testing.assert_array_equal(plain["means"][0, 1, :4], data_sets[0][3].train[:4])


def test_fields_added_later_stay_out_of_the_fingerprint_at_their_neutral_values(config):
    """Workdirs written before the structure and adam_b2 fields existed keep resuming: at their
    neutral values the fields are not part of a grid's fingerprint; at any other value they are."""
    import json

    from jaxmem.experiments.gmm_crossover import rounds

    plain = json.loads(rounds._grid_fingerprint(config, 6, (8,)))
    assert not {"rank", "replication", "copies", "replicated_fraction"} & set(plain["data"])
    assert "adam_b2" not in plain["training"]
    with config.unlocked():
        config.data.update(replication="fraction", replicated_fraction=0.1, copies=10)
        config.training.adam_b2 = 0.9
    changed = json.loads(rounds._grid_fingerprint(config, 6, (8,)))
    assert changed["data"]["copies"] == 10 and changed["training"]["adam_b2"] == 0.9

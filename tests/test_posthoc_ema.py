"""Post-hoc EMA: the power-function profiles, their closed-form inner products, the weight solve,
the reconstruction (synthetic trajectories and a real short run) and the trainer's resumable
snapshots."""

import os
import shutil
import signal

import jax
import numpy as np
import pytest
from scipy import integrate

from jaxmem.config import load_config
from jaxmem.validation import ConfigError
from jaxmem.experiments import edm_training, posthoc_ema
from jaxmem.train import posthoc_ema as ph
from jaxmem.train import trainer
from tests.test_edm_training import tiny_config

GAMMA_05, GAMMA_10 = ph.gamma_from_sigma_rel(0.05), ph.gamma_from_sigma_rel(0.10)


def test_sigma_rel_round_trips_through_gamma():
    sigma_rels = np.array([0.005, 0.01, 0.05, 0.1, 0.2, 0.25, 0.29, 0.3])
    gammas = np.array([ph.gamma_from_sigma_rel(s) for s in sigma_rels])
    np.testing.assert_allclose(ph.sigma_rel_from_gamma(gammas), sigma_rels, rtol=1e-10)
    assert np.all(np.diff(gammas) < 0) and np.all(gammas > ph.GAMMA_AT_MAX)  # the long-training branch
    np.testing.assert_allclose([GAMMA_05, GAMMA_10], [16.97, 6.94], atol=5e-3)  # EDM2's exponents
    np.testing.assert_allclose(ph.sigma_rel_from_gamma(ph.GAMMA_AT_MAX), ph.SIGMA_REL_MAX, rtol=1e-12)


def test_profile_standard_deviation_is_sigma_rel():
    for gamma in (0.0, 2.5, GAMMA_10, GAMMA_05):
        t = 7.0
        pdf = lambda x, g=gamma: (g + 1) * x**g / t ** (g + 1)  # noqa: E731
        mass = integrate.quad(pdf, 0, t)[0]
        mean = integrate.quad(lambda x: x * pdf(x), 0, t)[0]
        var = integrate.quad(lambda x: (x - mean) ** 2 * pdf(x), 0, t)[0]
        np.testing.assert_allclose([mass, np.sqrt(var) / t], [1.0, ph.sigma_rel_from_gamma(gamma)], rtol=1e-8)


@pytest.mark.parametrize("t1, g1, t2, g2", [(3.0, 0.0, 5.0, 2.0), (100.0, GAMMA_05, 80.0, GAMMA_10),
                                            (1.0, 90.0, 0.97, 96.0), (2.0, -0.5, 2.0, -0.3)])
def test_closed_form_inner_products_match_quadrature(t1, g1, t2, g2):
    p = lambda x, t, g: (g + 1) * x**g / t ** (g + 1)  # noqa: E731
    numeric = integrate.quad(lambda x: p(x, t1, g1) * p(x, t2, g2), 0, min(t1, t2), epsabs=0, epsrel=1e-11,
                             limit=200)[0]
    np.testing.assert_allclose(ph.profile_inner(t1, g1, t2, g2), numeric, rtol=1e-8)


def track(trajectory, gammas):
    """The power EMAs of a trajectory [T, D] after every step, float64 [len(gammas), T, D], by the
    update rule (beta(1) = 0)."""
    out = np.zeros((len(gammas), *trajectory.shape))
    for i, g in enumerate(gammas):
        average = np.zeros(trajectory.shape[1])
        for t in range(1, len(trajectory) + 1):
            beta = (1 - 1 / t) ** (g + 1)
            average = beta * average + (1 - beta) * trajectory[t - 1]
            out[i, t - 1] = average
    return out


def test_power_ema_decay_of_the_train_step_matches_the_formula():
    steps = np.array([1, 2, 10, 4000])
    for g in (GAMMA_05, 96.0):
        np.testing.assert_allclose(np.asarray(ph.power_ema_decay(steps, g)), (1 - 1 / steps) ** (g + 1),
                                   rtol=2e-6, atol=1e-30)


def test_update_rule_averages_with_the_integrated_profile():
    trajectory = np.random.default_rng(0).standard_normal((40, 3))
    t, g = 40, 3.5
    weights = (np.arange(1, t + 1) ** (g + 1) - np.arange(t) ** (g + 1)) / t ** (g + 1)
    np.testing.assert_allclose(track(trajectory, [g])[0, -1], weights @ trajectory, rtol=1e-12)


def test_sigma_rel_of_an_ema_from_its_decays():
    t = np.arange(1, 4001)
    for sigma_rel in (0.03, 0.1, 0.2):
        decays = (1 - 1 / t) ** (ph.gamma_from_sigma_rel(sigma_rel) + 1)
        np.testing.assert_allclose(ph.ema_sigma_rel(decays), sigma_rel, rtol=2e-3)
    # a constant decay d: weights ~ (1 - d) d^k, standard deviation sqrt(d) / (1 - d) steps
    np.testing.assert_allclose(ph.ema_sigma_rel(np.full(4000, 0.99)), np.sqrt(0.99) / 0.01 / 4000, rtol=1e-6)


@pytest.fixture(scope="module")
def synthetic():
    """A noisy drifting 5-parameter trajectory over 600 steps, both averages stored every 20 steps."""
    rng = np.random.default_rng(1)
    steps = np.arange(1, 601)
    trajectory = np.stack([np.sin(steps / 90.0 + k) + 0.3 * np.sqrt(steps / 600.0) * k for k in range(5)], 1)
    trajectory = trajectory + 0.05 * rng.standard_normal(trajectory.shape)
    averages = track(trajectory, [GAMMA_05, GAMMA_10])
    stored = np.arange(20, 601, 20)
    snapshot_steps = np.concatenate([stored, stored])
    snapshot_gammas = np.repeat([GAMMA_05, GAMMA_10], len(stored))
    snapshots = [averages[0, s - 1] for s in stored] + [averages[1, s - 1] for s in stored]
    return trajectory, averages, snapshot_steps, snapshot_gammas, snapshots


@pytest.mark.parametrize("sigma_rel, end_step, which", [(0.05, 600, 0), (0.10, 600, 1), (0.10, 340, 1),
                                                         (0.05, 120, 0)])
def test_reconstructing_a_tracked_profile_returns_the_tracked_average(synthetic, sigma_rel, end_step, which):
    _, averages, steps, gammas, snapshots = synthetic
    result = ph.solve_weights(steps, gammas, sigma_rel, end_step)
    assert result.relative_error < 1e-6
    np.testing.assert_allclose(result.weights.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ph.combine(result.weights, snapshots), averages[which, end_step - 1], atol=1e-6)


def test_an_untracked_length_approximates_its_directly_tracked_average(synthetic):
    trajectory, _, steps, gammas, snapshots = synthetic
    for sigma_rel in (0.03, 0.07, 0.15):
        result = ph.solve_weights(steps, gammas, sigma_rel)
        np.testing.assert_allclose(result.weights.sum(), 1.0, rtol=1e-12)
        direct = track(trajectory, [result.gamma])[0, -1]
        # the profiles differ by relative_error in L2; the trajectory moves by O(1) over the run
        error = np.abs(ph.combine(result.weights, snapshots) - direct).max()
        assert error < max(10 * result.relative_error, 1e-3), (sigma_rel, error, result.relative_error)


def test_infeasible_requests_fail_with_the_reason(synthetic):
    _, _, steps, gammas, _ = synthetic
    with pytest.raises(ConfigError, match="sigma_rel"):
        ph.solve_weights(steps, gammas, 0.35)
    with pytest.raises(ConfigError, match="sigma_rel"):
        ph.solve_weights(steps, gammas, 0.0)
    with pytest.raises(ConfigError, match="at least 2 stored averages"):
        ph.solve_weights(steps[:1], gammas[:1], 0.05)
    with pytest.raises(ConfigError, match="end_step.*600"):
        ph.solve_weights(steps, gammas, 0.05, end_step=601)
    with pytest.raises(ConfigError, match="cannot be represented.*store snapshots more often"):
        ph.solve_weights(steps, gammas, 0.005)  # a 3-step-wide average from snapshots 20 steps apart
    with pytest.raises(ConfigError, match="equal length"):
        ph.solve_weights(steps, gammas[:-1], 0.05)


# A real short run: the smoke U-Net of the EDM tests, with snapshots every 3 steps.

def snapshot_config(steps: int = 12):
    config = tiny_config(steps)
    config.training.update(snapshot_every_steps=3, checkpoint_every_steps=4)
    return config


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    config = snapshot_config()
    data = edm_training.load_training_set(config)[0]
    workdir = tmp_path_factory.mktemp("snapshots")
    result = trainer.train(config, str(workdir), data)
    return config, data, workdir, result


@pytest.mark.slow
def test_real_run_snapshots_reconstruct_the_tracked_averages(real_run):
    config, data, workdir, result = real_run
    snapshots = trainer.read_snapshots(config, str(workdir), data.shape)
    assert snapshots.steps == [3, 6, 9, 12] and snapshots.sigma_rels == (0.05, 0.10)
    loaded = {step: snapshots.load(step) for step in snapshots.steps}
    final = jax.device_get(result.state.power_ema)
    for tracked, expected in zip(loaded[12], final, strict=True):
        for a, b in zip(jax.tree_util.tree_leaves(tracked), jax.tree_util.tree_leaves(expected), strict=True):
            np.testing.assert_array_equal(a, b)
    steps = [s for s in snapshots.steps for _ in snapshots.gammas]
    gammas = [g for _ in snapshots.steps for g in snapshots.gammas]
    trees = [tree for s in snapshots.steps for tree in loaded[s]]
    for which, sigma_rel in enumerate(snapshots.sigma_rels):
        for end in (9, 12):
            weights = ph.solve_weights(steps, gammas, sigma_rel, end).weights
            rebuilt = ph.combine(weights, trees)
            for a, b in zip(jax.tree_util.tree_leaves(rebuilt), jax.tree_util.tree_leaves(loaded[end][which]),
                            strict=True):
                np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_the_last_step_is_stored_when_the_interval_does_not_divide_the_run(tmp_path):
    config = snapshot_config(steps=5)
    data = edm_training.load_training_set(config)[0]
    trainer.train(config, str(tmp_path), data)
    assert trainer.read_snapshots(config, str(tmp_path), data.shape).steps == [3, 5]
    assert posthoc_ema.snapshot_steps(config.training) == [3, 5]


@pytest.mark.slow
def test_killed_and_resumed_run_writes_identical_snapshots(real_run, tmp_path):
    config, data, reference_dir, _ = real_run

    def preempt(step, metrics):
        if step == 7:  # after the snapshot of step 6, before the checkpoint of step 8
            os.kill(os.getpid(), signal.SIGTERM)

    first = trainer.train(config, str(tmp_path), data, on_step=preempt)
    assert first.preempted and sorted(os.listdir(tmp_path / "snapshots")) == ["3", "6"]
    resumed = trainer.train(config, str(tmp_path), data)
    assert resumed.resumed_from == 7
    ours = trainer.read_snapshots(config, str(tmp_path), data.shape)
    reference = trainer.read_snapshots(config, str(reference_dir), data.shape)
    assert ours.steps == reference.steps
    for step in ours.steps:
        for a, b in zip(jax.tree_util.tree_leaves(ours.load(step)), jax.tree_util.tree_leaves(reference.load(step)),
                        strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_snapshots_past_the_restored_step_are_written_again(real_run, tmp_path):
    """A run killed after a snapshot but before the next checkpoint resumes from the checkpoint:
    the later snapshots are dropped and rewritten by the resumed run."""
    config, data, reference_dir, _ = real_run
    shutil.copytree(reference_dir, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "checkpoints" / "12")  # the run "died" after snapshot 12, before checkpoint 12
    for name in os.listdir(tmp_path / "snapshots" / "12"):  # a snapshot that would not match
        path = tmp_path / "snapshots" / "12" / name
        if path.is_dir():
            shutil.rmtree(path)
    resumed = trainer.train(config, str(tmp_path), data)
    assert resumed.resumed_from == 8
    ours = trainer.read_snapshots(config, str(tmp_path), data.shape)
    reference = trainer.read_snapshots(config, str(reference_dir), data.shape)
    for a, b in zip(jax.tree_util.tree_leaves(ours.load(12)), jax.tree_util.tree_leaves(reference.load(12)),
                    strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def experiment_config(**posthoc):
    config = load_config("configs/posthoc_ema.py:smoke")
    config.unlock()
    config.posthoc.update(posthoc)
    return config


def test_the_experiment_refuses_lengths_its_snapshots_cannot_represent_before_training():
    posthoc_ema.validate_config(experiment_config())
    with pytest.raises(ConfigError, match="posthoc.*sigma_rel = 0.01 ending at step 6 cannot be represented"):
        posthoc_ema.validate_config(experiment_config(sigma_rels=(0.05, 0.01)))
    with pytest.raises(ConfigError, match="end_step"):
        posthoc_ema.validate_config(experiment_config(end_step=7))
    config = experiment_config()
    config.model.training.snapshot_every_steps = 0
    with pytest.raises(ConfigError, match="model.training.snapshot_every_steps"):
        posthoc_ema.validate_config(config)

"""Trajectory-level and per-noise-level memorization: Wilson interval, nearest images, one-step rates."""

import functools

import numpy as np
import pytest

from jaxmem import memorization
from jaxmem.denoisers import empirical


def test_wilson_interval_covers_truth_at_nominal_rate():
    rng = np.random.default_rng(0)
    trials, reps = 60, 20000
    for p in (0.1, 0.5, 0.9):
        successes = rng.binomial(trials, p, size=reps)
        low, high = memorization.wilson_interval(successes, trials, level=0.9)
        coverage = np.mean((low <= p) & (p <= high))
        assert 0.86 <= coverage <= 0.94, (p, coverage)
    low, high = memorization.wilson_interval(np.array([0, 60]), 60)
    assert low[0] == pytest.approx(0.0, abs=1e-12) and high[1] == pytest.approx(1.0, abs=1e-12)
    assert 0 < high[0] < 0.1 and 0.9 < low[1] < 1


@pytest.mark.parametrize("kwargs", [dict(successes=5, trials=3), dict(successes=1, trials=0),
                                    dict(successes=1, trials=3, level=1.0)])
def test_wilson_interval_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        memorization.wilson_interval(**kwargs)


def test_trajectory_memorization_reports_nearest_training_image():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(12, 2, 3)).astype(np.float32)
    copies = train[[3, 7]] + 1e-4
    fresh = rng.normal(size=(2, 2, 3)).astype(np.float32) * 3
    report = memorization.trajectory_memorization(np.concatenate([copies, fresh]), train)
    assert report["memorized"].tolist() == [True, True, False, False]
    assert report["nearest"][:2].tolist() == [3, 7]
    assert report["rate"] == 0.5 and report["count"] == 4
    assert report["ci_low"] < 0.5 < report["ci_high"]
    with pytest.raises(ValueError, match="trailing shape"):
        memorization.trajectory_memorization(np.zeros((2, 6)), train)


def test_per_level_memorization_of_the_empirical_optimum():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(16, 8)).astype(np.float32)
    noise = rng.normal(size=train.shape).astype(np.float32)
    denoise = functools.partial(empirical.apply, empirical.make_params(train))
    sigmas = np.array([0.01, 100.0])
    report = memorization.per_level_memorization(denoise, train, noise, sigmas, train)
    # small sigma: the posterior snaps back to the clean training point; huge sigma: the data mean
    np.testing.assert_allclose(report["memorized_fraction"], [1.0, 0.0])
    assert report["mse"][0] < 1e-6 and report["mse"][1] > 1.0
    assert report["mse_per_query"].shape == (16, 2)
    images = memorization.per_level_memorization(denoise, train.reshape(16, 2, 2, 2), noise.reshape(16, 2, 2, 2),
                                                 sigmas, train.reshape(16, 2, 2, 2))
    np.testing.assert_allclose(images["mse"], report["mse"], rtol=1e-6)
    assert memorization.one_step_denoise(denoise, train.reshape(16, 2, 4), noise.reshape(16, 2, 4),
                                         sigmas).shape == (16, 2, 2, 4)
    with pytest.raises(ValueError, match="sigmas"):
        memorization.per_level_memorization(denoise, train, noise, np.array([0.0]), train)

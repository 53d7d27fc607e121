"""Closed forms: chi-square shell mass, single-point coverage, Wiener limits, regime map."""

import jax
import numpy as np
import pytest
from scipy.stats import chi2

from jaxmem import noise
from jaxmem.denoisers import empirical, linear
from jaxmem.geometry import coverage, mse, queries, regimes


def test_shell_radii_and_exact_chi2_mass():
    r_in, r_out = coverage.shell_radii(3072, 5.0)
    assert r_in**2 == pytest.approx(3072 - 2 * np.sqrt(5 * 3072))
    assert r_out**2 == pytest.approx(3072 + 2 * np.sqrt(5 * 3072) + 10)
    mass = coverage.chi2_shell_mass(3072, 5.0)
    assert mass == pytest.approx(0.99875, abs=5e-6)
    for d, c in ((3072, 5.0), (64, 5.0), (30, 1.0), (8, 5.0)):
        r_in, r_out = coverage.shell_radii(d, c)
        assert coverage.chi2_shell_mass(d, c) == pytest.approx(chi2.cdf(r_out**2, d) - chi2.cdf(r_in**2, d), abs=1e-10)
    assert coverage.shell_radii(8, 5.0)[0] == 0.0  # d < 4c: the lower bound is vacuous
    assert 1 - coverage.chi2_shell_mass(3072, 5.0) <= 2 * np.exp(-5.0)  # Laurent–Massart guarantee


@pytest.mark.parametrize("d, c, draws", [(3072, 5.0, 4000), (30, 1.0, 20000)])
def test_single_point_coverage_converges_to_chi2_shell_mass(d, c, draws):
    rng = np.random.default_rng(d)
    point = rng.uniform(-1, 1, (1, d)).astype(np.float32)
    params = empirical.make_params(point)
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(d), (draws, d)))
    sigmas = np.array([1e-2, 1.0, 30.0], np.float32)
    covered = coverage.shell_coverage(params, np.repeat(point, draws, axis=0), z, sigmas, c=c, chunk_size=2048)
    estimate, se = queries.mean_and_standard_error(covered, draws=draws)
    mass = coverage.chi2_shell_mass(d, c)
    binomial_se = np.sqrt(mass * (1 - mass) / draws)
    assert np.all(np.abs(estimate - mass) < 4 * binomial_se), (estimate, mass)
    np.testing.assert_allclose(se, np.sqrt(estimate * (1 - estimate) / (draws - 1)), rtol=1e-6)
    # The shell scales with sigma: each draw is inside at one level iff inside at all levels.
    assert np.all(covered == covered[:, :1])


def test_wiener_denoiser_matches_the_dense_formula_when_n_below_d():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5, 12)) @ rng.standard_normal((12, 12)) * 0.3
    params = linear.make_params(data.astype(np.float32))
    y = rng.standard_normal((3, 12)).astype(np.float32)
    mu = data.mean(0)
    cov = (data - mu).T @ (data - mu) / len(data)
    for sigma in (0.1, 1.0, 10.0):
        expected = mu + (y - mu) @ np.linalg.solve(cov + sigma**2 * np.eye(12), cov).T
        np.testing.assert_allclose(linear.apply(params, y, sigma), expected, rtol=1e-4, atol=1e-5)


def test_empirical_optimum_of_a_gaussian_sample_approaches_wiener_at_large_sigma():
    rng = np.random.default_rng(1)
    d = 4
    sample = (rng.standard_normal((2000, d)) * np.array([1.0, 0.7, 0.4, 0.2])).astype(np.float32)
    emp, wiener = empirical.make_params(sample, block_size=512), linear.make_params(sample)
    clean = sample[:64]
    z = rng.standard_normal(clean.shape).astype(np.float32)
    sigmas = np.array([1.0, 3.0, 10.0, 30.0], np.float32)
    gap = mse.denoiser_distance_curve(linear.apply, wiener, empirical.apply, emp, clean, z, sigmas).mean(0)
    shrinkage = mse.denoiser_distance_curve(linear.apply, wiener, linear.apply,
                                            {**wiener, "variances": wiener["variances"] * 0}, clean, z, sigmas).mean(0)
    relative = gap / shrinkage  # |D_W - D_E|^2 / |D_W - mu|^2
    assert np.all(np.diff(relative) < 0), relative
    assert relative[-1] < 1e-3 and relative[0] > 1e-3


def test_mse_of_exact_memorizer_on_training_points_vanishes_at_small_sigma():
    rng = np.random.default_rng(2)
    train = rng.uniform(-1, 1, (50, 16)).astype(np.float32)
    params = empirical.make_params(train, block_size=16)
    z = rng.standard_normal((20, 16)).astype(np.float32)
    sigmas = np.array([1e-3, 1e-2, 1e3], np.float32)
    errors = mse.mse_curve(empirical.apply, params, train[:20], z, sigmas)
    assert errors.shape == (20, 3) and np.all(errors[:, :2] < 1e-10)
    # sigma -> infinity: the estimate is the training mean.
    np.testing.assert_allclose(errors[:, 2], ((train[:20] - train.mean(0)) ** 2).sum(1), rtol=1e-3)


def test_regime_map_intervals_and_edm_indices():
    sigmas = np.geomspace(0.002, 80, 41)
    max_weight = 1 / (1 + (sigmas / 10.0) ** 4)  # falls through 0.5 at 10
    cover = (sigmas / 0.12) ** 4 / (1 + (sigmas / 0.12) ** 4)  # rises through 0.5 at 0.12
    result = regimes.regime_map(sigmas, max_weight, cover, w_threshold=0.5, c_threshold=0.5)
    assert result["boundaries"]["sigma_W"] == pytest.approx(10.0, rel=0.03)
    assert result["boundaries"]["sigma_C"] == pytest.approx(0.12, rel=0.03)
    assert set(result["regimes"]) == {"small", "medium", "large"}
    assert result["regimes"]["small"]["sigma_min"] is None and result["regimes"]["large"]["sigma_max"] is None
    # The paper's regions on the 18-step EDM grid: large 0-5, medium 6-13, small 14-17.
    assert result["regimes"]["large"]["edm_indices"] == [0, 5]
    assert result["regimes"]["medium"]["edm_indices"] == [6, 13]
    assert result["regimes"]["small"]["edm_indices"] == [14, 17]
    labels = regimes.label_levels(max_weight, cover, 0.5, 0.5)
    assert labels[0] == "small" and labels[20] == "medium" and labels[-1] == "large"
    assert noise.edm_sigmas(18)[6] == pytest.approx(8.4, rel=1e-3)


def test_regime_map_without_danger_zone_and_bad_thresholds():
    sigmas = np.geomspace(0.01, 10, 11)
    max_weight = np.where(sigmas < 0.1, 1.0, 0.0)
    cover = np.where(sigmas < 1.0, 0.0, 1.0)
    result = regimes.regime_map(sigmas, max_weight, cover)
    assert "medium" not in result["regimes"] and "neither" in result["regimes"]
    with pytest.raises(ValueError, match="w_threshold"):
        regimes.regime_map(sigmas, max_weight, cover, w_threshold=1.5)
    with pytest.raises(ValueError, match="sigmas"):
        regimes.regime_map(sigmas[::-1], max_weight, cover)

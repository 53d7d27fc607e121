"""Duplicated and near-duplicated training images against float64 brute force.

Real image sets hold exact and near duplicates; the matmul expansion's rounding error (~eps |x|^2)
swamps 2 sigma^2 there unless every pair that can matter gets a direct-difference energy. Each
case compares W, entropy, effective count, source weight, the denoiser and coverage with float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem import parallel
from jaxmem.denoisers import empirical
from jaxmem.geometry import concentration, coverage
from tests.test_geometry_kernels import brute_posterior

SIGMAS = np.array([1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3], np.float32)


def _train(n, d, seed, offset=0.0):
    return (offset + np.random.default_rng(seed).uniform(-1, 1, (n, d))).astype(np.float32)


def _expected(clean, noise, sigma, train, source):
    """float64 truth at one level: {field: [Q]} (source weight where source >= 0)."""
    train64 = train.astype(np.float64)
    y = clean.astype(np.float64) + float(sigma) * noise.astype(np.float64)
    max_weight, entropy, count, weights, _ = brute_posterior(y, float(sigma), train64)
    source_weight = np.where(source >= 0, weights[np.arange(len(y)), np.maximum(source, 0)], 0.0)
    return {"max_weight": max_weight, "entropy": entropy, "effective_count": count, "source_weight": source_weight}


def _check_concentration(train, clean, noise, source, block_size=16, mesh=None):
    params = empirical.make_params(train, block_size)
    stats = concentration.posterior_concentration(params, clean, noise, SIGMAS, source, mesh=mesh)
    for j, sigma in enumerate(SIGMAS):
        for name, ref in _expected(clean, noise, sigma, train, source).items():
            atol = 1e-7 if name == "entropy" else 0.0  # nats: a near-zero entropy keeps 1e-7 absolute
            np.testing.assert_allclose(stats[name][:, j], ref, rtol=2e-5, atol=atol,
                                       err_msg=f"{name} at sigma={sigma:g}")
    return stats


def _direct_float32_mean(y, sigma, train):
    """The floor: float32 direct differences |y - x_i|^2 for every pair, then the same softmax."""
    energies = jnp.sum(jnp.square(jnp.asarray(y)[:, None, :] - jnp.asarray(train)[None]), axis=-1)
    state = empirical.RunningSoftmax.of_block(jnp.full(y.shape[:1], 0.5 / np.float32(sigma) ** 2), energies,
                                              jnp.ones(train.shape[0], bool), jnp.asarray(train))
    return np.asarray(state.mean(), np.float64)


def _check_denoiser(train, y, sigmas, block_size=16):
    """m_sigma(y) against the float64 posterior mean: within 4x the error of float32 direct
    differences (the floor: logits of size 1 / sigma^2 amplify float32 energy rounding), plus a
    few ulps of max |x|."""
    params = empirical.make_params(train, block_size)
    ulps = 16 * np.finfo(np.float32).eps * np.abs(train).max()
    for sigma in sigmas:
        got = np.asarray(empirical.apply(params, y, sigma), np.float64)
        *_, ref = brute_posterior(y.astype(np.float64), float(sigma), train.astype(np.float64))
        floor = np.abs(_direct_float32_mean(y, sigma, train) - ref).max()
        assert np.abs(got - ref).max() <= 4 * floor + ulps, (sigma, np.abs(got - ref).max(), floor)


def test_issue_repro_near_duplicate_pair_at_d_3072():
    train = _train(3, 3072, 0)
    train[1] = train[0] + np.float32(1e-4)
    y = (train[0] + np.float32(5e-5))[None]
    params = empirical.make_params(train)
    for sigma, expected in ((1e-3, 0.500203), (1e-2, 0.500002)):
        stats = concentration.posterior_concentration(params, y, np.zeros_like(y), np.array([sigma]))
        assert stats["max_weight"][0, 0] == pytest.approx(expected, abs=2e-6)
        assert stats["entropy"][0, 0] == pytest.approx(np.log(2.0), rel=1e-5)
    _check_denoiser(train, y, [1e-3, 1e-2])


@pytest.mark.parametrize("copies", [2, 5, 40])
@pytest.mark.parametrize("d", [64, 3072])
def test_exact_duplicates_share_the_weight(copies, d):
    """A point stored `copies` times (rows 3 .. 2 + copies, blocks of 16): queries on the first and
    last copy, on a singleton, halfway between the group and a singleton, far from every point."""
    train = _train(60, d, 1)
    train[3:3 + copies] = train[3]
    clean = np.stack([train[3], train[2 + copies], train[50], 0.5 * (train[3] + train[50]), train[3] + 3.0])
    source = np.array([3, 2 + copies, 50, -1, -1], np.int32)
    noise = np.random.default_rng(2).standard_normal(clean.shape).astype(np.float32)
    stats = _check_concentration(train, clean.astype(np.float32), noise, source)
    np.testing.assert_allclose(stats["max_weight"][:2, 0], 1.0 / copies, rtol=1e-6)  # sigma = 1e-3
    y = (clean + np.float32(1e-3) * noise).astype(np.float32)
    _check_denoiser(train, y, [1e-3, 1e-1, 10.0])


@pytest.mark.parametrize("d", [64, 3072])
def test_cluster_of_near_duplicates(d):
    """21 points within 1e-4 of each other: queries on members, at the cluster mean, nearby."""
    rng = np.random.default_rng(3)
    train = _train(60, d, 3)
    train[30:51] = train[30] + np.float32(1e-4) * rng.standard_normal((21, d)).astype(np.float32)
    clean = np.stack([train[30], train[44], train[50], train[30:51].mean(0), train[30] + 1e-3])
    source = np.array([30, 44, 50, -1, -1], np.int32)
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    stats = _check_concentration(train, clean.astype(np.float32), noise, source)
    assert np.any((stats["max_weight"] > 0.1) & (stats["max_weight"] < 0.9))  # the cluster is resolved
    y = (train[30] + np.float32(1e-4) * rng.standard_normal((3, d))).astype(np.float32)
    _check_denoiser(train, y, [1e-4, 1e-3, 1e-2])


def test_far_query_whose_nearest_image_is_stored_twice():
    train = _train(60, 3072, 4)
    train[41] = train[40]  # same block of 16
    held = (train[40] + np.random.default_rng(5).standard_normal((3, 3072)) * np.array([[0.05], [0.2], [1.0]]))
    clean = held.astype(np.float32)
    stats = _check_concentration(train, clean, np.zeros_like(clean), np.full(3, -1, np.int32))
    np.testing.assert_allclose(stats["max_weight"][:, 0], 0.5, rtol=1e-6)


def test_large_common_offset():
    """Values 1e4 +- 1: the expansion on raw data loses everything to |x|^2 ~ 1e8 d."""
    train = _train(40, 64, 6, offset=1e4)
    source = np.arange(4, dtype=np.int32)
    noise = np.random.default_rng(7).standard_normal((4, 64)).astype(np.float32)
    _check_concentration(train, train[source], noise, source)
    _check_denoiser(train, (train[source] + noise).astype(np.float32), [0.1, 1.0, 10.0])


def test_coverage_near_a_near_duplicate_pair():
    d = 3072
    rng = np.random.default_rng(8)
    train = _train(40, d, 8)
    train[1] = train[0] + np.float32(1e-4) * rng.standard_normal(d).astype(np.float32)
    offsets = np.geomspace(1e-6, 1e-2, 64)[:, None] * rng.standard_normal((64, d)) / np.sqrt(d)
    clean = (train[:1] + offsets).astype(np.float32)
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    sigmas = np.geomspace(1e-6, 1e-2, 17).astype(np.float32)
    covered = coverage.shell_coverage(empirical.make_params(train, 16), clean, noise, sigmas)
    r_in, r_out = coverage.shell_radii(d)
    for j, sigma in enumerate(sigmas.astype(np.float64)):
        y = clean.astype(np.float64) + sigma * noise.astype(np.float64)
        sq = ((y[:, None, :] - train.astype(np.float64)[None]) ** 2).sum(-1)
        lo, hi = (sigma * r_in) ** 2, (sigma * r_out) ** 2
        ref = ((sq >= lo) & (sq <= hi)).any(axis=1)
        on_boundary = ((np.abs(sq - lo) <= 1e-5 * lo) | (np.abs(sq - hi) <= 1e-5 * hi)).any(axis=1)
        assert not np.any((covered[:, j] != ref) & ~on_boundary), sigma
    assert covered.any() and not covered.all()


def test_duplicates_on_eight_devices():
    assert jax.device_count() == 8  # tests/conftest.py
    train = _train(48, 64, 9)
    train[40:] = train[5]
    source = np.array([5, 40, 47, 6, 7, 5, 44, 12, 13], np.int32)  # 9 queries: padding to 8 devices
    noise = np.random.default_rng(10).standard_normal((9, 64)).astype(np.float32)
    one = parallel.make_mesh(devices=jax.devices()[:1])
    stats_1 = _check_concentration(train, train[source], noise, source, mesh=one)
    stats_8 = _check_concentration(train, train[source], noise, source, mesh=parallel.make_mesh())
    np.testing.assert_allclose(stats_8["max_weight"], stats_1["max_weight"], rtol=1e-6)

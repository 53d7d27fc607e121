"""Geometry kernels against float64 brute force, across devices, and on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem import parallel
from jaxmem.denoisers import empirical, linear
from jaxmem.geometry import concentration, coverage, mse

SIGMAS = np.geomspace(1e-3, 1e2, 26).astype(np.float32)


def _problem(n=40, d=12, q=24, seed=0):
    rng = np.random.default_rng(seed)
    train = rng.uniform(-1, 1, (n, d)).astype(np.float32)
    source = rng.integers(0, n, q).astype(np.int32)
    noise = rng.standard_normal((q, d)).astype(np.float32)
    return train, source, noise


def brute_posterior(y, sigma, train):
    """float64 reference: (W, entropy, effective count, weights, mean) for queries y [Q, d].

    Entropy as log1p(rest) - sum w l (l shifted to max 0), so values near 0 keep their digits.
    """
    logits = -((y[:, None, :] - train[None]) ** 2).sum(-1) / (2 * sigma**2)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    top = np.arange(p.shape[1]) == p.argmax(axis=1)[:, None]
    rest = np.where(top, 0.0, p).sum(axis=1)  # the mass beyond the top weight, without cancellation
    mass = 1.0 + rest
    weights = p / mass[:, None]
    entropy = np.log1p(rest) - (p * logits).sum(axis=1) / mass
    return 1.0 / mass, entropy, 1.0 / (weights**2).sum(axis=1), weights, weights @ train


def test_concentration_matches_float64_brute_force_from_1e_3_to_1e2():
    train, source, noise = _problem()
    params = empirical.make_params(train, block_size=16)  # 3 blocks, the last one padded
    stats = concentration.posterior_concentration(params, train[source], noise, SIGMAS, source, chunk_size=16)
    train64 = train.astype(np.float64)
    saw_spread = False
    for j, sigma in enumerate(SIGMAS.astype(np.float64)):
        y = train64[source] + sigma * noise.astype(np.float64)
        max_weight, entropy, count, weights, _ = brute_posterior(y, sigma, train64)
        expected = {"max_weight": max_weight, "entropy": entropy, "effective_count": count,
                    "source_weight": weights[np.arange(len(source)), source]}
        for name, ref in expected.items():
            got = stats[name][:, j]
            assert np.all(np.isfinite(got)), (name, sigma)
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-30, err_msg=f"{name} at sigma={sigma:.3g}")
        saw_spread |= bool(np.any((max_weight > 0.2) & (max_weight < 0.8)))
    assert saw_spread  # the grid crosses the interesting range, not only one-hot / uniform
    assert np.all(stats["max_weight"][:, 0] == 1.0)  # sigma = 1e-3: snapped to the source, no NaN


def test_empirical_denoiser_matches_float64_brute_force():
    train, source, noise = _problem(seed=1)
    params = empirical.make_params(train, block_size=16)
    apply = jax.jit(empirical.apply)
    rng = np.random.default_rng(2)
    for clean in (train[source], rng.uniform(-1, 1, noise.shape).astype(np.float32)):
        for sigma in SIGMAS:
            y = clean + sigma * noise  # float32 queries; the reference sees the same values
            got = np.asarray(apply(params, y, sigma))
            *_, ref = brute_posterior(y.astype(np.float64), float(sigma), train.astype(np.float64))
            assert np.all(np.isfinite(got))
            err = np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)
            assert err.max() < 1e-5, (sigma, err.max())


def test_denoiser_accepts_images_and_per_example_sigma():
    train, _, _ = _problem(n=10, d=12)
    params = empirical.make_params(train.reshape(10, 2, 2, 3), block_size=4)
    x = train[:3].reshape(3, 2, 2, 3) + 0.01
    out = empirical.apply(params, x, jnp.array([1e-3, 1.0, 100.0]))
    assert out.shape == x.shape
    np.testing.assert_array_equal(empirical.apply(params, x, jnp.array([1e-3, 1.0, 100.0]).reshape(3, 1, 1, 1)), out)
    with pytest.raises(ValueError, match="sigma.shape"):
        empirical.apply(params, x, jnp.ones(2))
    np.testing.assert_allclose(out[0], train[0].reshape(2, 2, 3), atol=1e-6)  # tiny sigma: nearest point
    np.testing.assert_allclose(out[2], train.mean(0).reshape(2, 2, 3), atol=1e-2)  # huge sigma: the mean


def test_near_duplicate_training_points_keep_their_weights():
    """Two points 1e-3 apart: at sigma ~ 1e-3 their weights depend on distance gaps of ~1e-6 that
    the matmul expansion alone cannot resolve (|x|^2 ~ 16); the exact re-computation of each
    block's nearest candidate must."""
    rng = np.random.default_rng(3)
    train = rng.uniform(-1, 1, (8, 48)).astype(np.float32)
    train[5] = train[2] + np.float32(1e-3) * rng.standard_normal(48).astype(np.float32) / np.sqrt(48)
    params = empirical.make_params(train, block_size=4)  # the pair sits in different blocks
    source = np.array([2, 5, 2, 5], np.int32)
    noise = rng.standard_normal((4, 48)).astype(np.float32)
    sigmas = np.array([3e-4, 1e-3, 3e-3], np.float32)
    stats = concentration.posterior_concentration(params, train[source], noise, sigmas, source)
    for j, sigma in enumerate(sigmas.astype(np.float64)):
        y = train.astype(np.float64)[source] + sigma * noise.astype(np.float64)
        max_weight, entropy, count, weights, _ = brute_posterior(y, sigma, train.astype(np.float64))
        np.testing.assert_allclose(stats["max_weight"][:, j], max_weight, rtol=1e-4)
        np.testing.assert_allclose(stats["source_weight"][:, j], weights[np.arange(4), source], rtol=1e-4)
        np.testing.assert_allclose(stats["entropy"][:, j], entropy, rtol=1e-4, atol=1e-30)
    assert np.any((stats["max_weight"] > 0.55) & (stats["max_weight"] < 0.95))


def test_shared_matmul_path_equals_per_sigma_recompute():
    train, source, noise = _problem(seed=4)
    params = empirical.make_params(train, block_size=16)
    shared = concentration.concentration_kernel(train[source], noise, source, params, SIGMAS)
    baseline = concentration.per_sigma_concentration_jit(params, jnp.asarray(train[source]), jnp.asarray(noise),
                                                         jnp.asarray(SIGMAS))
    for name in baseline:
        np.testing.assert_allclose(shared[name], baseline[name], rtol=2e-5, atol=1e-30)


def _per_level_fold(clean, noise, source, params, sigmas):
    """The kernel's statistics from `RunningSoftmax.update` (`of_block`) over whole blocks, one
    level at a time: the fold before query tiles and `of_energies`. {field: [Q, L]}."""
    def fold(state, terms, centred_points, valid):
        gram, cross = terms
        return jax.lax.map(lambda args: args[1].update(gram + 2.0 * args[0] * cross, valid), (sigmas, state))

    inv_temperature = jnp.broadcast_to((0.5 / sigmas**2)[:, None], (len(sigmas), len(clean)))
    init = empirical.RunningSoftmax.init(inv_temperature)
    state = jax.tree.map(jnp.transpose, empirical.scan_blocks(params, clean, fold, init, noise, source))
    source_weight = jnp.where(source[:, None] >= 0, jnp.exp(-state.log_partition()), 0.0)
    return {"max_weight": state.max_weight(), "entropy": state.entropy(),
            "effective_count": state.effective_count(), "source_weight": source_weight}


def test_tiled_level_fold_equals_the_per_level_fold():
    """Three query tiles, duplicated training points, sources and NO_SOURCE queries, a padded
    block: the tiled fold equals the one-tile fold bitwise and, sharded over eight devices, to
    rounding; it equals the per-level `of_block` fold up to the float32 rounding of the energies
    G + 2 s C (a fused multiply-add or not: beta eps |e| ~ 3e-5 at the level where it peaks)."""
    rows = 32
    rng = np.random.default_rng(8)
    train = rng.uniform(-1, 1, (40, 12)).astype(np.float32)
    train[[7, 21, 33]] = train[3]  # four copies of one point, in three blocks
    source = rng.integers(0, 40, 3 * rows).astype(np.int32)
    source[::5] = concentration.NO_SOURCE
    source[1::7] = 21
    clean = np.where(source[:, None] >= 0, train[np.maximum(source, 0)],
                     rng.uniform(-1, 1, (3 * rows, 12))).astype(np.float32)
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    params = empirical.make_params(train, block_size=16)
    assert concentration.num_query_tiles(len(source), 16, rows) == 3
    tiled = concentration.concentration_kernel(clean, noise, source, params, SIGMAS, query_tile=rows)
    one_tile = concentration.concentration_kernel(clean, noise, source, params, SIGMAS, query_tile=3 * rows)
    mesh = parallel.make_mesh()
    sharded = concentration.concentration_kernel(
        *(jax.device_put(a, parallel.sharding_along(mesh, a.ndim)) for a in (clean, noise, source)),
        jax.device_put(params, parallel.replicated(mesh)), SIGMAS, query_tile=rows)
    reference = _per_level_fold(*map(jnp.asarray, (clean, noise, source)), params, jnp.asarray(SIGMAS))
    for name in concentration.CONCENTRATION_FIELDS:
        np.testing.assert_array_equal(tiled[name], one_tile[name], err_msg=name)
        np.testing.assert_allclose(sharded[name], tiled[name], rtol=1e-6, atol=1e-30, err_msg=name)
        np.testing.assert_allclose(tiled[name], reference[name], rtol=1e-5, atol=1e-30, err_msg=name)
    copies = np.isin(source, [3, 7, 21, 33])
    np.testing.assert_array_equal(np.asarray(tiled["max_weight"])[:, 0], np.where(copies, 0.25, 1.0))  # snapped


def test_of_energies_equals_of_block():
    """Ties (exact duplicates), padding (+inf) and one-hot (every other exponential 0) to flat
    temperatures."""
    rng = np.random.default_rng(9)
    energies = rng.uniform(0.0, 50.0, (6, 64)).astype(np.float32)
    energies[:, 10] = energies[:, 40] = energies.min(axis=1) - 1.0  # two leaders per row
    energies[3, 5] = 0.0  # a source
    valid = np.arange(64) < 60
    for beta in (1e-3, 0.1, 1.0, 1e3, 1e6):
        inv_temperature = jnp.full(6, beta, jnp.float32)
        block = empirical.RunningSoftmax.of_block(inv_temperature, jnp.asarray(energies), jnp.asarray(valid))
        fast = empirical.RunningSoftmax.of_energies(inv_temperature, jnp.where(valid, energies, jnp.inf),
                                                    jnp.asarray(valid))
        np.testing.assert_array_equal(fast.min_energy, block.min_energy)
        for name in ("rest", "mass_sq", "mass_logit"):
            np.testing.assert_allclose(getattr(fast, name), getattr(block, name), rtol=1e-6, atol=1e-30,
                                       err_msg=f"{name} at beta={beta:g}")
            if beta >= 1e3:  # one-hot rows (every other p underflows to 0): exact counts
                np.testing.assert_array_equal(getattr(fast, name), getattr(block, name), err_msg=name)


def test_coverage_matches_float64_union_of_annuli():
    rng = np.random.default_rng(5)
    d = 24
    train = rng.uniform(-1, 1, (60, d)).astype(np.float32)
    held = rng.uniform(-1, 1, (30, d)).astype(np.float32)
    clean = np.repeat(held, 4, axis=0)
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    sigmas = np.geomspace(0.05, 5, 21).astype(np.float32)
    params = empirical.make_params(train, block_size=32)
    covered = coverage.shell_coverage(params, clean, noise, sigmas, c=5.0, chunk_size=40)
    r_in, r_out = coverage.shell_radii(d, 5.0)
    mismatches = 0
    for j, sigma in enumerate(sigmas.astype(np.float64)):
        y = clean.astype(np.float64) + sigma * noise.astype(np.float64)
        sq = ((y[:, None, :] - train.astype(np.float64)[None]) ** 2).sum(-1)
        lo, hi = (sigma * r_in) ** 2, (sigma * r_out) ** 2
        ref = ((sq >= lo) & (sq <= hi)).any(axis=1)
        near_boundary = ((np.abs(sq - lo) <= 1e-6 * lo) | (np.abs(sq - hi) <= 1e-6 * hi)).any(axis=1)
        mismatches += int(np.sum((covered[:, j] != ref) & ~near_boundary))
    assert mismatches == 0
    fraction = covered.mean(axis=0)
    assert fraction.min() == 0.0 and fraction.max() == 1.0 and np.any((fraction > 0.1) & (fraction < 0.9))


@pytest.mark.slow
def test_eight_devices_give_the_same_results_as_one():
    assert jax.device_count() == 8  # tests/conftest.py
    train, source, noise = _problem(q=21, seed=6)  # 21 queries: padding to the device count
    params = empirical.make_params(train, block_size=16)
    one = parallel.make_mesh(devices=jax.devices()[:1])
    eight = parallel.make_mesh()
    stats_1, stats_8 = (concentration.posterior_concentration(params, train[source], noise, SIGMAS, source,
                                                              chunk_size=8, mesh=mesh) for mesh in (one, eight))
    for name in concentration.CONCENTRATION_FIELDS:
        np.testing.assert_allclose(stats_8[name], stats_1[name], rtol=1e-5, atol=1e-30)
    cov_1 = coverage.shell_coverage(params, train[source], noise, SIGMAS, mesh=one)
    cov_8 = coverage.shell_coverage(params, train[source], noise, SIGMAS, mesh=eight)
    np.testing.assert_array_equal(cov_8, cov_1)
    mse_1, mse_8 = (mse.mse_curve(empirical.apply, params, train[source], noise, SIGMAS[::5], chunk_size=8, mesh=mesh)
                    for mesh in (one, eight))
    np.testing.assert_allclose(mse_8, mse_1, rtol=1e-5, atol=1e-12)


def test_kernels_vmap_over_noise_draws():
    train, source, noise = _problem(q=6, seed=7)
    params = empirical.make_params(train, block_size=16)
    draws = jnp.stack([noise, -noise])
    batched = jax.vmap(lambda z: concentration.concentration_kernel(train[source], z, source, params, SIGMAS))(draws)
    single = concentration.concentration_kernel(train[source], -noise, source, params, SIGMAS)
    np.testing.assert_allclose(batched["max_weight"][1], single["max_weight"], rtol=1e-6)


def test_bad_input_errors_name_the_field():
    train, source, noise = _problem(q=4)
    params = empirical.make_params(train)
    with pytest.raises(ValueError, match="sigmas"):
        concentration.posterior_concentration(params, train[source], noise, np.array([0.1, 0.0]), source)
    with pytest.raises(ValueError, match="sigmas"):
        coverage.shell_coverage(params, train[source], noise, np.array([-1.0]))
    with pytest.raises(ValueError, match="sigma"):
        empirical.apply(params, train[:2], -1.0)
    with pytest.raises(ValueError, match="source"):
        concentration.posterior_concentration(params, train[source], noise, SIGMAS, source + len(train))
    with pytest.raises(ValueError, match="queries dimension d.*training set's dimension"):
        concentration.posterior_concentration(params, train[source][:, :5], noise[:, :5], SIGMAS)
    with pytest.raises(ValueError, match="x.shape"):
        empirical.apply(params, np.zeros((2, 5), np.float32), 1.0)
    with pytest.raises(ValueError, match="training set is empty"):
        empirical.make_params(np.zeros((0, 12), np.float32))
    with pytest.raises(ValueError, match="query set is empty"):
        coverage.shell_coverage(params, np.zeros((0, 12), np.float32), np.zeros((0, 12), np.float32), SIGMAS)
    with pytest.raises(ValueError, match="data set is empty"):
        linear.make_params(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="train"):
        empirical.make_params(np.full((3, 2), np.nan, np.float32))


def test_the_level_fold_couples_no_rows_when_queries_are_sharded():
    """Compiled with the queries sharded over 8 devices, the multi-level kernel's only collective
    is the certificate's loop condition (any query still pending a direct recompute): nothing in
    the per-level softmax reduces over rows, which on a multi-chip run would be a collective per
    level and block."""
    mesh = parallel.make_mesh()
    train = np.random.default_rng(0).standard_normal((100, 16)).astype(np.float32)
    params = jax.device_put(empirical.make_params(train, 32), parallel.replicated(mesh))
    queries = jax.device_put(jnp.asarray(train[:64]), parallel.sharding_along(mesh, 2))
    source = jax.device_put(jnp.arange(64, dtype=jnp.int32), parallel.sharding_along(mesh, 1))
    text = concentration.concentration_kernel.lower(queries, queries, source, params,
                                                    jnp.asarray([0.1, 1.0, 10.0])).compile().as_text()
    collectives = [line for line in text.splitlines()
                   if any(f" {op}(" in line for op in ("all-reduce", "all-gather", "collective-permute", "all-to-all"))]
    assert len(collectives) == 1 and "reduce_or" in collectives[0], collectives

"""Exact nearest neighbours against float64 brute force, and the memorization test."""

import jax
import numpy as np
import pytest

from jaxmem import parallel
from jaxmem.validation import ConfigError
from jaxmem.neighbors import knn_block, blocks_for_memory, knn, memorization_flags, memorization_rate, memorization_test


def brute_force(queries, train, k):
    q = queries.astype(np.float64)
    x = train.astype(np.float64)
    sq = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), sq.shape), sq), axis=1)[:, :k]
    return np.sqrt(np.take_along_axis(sq, order, 1)), order


def test_random_data_matches_float64(rng=np.random.default_rng(0)):
    train = rng.normal(size=(300, 20)).astype(np.float32)
    queries = rng.normal(size=(70, 20)).astype(np.float32)
    d, i = knn(queries, train, k=3, query_block=16, train_block=64)
    d_ref, i_ref = brute_force(queries, train, 3)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-5)


def test_fast_path_certifies_well_separated_queries():
    """On generic data the device path answers alone; the float64 host fallback stays idle."""
    rng = np.random.default_rng(6)
    train = rng.normal(size=(256, 32)).astype(np.float32)
    queries = rng.normal(size=(64, 32)).astype(np.float32)
    sqnorm = (train**2).sum(1)
    _, idx, certified = knn_block(queries, train, sqnorm, np.sqrt(sqnorm.max()), k=2,
                                   num_candidates=4, train_block=64)
    assert np.asarray(certified).mean() > 0.9
    np.testing.assert_array_equal(np.asarray(idx)[np.asarray(certified)],
                                  brute_force(queries, train, 2)[1][np.asarray(certified)])


@pytest.mark.parametrize("offset", [0.0, 1e-3])
def test_queries_on_or_near_training_points(offset):
    """Large norms make the expansion |q|^2 - 2qx + |x|^2 useless for d1; the re-rank is exact."""
    rng = np.random.default_rng(1)
    train = (100.0 + rng.normal(size=(500, 64))).astype(np.float32)
    pick = rng.choice(500, 40, replace=False)
    direction = rng.normal(size=(40, 64))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    queries = (train[pick] + offset * direction).astype(np.float32)
    d, i = knn(queries, train, k=2, train_block=128)
    d_ref, i_ref = brute_force(queries, train, 2)
    np.testing.assert_array_equal(i[:, 0], pick)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d[:, 0], d_ref[:, 0], rtol=1e-3, atol=1e-6)
    # The expansion formula alone gets d1 badly wrong here (cancellation at |x|^2 ~ 6.4e5).
    naive = np.sqrt(np.maximum(
        (queries**2).sum(1) - 2 * np.einsum("qd,qd->q", queries, train[pick]) + (train[pick] ** 2).sum(1), 0))
    assert np.max(np.abs(naive - d_ref[:, 0])) > 10 * np.max(np.abs(d[:, 0] - d_ref[:, 0])) + 1e-4


def test_duplicate_training_points_uncertified_fallback():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(50, 8)).astype(np.float32)
    train = np.concatenate([base, np.repeat(base[:3], 5, axis=0)])  # each of 3 points stored 6 times
    queries = np.concatenate([base[:3], rng.normal(size=(10, 8)).astype(np.float32)])
    d, i = knn(queries, train, k=4, train_block=16)
    d_ref, i_ref = brute_force(queries, train, 4)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-5, atol=1e-6)
    assert np.all(d[:3] == 0.0)


def test_k_equal_to_n_and_errors():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(5, 4)).astype(np.float32)
    queries = rng.normal(size=(3, 4)).astype(np.float32)
    d, i = knn(queries, train, k=5)
    d_ref, i_ref = brute_force(queries, train, 5)
    np.testing.assert_array_equal(i, i_ref)
    with pytest.raises(ValueError, match="k = 6 is invalid; allowed: 1 <= k <= N = 5"):
        knn(queries, train, k=6)
    with pytest.raises(ValueError, match="equal dimensions"):
        knn(queries[:, :3], train)
    with pytest.raises(ValueError, match="NaN"):
        knn(np.full((1, 4), np.nan, np.float32), train)


def test_eight_devices_equal_one_device():
    assert jax.device_count() == 8, "tests/conftest.py should give 8 fake CPU devices"
    rng = np.random.default_rng(4)
    train = rng.normal(size=(200, 16)).astype(np.float32)
    queries = rng.normal(size=(37, 16)).astype(np.float32)  # not a multiple of 8: padded
    one = knn(queries, train, k=2, mesh=parallel.make_mesh(devices=jax.devices()[:1]))
    eight = knn(queries, train, k=2, mesh=parallel.make_mesh(), query_block=2)
    np.testing.assert_array_equal(one[1], eight[1])
    np.testing.assert_allclose(one[0], eight[0], rtol=1e-6)  # float32 reduction order differs by block shape


def test_memorization_test():
    rng = np.random.default_rng(5)
    train = rng.normal(size=(100, 10)).astype(np.float32)
    copies = train[:20] + 1e-3 * rng.normal(size=(20, 10)).astype(np.float32)
    novel = rng.normal(size=(30, 10)).astype(np.float32)
    midpoints = (0.5 * (train[20:30] + train[30:40])).astype(np.float32)  # equidistant: not memorized
    flags = memorization_flags(np.concatenate([copies, novel, midpoints]), train)
    assert flags[:20].all() and not flags[50:].any()
    d, _ = brute_force(novel, train, 2)
    np.testing.assert_array_equal(flags[20:50], d[:, 0] < d[:, 1] / 3)
    # A training image stored twice is still memorized when copied.
    assert memorization_rate(train[:5], np.concatenate([train, train[:5]])) == 1.0
    flags, distances, nearest = memorization_test(train[:5][::-1], np.concatenate([train[3:], train[:5]]))
    assert flags.all() and np.all(distances[:, 0] == 0.0) and np.all(distances[:, 1] > 0.0)
    assert nearest.tolist() == [1, 0, 99, 98, 97]  # lowest index among the duplicates, in the given train


def test_accelerator_block_sizes_fit_the_memory_budget():
    for budget, dim in [(10 * 2**30, 3072), (2**30, 3072), (2**28, 784)]:
        queries, train = blocks_for_memory(budget, dim, num_candidates=8)
        assert queries * 4 * (3 * train + 16 * dim) <= budget
        assert queries & (queries - 1) == 0 and 256 <= queries <= 16384
    assert blocks_for_memory(80 * 2**30 // 8, 3072, 8)[0] == 16384  # an 80 GB GPU: the cap


def test_memorization_test_refuses_an_empty_sample_set():
    with pytest.raises(ConfigError, match=r"samples = \(0, 3\) is invalid"):
        memorization_rate(np.zeros((0, 3)), np.eye(3))

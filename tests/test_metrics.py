"""Sample-quality metrics against closed forms and brute force (CPU; no network weights needed).

The network's parity with the reference TorchScript model is tests/test_metrics_parity.py.
"""

import itertools
import warnings

import numpy as np
import pytest
import scipy.linalg

from jaxmem.validation import ConfigError
from jaxmem.metrics import frechet, kernel_distance, manifold, resize, weights
from jaxmem.metrics.features import check_uint8_images, to_uint8


def random_psd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


# --- FID -----------------------------------------------------------------------------------

def test_sqrtm_psd_matches_scipy_in_float64():
    rng = np.random.default_rng(0)
    for rank in (None, 5):  # full rank and singular
        m = random_psd(rng, 12, rank)
        root = frechet.sqrtm_psd(m)
        np.testing.assert_allclose(root @ root, m, atol=1e-12)
        if rank is None:
            np.testing.assert_allclose(root, scipy.linalg.sqrtm(m).real, atol=1e-12)


def test_frechet_distance_of_exact_gaussian_moments_matches_closed_forms():
    rng = np.random.default_rng(1)
    d = 6
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    # Commuting (diagonal) covariances: |m1 - m2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet.frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # General covariances: the textbook formula with scipy's sqrtm of the product.
    c1, c2 = random_psd(rng, d), random_psd(rng, d)
    textbook = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert frechet.frechet_distance(m1, c1, m2, c2) == pytest.approx(textbook, rel=1e-10)
    # Isotropic scale: N(0, s^2 I) vs N(0, t^2 I) is d (s - t)^2.
    assert frechet.frechet_distance(m1, 4 * np.eye(d), m1, np.eye(d)) == pytest.approx(d * 1.0, rel=1e-12)


def test_fid_is_zero_for_identical_sets_and_symmetric():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 8)), rng.normal(1.0, 2.0, size=(50, 8))
    assert abs(frechet.fid(x, x)) < 1e-10
    assert frechet.fid(x, y) == pytest.approx(frechet.fid(y, x), rel=1e-10)
    assert frechet.fid(x, y) > 1.0


def test_moments_match_numpy_and_warn_when_singular():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 5))
    mean, cov = frechet.gaussian_moments(x)
    np.testing.assert_allclose(mean, x.mean(0))
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), atol=1e-14)
    with pytest.warns(frechet.SingularCovarianceWarning, match="singular.*rank <= 9"):
        _, cov = frechet.gaussian_moments(rng.normal(size=(10, 20)))
    # Singular but exact: FID of a set with itself is still 0, and positive against another.
    few = rng.normal(size=(10, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", frechet.SingularCovarianceWarning)
        assert abs(frechet.fid(few, few)) < 1e-9
        assert frechet.fid(few, few + 1.0) == pytest.approx(20.0, rel=1e-9)  # a pure mean shift


def test_moments_reject_bad_features():
    with pytest.raises(ConfigError, match="NaN"):
        frechet.gaussian_moments(np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]))
    with pytest.raises(ConfigError, match="number of feature vectors"):
        frechet.gaussian_moments(np.zeros((1, 3)))
    with pytest.raises(ConfigError, match="means' shapes"):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- KID -----------------------------------------------------------------------------------

def brute_mmd2(x, y):
    """Unbiased polynomial-kernel MMD^2 by explicit loops in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_on_whole_sets_equals_brute_force_mmd():
    rng = np.random.default_rng(4)
    x, y = rng.uniform(0, 1, size=(7, 5)), rng.uniform(0.2, 1.2, size=(7, 5))
    result = kernel_distance.kid(x, y, num_subsets=3, subset_size=100)
    assert result.subset_size == 7
    assert result.mean == pytest.approx(brute_mmd2(x, y), rel=1e-5)


def test_kid_subsets_are_unbiased_for_the_whole_set_statistic():
    """The mean of MMD^2_u over every pair of size-m subsets is the whole-set MMD^2_u."""
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 1, size=(5, 3)), rng.uniform(0.3, 1.3, size=(5, 3))
    pairs = list(itertools.product(itertools.combinations(range(5), 3), repeat=2))
    values = [float(kernel_distance.mmd2_unbiased(x[list(a)].astype(np.float32), y[list(b)].astype(np.float32)))
              for a, b in pairs]
    assert np.mean(values) == pytest.approx(brute_mmd2(x, y), rel=1e-5)
    values_64 = [brute_mmd2(x[list(a)], y[list(b)]) for a, b in pairs]
    np.testing.assert_allclose(values, values_64, rtol=1e-4, atol=1e-7)


def test_kid_of_one_distribution_is_zero_within_its_error_and_deterministic():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(60, 16)), rng.normal(size=(60, 16))
    result = kernel_distance.kid(x, y, num_subsets=50, subset_size=30, seed=1)
    assert abs(result.mean) < 3 * result.stderr + 1e-6
    assert result.stderr == pytest.approx(result.std / np.sqrt(50))
    assert kernel_distance.kid(x, y, num_subsets=50, subset_size=30, seed=1) == result
    shifted = kernel_distance.kid(x, y + 1.0, num_subsets=50, subset_size=30, seed=1)
    assert shifted.mean > 10 * shifted.stderr


# --- precision / recall --------------------------------------------------------------------

def on_axis(values, d=16):
    """Points at integer positions along the first axis of R^d (exact in float32)."""
    points = np.zeros((len(values), d), np.float32)
    points[:, 0] = values
    return points


def test_precision_recall_on_points_on_a_line():
    # Real 0..9: k = 3 radii 3 at both ends, 2 inside. Generated {0..3, 50..53}: radii 3, 2, 2, 3.
    real, generated = on_axis(range(10)), on_axis([0, 1, 2, 3, 50, 51, 52, 53])
    np.testing.assert_array_equal(manifold.knn_radii(real), [3, 2, 2, 2, 2, 2, 2, 2, 2, 3])
    precision, recall = manifold.precision_recall(real, generated)
    assert precision == 0.5  # 0..3 lie in the real balls, 50..53 nowhere near
    assert recall == 0.7  # generated balls [-3, 3], [-1, 3], [0, 4], [0, 6] hold 0..6 (6 on the border)


def test_precision_recall_decides_borders_exactly_when_the_expansion_cannot(monkeypatch):
    """A far cluster pulls the centre away, so the matmul expansion's error bound covers the
    queries' margins; the float64 host check decides them: distance 3 = radius 3 of point 9 is
    inside (the ball is closed), 3 + 1/64 is outside."""
    far = np.zeros((4, 16), np.float32)
    far[:, 1] = 1e4 + np.arange(4)
    real = np.concatenate([on_axis(range(10)), far])
    queries = on_axis([12.0, 12.015625])
    calls = []
    exact = manifold._exact_margins
    monkeypatch.setattr(manifold, "_exact_margins", lambda *a: calls.append(len(a[0])) or exact(*a))
    np.testing.assert_array_equal(manifold.inside_manifold(queries, real, manifold.knn_radii(real)), [True, False])
    assert calls == [2]


def test_precision_recall_of_a_set_with_itself_is_one():
    x = np.random.default_rng(7).normal(size=(50, 8)).astype(np.float32)
    assert manifold.precision_recall(x, x) == (1.0, 1.0)


# --- the network's input ------------------------------------------------------------------

def test_resize_samples_coordinate_j_times_in_over_out():
    """Resizing a ramp x[p] = p gives the sampled coordinate: j * in / out, clamped at in - 1."""
    for size in (8, 28, 32):
        ramp = np.tile(np.arange(size, dtype=np.float32), (1, size, 1))[..., None]  # [1, size, size, 1]
        out = np.asarray(resize.resize_bilinear(ramp))[0, 0, :, 0]
        exact = np.minimum(np.arange(299) * size / 299, size - 1)
        np.testing.assert_allclose(out, exact, atol=1e-5)
        np.testing.assert_allclose(resize.interpolation_matrix(size, 299).sum(1), 1.0, atol=1e-6)
    image = np.random.default_rng(8).uniform(0, 255, (1, 299, 299, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(resize.resize_bilinear(image)), image)


def test_to_uint8_follows_the_edm_png_convention_and_checks_input():
    x = np.array([-1.0, -1.5, 0.0, 0.999, 1.0, 2.0], np.float32).reshape(1, 1, 6, 1)
    np.testing.assert_array_equal(to_uint8(x).ravel(), [0, 0, 128, 255, 255, 255])
    with pytest.raises(ConfigError, match="NaN"):
        to_uint8(np.full((1, 2, 2, 1), np.nan))
    with pytest.raises(ConfigError, match="images.dtype"):
        check_uint8_images(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ConfigError, match=r"images.shape.*C = 1 \(grey\) or 3"):
        check_uint8_images(np.zeros((2, 8, 8, 2), np.uint8))
    with pytest.raises(ConfigError, match="images.shape"):
        check_uint8_images(np.zeros((8, 8, 3), np.uint8))


# --- weight files (no torch needed) ------------------------------------------------------

def test_missing_corrupt_or_foreign_weight_files_name_the_command(tmp_path):
    from flax import serialization

    with pytest.raises(ConfigError, match="not found.*launch/convert_inception.py"):
        weights.load(str(tmp_path / "absent.msgpack"))
    corrupt = tmp_path / "corrupt.msgpack"
    corrupt.write_bytes(b"\x93\x01\x02")  # a truncated msgpack array
    with pytest.raises(ConfigError, match="(corrupt|no parameter tree).*launch/convert_inception.py"):
        weights.load(str(corrupt))
    foreign = tmp_path / "foreign.msgpack"
    foreign.write_bytes(serialization.msgpack_serialize({"conv": {"kernel": np.zeros((3, 3), np.float32)}}))
    with pytest.raises(ConfigError, match="lacks parameters.*not the FID Inception"):
        weights.load(str(foreign))


def test_torch_state_dict_mapping_checks_every_tensor():
    shapes = weights.expected_shapes()
    assert len(shapes) == 376  # 94 convolutions x (kernel, beta, mean, var), as the TorchScript graph
    state = {}
    for path, shape in shapes.items():
        name = {"kernel": "weight"}.get(path[-1], path[-1])
        torch_shape = (shape[3], shape[2], shape[0], shape[1]) if name == "weight" else shape
        state["net.layers." + ".".join((*path[:-1], name))] = np.zeros(torch_shape, np.float32)
    tree = weights.torch_to_flax(state)
    assert tree["mixed_4"]["tower_1"]["conv_3"]["kernel"].shape == (7, 1, 128, 128)
    del state["net.layers.mixed_10.tower_2_conv.var"]
    with pytest.raises(ConfigError, match="lacks parameters.*mixed_10/tower_2_conv/var"):
        weights.torch_to_flax(state)


# --- launch/sample_quality.py's inputs ------------------------------------------------------------

def test_sample_files_are_read_in_jaxmem_conventions_and_bad_ones_refused(tmp_path):
    from jaxmem.experiments.sample_quality import load_samples

    path = str(tmp_path / "s.npz")
    np.savez(path, samples=np.array([[-1.5, -1.0], [0.0, 1.0]], np.float32)[None])  # [1, 2, 2] floats
    np.testing.assert_array_equal(load_samples(path)[0, ..., 0], [[0, 0], [128, 255]])  # overshoot saturates
    np.savez(path, images=np.full((2, 4, 4, 3), 7, np.int64))
    assert load_samples(path).dtype == np.uint8 and load_samples(path).shape == (2, 4, 4, 3)
    np.savez(path, samples=np.full((2, 4, 4), 0.5, np.float32), pixel_range=[0.0, 1.0])
    assert np.all(load_samples(path) == 128)
    refused = [
        (dict(other=np.zeros((2, 4, 4))), r"one of \['samples', 'images'\]"),
        (dict(samples=np.zeros((2, 4, 4, 2), np.float32) - 0.5), "samples.shape"),
        (dict(samples=np.full((2, 4, 4), 0.5, np.float32)), "declare their range"),
        (dict(samples=np.full((2, 4, 4), 300, np.int64)), "0..255 for integer pixels"),
        (dict(samples=np.full((2, 4, 4), np.nan, np.float32)), "NaN"),
        (dict(samples=np.array(["a", "b"])), "uint8 or floats"),
        (dict(samples=np.zeros((0, 4, 4), np.int64)), "at least one non-empty image"),
    ]
    for arrays, message in refused:
        np.savez(path, **arrays)
        with pytest.raises(ConfigError, match=message):
            load_samples(path)


def test_quality_config_is_validated_before_any_image_is_read(tmp_path):
    from jaxmem.config import load_config
    from jaxmem.experiments.sample_quality import validate_config

    config = load_config("configs/sample_quality.py:smoke")
    with pytest.raises(ConfigError, match="samples.path"):
        validate_config(config)
    path = tmp_path / "s.npz"
    np.savez(path, samples=np.zeros((2, 8, 8), np.float32))
    config.samples.path = str(path)
    config.metrics.kid_subset_size = 1
    with pytest.raises(ConfigError, match="metrics.kid_subset_size"):
        validate_config(config)
    config.metrics.kid_subset_size = 32
    config.metrics.weights = str(tmp_path / "absent.msgpack")
    with pytest.raises(ConfigError, match="weights not found.*launch/convert_inception.py"):
        validate_config(config)

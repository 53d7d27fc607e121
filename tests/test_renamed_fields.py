"""Renamed config fields (jaxmem.config.RENAMED_FIELDS): records written under the old names still
resume, an old name in a config override fails naming the new one, and the fingerprints of the
families whose fields kept their names are byte-for-byte what they were."""

import json
import os

import pytest

from jaxmem import io
from jaxmem import workdir as ownership
from jaxmem.config import current_name, get_field, load_config
from jaxmem.experiments import edm_training, noise_regimes
from jaxmem.experiments.gmm_crossover import rounds
from jaxmem.validation import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Fingerprints the code wrote before the renames (commit e4998c5), for the smoke presets.
OLD_EDM_RECIPE = (
    '{"data": {"data_dir": null, "dataset": "digits", "num_train": 32, "path": null, "split": "train", '
    '"subset_seed": 0, "xflip": false}, "model": {"attn_heads": 1, "attn_resolutions": [4], "channel_mult": [1, 2], '
    '"channels": 16, "dropout": 0.0, "dtype": "float32", "embed_dim": 32, "image_size": 8, "in_channels": 1, '
    '"label_dim": 0, "label_dropout": 0.0, "noise_features": 16, "num_blocks": 1, "sigma_data": 0.5}, '
    '"optim": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-08, "lr": 0.001, "warmup_images": 0}, "preset": "smoke", '
    '"seed": 0, "training": {"async_checkpoints": true, "batch_size": 16, "checkpoint_every_seconds": 0.0, '
    '"checkpoint_every_steps": 3, "ema_half_life_images": 500, "ema_rampup_ratio": 0.05, "keep_checkpoints": 3, '
    '"log_every_steps": 2, "loss_window": [], "loss_window_weight": 1.0, "p_mean": -1.2, "p_std": 1.2, '
    '"power_ema_sigma_rels": [0.05, 0.1], "snapshot_every_steps": 2, "total_images": 96}}')
OLD_NOISE_REGIMES = (
    '{"concentration": {"draws": 2, "num_points": 30}, "coverage": {"c": 5.0, "draws": 2, "num_points": 30}, '
    '"data": {"data_dir": "", "dataset": "digits", "heldout_split": "", "n_heldout": 60, "n_train": 120, "path": ""}, '
    '"grid": {"num_sigmas": 12, "sigma_max": 80.0, "sigma_min": 0.002}, "mse": {"draws": 2, "num_points": 16}, '
    '"seed": 0}')
GMM_SMOKE_GRID = (
    '{"data": {"model": "isotropic", "num_components": [2], "num_val": 16, "train_sizes": [8, 12], "variance": 1.0}, '
    '"dim": 6, "eval": {"crossover_points": 6, "delta": 0.1, "noise_draws": 2, "weightings": ["x0", "eps"]}, '
    '"model": {"capacity_fractions": [0.25, 0.5, 1.0], "init": "partial", "init_variance": 1e-06, "num_seeds": 1, '
    '"search": "grid", "search_points": 4, "search_span": 0.25, "search_weighting": "x0"}, '
    '"sampling": {"num_samples": 8, "num_steps": 5}, "seed": 0, "training": {"batch_size": 0, "chunk_steps": 10, '
    '"custom_weights": [], "estimator": "stratified", "final_lr": 1e-06, "grid_per_train_size": false, '
    '"noise_draws": 4, "num_times": 26, "peak_lr": 0.001, "point_block": 0, "steps": 20, "t_max": 0.999, '
    '"t_min": 0.001, "warmup_fraction": 0.1, "weighting": "eps"}}')
GMM_CURVE_GRID = (
    '{"data": {"model": "isotropic", "num_components": [12], "num_val": 200, "train_sizes": [50, 100, 150, 200, '
    '300, 400], "variance": 1.0}, "dim": 50, "eval": {"crossover_points": 50, "delta": 0.1, "noise_draws": 10, '
    '"weightings": ["x0", "eps"]}, "model": {"capacity_fractions": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, '
    '1.0], "init": "partial", "init_variance": 1e-06, "num_seeds": 3, "search": "adaptive", "search_points": 3, '
    '"search_span": 0.25, "search_weighting": "x0"}, "sampling": {"num_samples": 50, "num_steps": 25}, "seed": 0, '
    '"training": {"adam_b2": 0.9, "batch_size": 0, "chunk_steps": 1000, "custom_weights": [], "estimator": '
    '"stratified", "final_lr": 1e-06, "grid_per_train_size": true, "noise_draws": 4, "num_times": 26, "peak_lr": '
    '0.01, "point_block": 0, "steps": 3000, "t_max": 0.999, "t_min": 0.001, "warmup_fraction": 0.1, "weighting": '
    '"eps"}}')


def test_old_names_map_to_new_ones_also_inside_a_group_holding_a_whole_config():
    assert current_name("optim.lr") == "optim.peak_lr"
    assert current_name("model.optim.beta2") == "model.optim.adam_b2"  # posthoc_ema's model group
    assert current_name("memorizing.optim.eps") == "memorizing.optim.adam_eps"  # denoiser_swaps
    assert current_name("data.n_heldout") == "data.num_heldout"
    assert current_name("data.num_images") == "data.num_reference"
    assert current_name("training.peak_lr") == "training.peak_lr"  # kept names stay
    assert current_name("optim.peak_lr") == "optim.peak_lr"


@pytest.mark.parametrize("spec, fingerprint, old_record", [
    ("configs/edm_training.py:smoke", edm_training.recipe_fingerprint, OLD_EDM_RECIPE),
    ("configs/noise_regimes.py:smoke", noise_regimes.fingerprint, OLD_NOISE_REGIMES),
])
def test_a_workdir_fingerprinted_under_the_old_names_resumes(spec, fingerprint, old_record, tmp_path):
    config = load_config(os.path.join(REPO, spec))
    path = tmp_path / "fingerprint.json"
    path.write_text(old_record + "\n")
    assert io.check_fingerprint(str(path), fingerprint(config), "results of another config")
    assert path.read_text() == old_record + "\n"  # the record stays as written
    # A changed value is still refused, named by its new name.
    changed = "optim.peak_lr" if "optim" in config else "data.num_heldout"
    group, field = changed.split(".")
    config[group][field] *= 2
    with pytest.raises(ConfigError, match=rf"fields that differ: {changed}\)"):
        io.check_fingerprint(str(path), fingerprint(config), "results of another config")


def test_a_finished_run_recorded_under_the_old_names_counts_as_done_and_its_folder_is_adopted(tmp_path):
    config = load_config(os.path.join(REPO, "configs/posthoc_ema.py:smoke"))
    record = json.loads(io.config_json(config))
    optim = record["model"]["optim"]
    record["model"]["optim"] = dict(lr=optim["peak_lr"], beta1=optim["adam_b1"], beta2=optim["adam_b2"],
                                    eps=optim["adam_eps"], warmup_images=optim["warmup_images"])
    assert io.differing_fields(record, json.loads(io.config_json(config))) == []
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert ownership.recorded_fields_of(config)(str(tmp_path))


@pytest.mark.parametrize("spec, old, new", [
    ("configs/edm_training.py:smoke", "optim.lr", "optim.peak_lr"),
    ("configs/posthoc_ema.py:smoke", "model.optim.beta2", "model.optim.adam_b2"),
    ("configs/noise_regimes.py:smoke", "data.n_train", "data.num_train"),
    ("configs/sample_quality.py:smoke", "data.num_images", "data.num_reference"),
])
def test_an_old_name_fails_naming_the_new_one(spec, old, new):
    config = load_config(os.path.join(REPO, spec))
    with pytest.raises(ConfigError, match=rf"^config field '{old}' was renamed '{new}'; write '{new}' instead$"):
        get_field(config, old)
    get_field(config, new)
    # In a family without the renamed field, an old name is just unknown.
    with pytest.raises(ConfigError, match="unknown config field 'optim.lr'"):
        get_field(load_config(os.path.join(REPO, "configs/gmm_crossover.py:smoke")), "optim.lr")


@pytest.mark.parametrize("preset, expected", [("smoke", GMM_SMOKE_GRID), ("curve", GMM_CURVE_GRID)])
def test_gmm_grid_fingerprints_are_unchanged(preset, expected):
    """gmm_crossover kept its field names, so every finished grid under runs/ is reused as it is."""
    config = load_config(os.path.join(REPO, f"configs/gmm_crossover.py:{preset}"))
    assert rounds._grid_fingerprint(config, config.data.dims[0], config.data.train_sizes) == expected

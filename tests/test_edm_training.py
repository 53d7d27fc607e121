"""The sharded EDM training loop: learning, 1- vs 8-device agreement, exact resume, checkpoint
fallback, the resumable input pipeline, and the end-to-end experiment."""

import json
import os
import shutil
import signal
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxmem import sampling
from jaxmem.config import load_config
from jaxmem.data.pipeline import Position, ShuffledBatches
from jaxmem.experiments import edm_training as edm_experiment
from jaxmem.train import trainer
from jaxmem.train.checkpoint import Checkpointer, agree_any

STEPS = 40
BATCH = 16


def tiny_config(steps: int = STEPS):
    """The smoke preset with the smallest U-Net (one level, 8 channels): seconds to compile."""
    config = load_config("configs/edm_training.py:smoke")
    config.model.update(channels=8, channel_mult=(1,), num_blocks=1, attn_resolutions=(), noise_features=8,
                        embed_dim=16)
    config.training.update(batch_size=BATCH, total_images=steps * BATCH, checkpoint_every_steps=10,
                           keep_checkpoints=3, log_every_steps=10)
    config.optim.peak_lr = 2e-3
    return config


@pytest.fixture(scope="module")
def data():
    return edm_experiment.load_training_set(tiny_config())[0]


def _train(config, workdir, data, devices=None, on_step=None):
    losses = []

    def record(step, metrics):
        losses.append(float(metrics["loss"]))
        if on_step is not None:
            on_step(step, metrics)

    return trainer.train(config, str(workdir), data, devices=devices, on_step=record), np.array(losses)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """An uninterrupted 8-device run: (workdir, result, per-step losses)."""
    workdir = tmp_path_factory.mktemp("reference")
    result, losses = _train(tiny_config(), workdir, data)
    return workdir, result, losses


def _params(result):
    return jax.tree_util.tree_leaves(jax.device_get((result.state.params, result.state.ema_params)))


def _assert_same_params(a, b, atol=1e-6):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


@pytest.mark.slow
def test_loss_decreases_and_metrics_are_logged(reference):
    workdir, result, losses = reference
    assert len(losses) == STEPS and np.all(np.isfinite(losses))
    assert losses[-10:].mean() < 0.85 * losses[:10].mean()
    assert int(result.state.step) == STEPS and int(result.state.skipped) == 0 and not result.preempted
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert {"loss", "grad_norm", "images_per_s", "eta_s", "skipped_total"} <= set(records[-1])
    np.testing.assert_allclose(records[-1]["loss"], losses[-10:].mean(), rtol=1e-5)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["20", "30", "40"]  # keep-last-3


@pytest.mark.slow
def test_one_device_gives_the_same_loss_trajectory(tmp_path, data, reference):
    _, _, sharded = reference
    _, single = _train(tiny_config(), tmp_path, data, devices=jax.devices()[:1])
    np.testing.assert_allclose(single, sharded, rtol=2e-4)


@pytest.mark.slow
def test_sigterm_saves_and_the_resumed_run_matches_the_uninterrupted_one(tmp_path, data, reference):
    def preempt(step, metrics):
        if step == 13:
            os.kill(os.getpid(), signal.SIGTERM)

    first, _ = _train(tiny_config(), tmp_path, data, on_step=preempt)
    assert first.preempted and int(first.state.step) == 13
    assert "13" in os.listdir(tmp_path / "checkpoints")
    resumed, losses = _train(tiny_config(), tmp_path, data)
    assert resumed.resumed_from == 13 and resumed.position == reference[1].position
    _assert_same_params(resumed, reference[1])
    np.testing.assert_allclose(losses, reference[2][13:], rtol=1e-5)


@pytest.mark.slow
def test_corrupt_latest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, data, reference):
    shutil.copytree(reference[0] / "checkpoints", tmp_path / "checkpoints")
    for root, _, files in os.walk(tmp_path / "checkpoints" / "40" / "state"):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"not a checkpoint")
    result, _ = _train(tiny_config(), tmp_path, data)
    assert [step for step, _ in result.rejected] == [40] and result.resumed_from == 30
    assert os.path.isdir(tmp_path / "checkpoints.rejected" / "40")
    _assert_same_params(result, reference[1])


def test_pipeline_is_deterministic_resumable_and_split_over_hosts(data):
    batches = ShuffledBatches(data, 24, seed=5, xflip=True, process_index=0, process_count=1)
    indices, flips, after = batches.global_indices(Position(0, 20))
    assert after == Position(1, 12)  # 12 left in epoch 0 (32 images), 12 taken from epoch 1
    order0, _ = batches.epoch_order(0)
    order1, _ = batches.epoch_order(1)
    np.testing.assert_array_equal(indices, np.concatenate([order0[20:], order1[:12]]))
    assert sorted(order0) == list(range(len(data))) and not np.array_equal(order0, order1)
    assert 0 < flips.sum() < 24
    full, _ = batches.local_batch(Position(0, 20))
    np.testing.assert_array_equal(full["images"][flips], data.images[indices[flips]][:, :, ::-1])
    hosts = [ShuffledBatches(data, 24, seed=5, xflip=True, process_index=p, process_count=3).local_batch(
        Position(0, 20))[0]["images"] for p in range(3)]
    np.testing.assert_array_equal(np.concatenate(hosts), full["images"])


@pytest.mark.slow
def test_experiment_trains_samples_and_measures_memorization(tmp_path):
    config = tiny_config(steps=4)
    config.sampling.update(num_samples=8, num_steps=4, batch_size=8)
    summary = edm_experiment.run(config, str(tmp_path))
    assert summary["steps"] == 4 and summary["num_train"] == 32 and 0.0 <= summary["memorization_rate"] <= 1.0
    with np.load(tmp_path / "samples.npz") as f:
        assert f["samples"].shape == (8, 8, 8, 1) and np.all(np.isfinite(f["samples"]))
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert json.loads((tmp_path / "summary.json").read_text())["parameters"] == summary["parameters"]
    compiled_before = sampling._generate_programs.cache_info()
    assert edm_experiment.run(config, str(tmp_path))["resumed_from"] == 4  # rerun: nothing left to train
    compiled_after = sampling._generate_programs.cache_info()
    assert compiled_after.hits == compiled_before.hits + 1 and compiled_after.misses == compiled_before.misses


def test_checkpoint_interval_in_steps_and_seconds(tmp_path):
    by_steps = Checkpointer(str(tmp_path / "a"), every_steps=5)
    assert [s for s in range(1, 16) if by_steps.due(s)] == [5, 10, 15]
    by_time = Checkpointer(str(tmp_path / "b"), every_seconds=0.2)
    assert not by_time.due(1)
    time.sleep(0.25)
    assert by_time.due(2) and by_time.time_due()
    assert not by_time.due(3, time_due=False) and by_steps.due(5, time_due=False)  # the loop's agreed flag wins
    assert agree_any(True) is True and agree_any(False, True) == (False, True)  # one process: identity
    by_steps.close()
    by_time.close()


def test_cifar10_presets_read_tfds_and_fit_the_network():
    with tfds.testing.mock_data(num_examples=1200):  # random 32x32x3 images, no download
        config = load_config("configs/edm_training.py:cifar10_1k")
        data, indices = edm_experiment.load_training_set(config)
    assert data.images.shape == (1000, 32, 32, 3) and len(np.unique(indices)) == 1000
    assert -1.0 <= data.images.min() and data.images.max() <= 1.0
    edm_experiment.check_image_shape(data.shape, config.model)

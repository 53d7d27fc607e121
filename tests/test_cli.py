"""The launcher contract shared by launch/*.py: presets, overrides, workdir."""

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

from jaxmem.config import load_config
from jaxmem.experiments import edm_training
from jaxmem.train import Preempted

CONFIG = textwrap.dedent("""
    import ml_collections
    from jaxmem.config import select_preset

    def _tiny():
        return ml_collections.ConfigDict({"training": {"steps": 3}, "seed": 0})

    def get_config(arg=None):
        return select_preset(arg, {"tiny": _tiny, "other": _tiny})
""")

LAUNCHER = textwrap.dedent("""
    import os
    from jaxmem import io
    from jaxmem.cli import run_main
    from jaxmem.train import Preempted

    def run(config, workdir):
        if config.seed < 0:
            raise ValueError("this workdir holds results of another config")
        if config.training.steps == 0:
            raise Preempted("stopped by SIGTERM after saving a checkpoint")
        io.write_json(os.path.join(workdir, "result.json"), {"steps": config.training.steps})

    if __name__ == "__main__":
        run_main(run, default_workdir="unused")
""")


def _launch(tmp_path, *args):
    (tmp_path / "cfg.py").write_text(CONFIG)
    (tmp_path / "launch.py").write_text(LAUNCHER)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(tmp_path / "launch.py"), *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)


def test_run_writes_resolved_config_and_results(tmp_path):
    out = _launch(tmp_path, "--config=cfg.py:tiny", "--config.training.steps=7", "--workdir=wd")
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "wd" / "config.json").read_text())
    assert config["training"]["steps"] == 7 and config["preset"] == "tiny"
    assert json.loads((tmp_path / "wd" / "result.json").read_text()) == {"steps": 7}


def test_unknown_preset_lists_valid_ones(tmp_path):
    out = _launch(tmp_path, "--config=cfg.py:huge", "--workdir=wd")
    assert out.returncode != 0
    assert "unknown config preset 'huge'; valid presets: other, tiny" in out.stderr
    assert not (tmp_path / "wd").exists()


def test_misspelled_override_fails(tmp_path):
    out = _launch(tmp_path, "--config=cfg.py:tiny", "--config.training.stepz=7", "--workdir=wd")
    assert out.returncode != 0
    assert "stepz" in out.stderr and "steps" in out.stderr  # names the bad field and the valid one
    assert not (tmp_path / "wd").exists()


def test_rejected_rerun_keeps_the_recorded_config(tmp_path):
    assert _launch(tmp_path, "--config=cfg.py:tiny", "--workdir=wd").returncode == 0
    recorded = (tmp_path / "wd" / "config.json").read_text()
    out = _launch(tmp_path, "--config=cfg.py:tiny", "--config.seed=-1", "--workdir=wd")
    assert out.returncode != 0 and "another config" in out.stderr
    assert (tmp_path / "wd" / "config.json").read_text() == recorded
    assert _launch(tmp_path, "--config=cfg.py:tiny", "--config.training.steps=9", "--workdir=wd").returncode == 0
    assert json.loads((tmp_path / "wd" / "config.json").read_text())["training"]["steps"] == 9


def test_a_preempted_run_exits_143_for_the_scheduler(tmp_path):
    out = _launch(tmp_path, "--config=cfg.py:tiny", "--config.training.steps=0", "--workdir=wd")
    assert out.returncode == 143 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "stopped by SIGTERM after saving a checkpoint" in out.stderr


def test_edm_training_raises_preempted_when_the_trainer_stopped_on_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr(edm_training.trainer, "train", lambda config, workdir, data: types.SimpleNamespace(
        preempted=True))
    with pytest.raises(Preempted, match="same command resumes"):
        edm_training.train_model(load_config("configs/edm_training.py:smoke"), str(tmp_path))


def test_a_batch_larger_than_the_training_set_is_warned_about_once(tmp_path, monkeypatch, caplog):
    """The config is checked at the door (validate_config) only; training the model checks it no more."""
    config = load_config("configs/edm_training.py:smoke")
    config.training.batch_size = 64  # the smoke preset trains on 32 images
    monkeypatch.setattr(edm_training.trainer, "train", lambda config, workdir, data: types.SimpleNamespace(
        preempted=False))
    edm_training.validate_config(config)
    edm_training.train_model(config, str(tmp_path))
    assert sum("larger than the training set" in r.getMessage() for r in caplog.records) == 1

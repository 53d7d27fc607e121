"""What a new user meets first: one-line errors with exit code 2 and no traceback,
the whole config validated before any work, .npz data checked, --help and --dry_run that can
be read and pasted. The launchers run in subprocesses on the tiny smoke presets."""

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from jaxmem.config import get_field, load_config
from jaxmem.validation import ConfigError
from jaxmem.data import load_images

from conftest import REPO


def _launch(launcher, *args, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(REPO, "launch", launcher), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def _assert_clean_error(out, *fragments):
    """Exit 2, no traceback, and an `error:` line that holds every fragment."""
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    error = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in error[0], (fragment, error[0])


def _edm(preset="smoke"):
    return f"--config={REPO}/configs/edm_training.py:{preset}"


@pytest.mark.slow
def test_command_line_and_config_errors_are_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    workdir = f"--workdir={tmp_path / 'wd'}"
    cases = [
        ([_edm(), "--config.training.stesp=10", workdir],
         ["unknown config field 'training.stesp'", "batch_size", "total_images"]),
        ([_edm(), "--config.optim.lr=0.002", workdir], ["'optim.lr' was renamed 'optim.peak_lr'"]),
        (["--config=configs/missing.py:smoke", workdir], ["configs/missing.py", "does not exist"]),
        ([_edm(), f"--workdir={tmp_path / 'a_file'}"], ["--workdir", "a_file", "not an existing file"]),
        ([_edm(), "--config.sampling.rho=0", workdir], ["sampling.rho = 0.0", "> 0"]),  # before training
        ([_edm(), "--config.data.path=x.npz", workdir], ["data.path = 'x.npz'", "data.dataset=npz"]),
    ]
    for args, fragments in cases:
        _assert_clean_error(_launch("edm_training.py", *args, cwd=tmp_path), *fragments)
    assert not (tmp_path / "wd").exists()  # nothing ran, nothing was written
    out = _launch("denoiser_swaps.py", f"--config={REPO}/configs/denoiser_swaps.py:smoke", "--config.generalizing.sampling.rho=-1",
                  workdir, cwd=tmp_path)
    _assert_clean_error(out, "in generalizing: sampling.rho = -1.0")


def test_bad_npz_data_fails_cleanly_in_the_launcher(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "unit.npz", images=rng.random((200, 8, 8)).astype(np.float32))
    np.savez(tmp_path / "labels.npz", images=rng.integers(0, 256, (200, 8, 8), np.uint8),
             labels=np.full(200, 0.7))
    geometry = [f"--config={REPO}/configs/noise_regimes.py:smoke", "--config.data.dataset=npz"]
    for name, fragments in (("unit.npz", ["unit.npz", "pixel_range=[0, 1]"]),
                            ("labels.npz", ["labels.npz labels = [0.7", "integer class indices"])):
        out = _launch("noise_regimes.py", *geometry, f"--config.data.path={tmp_path / name}",
                      f"--workdir={tmp_path / name}.run", cwd=tmp_path)
        _assert_clean_error(out, *fragments)
        assert not (tmp_path / f"{name}.run" / "fingerprint.json").exists()  # a fixed rerun is not refused


def test_npz_files_are_checked_and_declared_ranges_rescaled(tmp_path):
    def save(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return str(tmp_path / name)

    unit = np.linspace(0, 1, 2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    rescaled = load_images("npz", path=save("declared.npz", images=unit, pixel_range=[0, 1]))
    np.testing.assert_allclose(rescaled.images[..., 0], unit * 2 - 1, atol=1e-6)
    signed = load_images("npz", path=save("signed.npz", images=unit, pixel_range=[-1, 1]))
    np.testing.assert_allclose(signed.images[..., 0], unit, atol=1e-6)
    assert load_images("npz", path=save("whole.npz", images=unit * 2 - 1, labels=[1.0, 2.0])).labels.tolist() == [1, 2]
    (tmp_path / "text.npz").write_text("not an archive")
    bad = {
        save("strings.npz", images=np.array([["a", "b"]])): "dtype <U1",
        save("objects.npz", images=np.array([np.zeros(2), np.zeros(3)], dtype=object)): "dtype object",
        str(tmp_path / "text.npz"): "not an .npz archive",
        save("negative.npz", images=unit * 2 - 1, labels=[-1, 0]): "integer class indices >= 0",
        save("outside.npz", images=unit * 300, pixel_range=[0, 255]): "within the pixel range [0, 255]",
        save("no_images.npz", pixels=unit): "'images' array",
    }
    for path, message in bad.items():
        with pytest.raises(ConfigError, match=re.escape(message)) as error:
            load_images("npz", path=path)
        assert "pickle" not in str(error.value)
    # The library names its own arguments; the config's data.path is named at the door (check_source).
    with pytest.raises(ValueError, match="path = .* is read only by dataset 'npz', not 'digits'"):
        load_images("digits", path=str(tmp_path / "declared.npz"))


def test_misspelled_field_gets_the_closest_spelling():
    config = load_config(f"{REPO}/configs/edm_training.py:smoke")
    with pytest.raises(ConfigError, match=r"did you mean 'training.batch_size'\? \(training has the fields: "):
        get_field(config, "training.batch_sise")
    with pytest.raises(ConfigError, match="is a group, not a value"):
        get_field(config, "sampling")


def test_help_lists_presets_and_fields(tmp_path):
    out = _launch("edm_training.py", "--help", cwd=REPO)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "Presets of configs/edm_training.py" in out.stdout and "Fields of configs/edm_training.py:smoke" in out.stdout
    # every preset and group with the start of its description in configs/edm_training.py's docstring
    assert any(line.split()[:3] == ["smoke", "seconds", "on"] for line in lines)
    assert any(line.split()[:2] == ["crossover_mnist", "the"] for line in lines)
    assert any(line.strip().startswith("optim: peak_lr, adam_b1, adam_b2") for line in lines)
    assert any(line.strip().startswith("batch_size=16") and "rho=7.0" in line for line in lines)
    assert len(lines) < 50


def test_dry_run_commands_paste_into_bash(tmp_path):
    out = _launch("sweep.py", f"--config={REPO}/configs/gmm_crossover.py:smoke", "--sweep.data.train_sizes=(8,),(12,)",
                  "--config.training.steps=10", f"--workdir={tmp_path / 'sweep'}", "--dry_run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    commands = [line.strip() for line in out.stdout.splitlines() if line.startswith("    ")]
    assert len(commands) == 2
    for command, size in zip(commands, (8, 12)):
        words = subprocess.run(["bash", "-c", "printf '%s\\n' " + command.split(" ", 1)[1]], capture_output=True,
                               text=True, check=True).stdout.splitlines()
        assert f"--config.data.train_sizes=({size},)" in words and words == shlex.split(command)[1:]

"""Nothing lost: a launcher refuses another experiment's workdir or an unknown non-empty folder
before writing anything; memory is estimated and refused at the door; results are readable by
others; bad input is one `error:` line."""

import itertools
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from jaxmem import footprint, io
from jaxmem import workdir as ownership
from jaxmem.config import load_config
from jaxmem.metrics import weights

from conftest import REPO, first_in_fast_tier

# Every launcher that owns a workdir, with a config it accepts (the owner name is the launcher's).
LAUNCHERS = {
    "gmm_crossover": ["--config=configs/gmm_crossover.py:smoke"],
    "edm_training": ["--config=configs/edm_training.py:smoke"],
    "noise_regimes": ["--config=configs/noise_regimes.py:smoke"],
    "denoiser_swaps": ["--config=configs/denoiser_swaps.py:smoke"],
    "sweep": ["--config=configs/gmm_crossover.py:smoke", "--sweep.training.steps=10,20"],
}
QUALITY = ["--config=configs/sample_quality.py:smoke"]  # needs --config.samples.path; added per test
# launch/compile_check.py owns its workdir too; its validation needs the accelerator packages
# (.venv-accelerators), so it is covered by the owner matrix only.
OWNERS = [*LAUNCHERS, "sample_quality", "compile_check"]


def launch(name, *args, cwd=REPO):
    return subprocess.run([sys.executable, os.path.join(REPO, "launch", f"{name}.py"), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def one_error(out, code=2):
    """The launcher printed exactly one `error:` line, no traceback, and exited `code`."""
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == code and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return errors[0]


def snapshot(folder):
    """{relative path: contents} of every file under folder."""
    return {os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(folder) for name in names}


@pytest.mark.parametrize("owner, other", list(itertools.permutations(OWNERS, 2)))
def test_a_folder_owned_by_one_experiment_is_refused_to_every_other(tmp_path, owner, other):
    folder = str(tmp_path / "run")
    ownership.claim(folder, owner)
    io.write_text(os.path.join(folder, "summary.json"), "{}")
    with pytest.raises(ownership.ForeignWorkdir, match=f"belongs to a {owner} run"):
        ownership.claim(folder, other)
    assert ownership.owner_of(folder) == owner and ownership.check(folder, owner)


def test_unknown_content_is_refused_and_old_runs_of_the_same_experiment_are_adopted(tmp_path):
    config = load_config("configs/edm_training.py:smoke")
    adopt = ownership.recorded_fields_of(config)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("years of work")
    with pytest.raises(ownership.ForeignWorkdir, match="is not empty .thesis.tex."):
        ownership.claim(str(tmp_path / "notes"), "edm_training", adopt)
    old_edm = tmp_path / "old_edm"  # an edm run from before owner records: its config.json
    old_edm.mkdir()
    (old_edm / "config.json").write_text(io.config_json(config))
    ownership.claim(str(old_edm), "edm_training", adopt)
    assert ownership.owner_of(str(old_edm)) == "edm_training"
    old_crossover = tmp_path / "old_crossover"
    old_crossover.mkdir()
    (old_crossover / "config.json").write_text(io.config_json(load_config("configs/gmm_crossover.py:smoke")))
    with pytest.raises(ownership.ForeignWorkdir):
        ownership.claim(str(old_crossover), "edm_training", adopt)  # crossover fields are not edm fields
    (tmp_path / "only_lock").mkdir()
    (tmp_path / "only_lock" / ".lock").write_text("{}")
    assert ownership.check(str(tmp_path / "only_lock"), "edm_training") is False  # the lock is not content


@pytest.mark.parametrize("former, present", sorted(ownership.FORMER_NAMES.items()))
def test_a_workdir_recorded_under_a_launchers_former_name_is_the_same_experiments(tmp_path, former, present):
    folder = str(tmp_path / "run")
    io.write_text(os.path.join(folder, ownership.OWNER_FILE), json.dumps({"experiment": former}) + "\n")
    io.write_text(os.path.join(folder, "summary.json"), "{}")
    assert ownership.owner_of(folder) == present
    assert ownership.check(folder, present)  # resumable by the launcher's present name
    ownership.claim(folder, present)
    assert json.loads(open(os.path.join(folder, ownership.OWNER_FILE)).read())["experiment"] == former  # untouched
    other = "sweep"
    with pytest.raises(ownership.ForeignWorkdir, match=f"belongs to a {present} run.*launch/{present}.py"):
        ownership.claim(folder, other)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A finished run of a made-up experiment: every launcher must leave it untouched."""
    folder = tmp_path_factory.mktemp("foreign") / "run"
    ownership.claim(str(folder), "someone_else")
    for name in ("config.json", "config.txt", "summary.json"):
        io.write_text(str(folder / name), '{"mine": true}\n')
    return folder


@pytest.mark.parametrize("name", first_in_fast_tier([*LAUNCHERS, "sample_quality"]))
def test_every_launcher_refuses_a_foreign_workdir_before_writing(tmp_path, foreign, name):
    args = LAUNCHERS.get(name, QUALITY)
    if name == "sample_quality":
        if not os.path.exists(weights.default_weights_path()):
            pytest.skip("launch/sample_quality.py validates the FID Inception weights first (launch/convert_inception.py)")
        np.savez(tmp_path / "samples.npz", samples=np.zeros((4, 8, 8, 1), np.uint8))
        args = [*args, f"--config.samples.path={tmp_path / 'samples.npz'}"]
    before = snapshot(foreign)
    out = launch(name, *args, f"--workdir={foreign}")
    assert "belongs to a someone_else run" in one_error(out)
    assert snapshot(foreign) == before


def test_swap_refuses_a_model_folder_of_another_experiment(tmp_path, foreign):
    before = snapshot(foreign)
    out = launch("denoiser_swaps", *LAUNCHERS["denoiser_swaps"], f"--config.workdirs.memorizing={foreign}", f"--workdir={tmp_path / 'w'}")
    assert "belongs to a someone_else run" in one_error(out)
    assert snapshot(foreign) == before and not (tmp_path / "w").exists()


def test_a_run_that_cannot_fit_in_memory_is_refused_with_the_estimate(tmp_path):
    out = launch("gmm_crossover", *LAUNCHERS["gmm_crossover"], "--config.data.train_sizes=(100000000,)",
                 f"--workdir={tmp_path / 'big'}")
    line = one_error(out)
    assert "this run needs about" in line and "available" in line and "--nomemory_check" in line
    assert not (tmp_path / "big").exists()


def test_a_sweep_refuses_parallel_runs_that_fit_alone_but_not_together(tmp_path):
    config = load_config("configs/gmm_crossover.py:smoke")
    config.data.train_sizes, config.training.point_block = (20_000,), 1
    per_point = sum(footprint.crossover(config).values())
    config.training.point_block = 2
    per_point = sum(footprint.crossover(config).values()) - per_point  # bytes per point of the block
    block = int(footprint.available_bytes() / 3 / per_point)  # one run needs a third of the memory
    args = [*LAUNCHERS["gmm_crossover"], "--sweep.seed=0,1,2,3,4,5,6,7", "--config.data.train_sizes=(20000,)",
            f"--config.training.point_block={block}", f"--workdir={tmp_path / 'sweep'}"]
    line = one_error(launch("sweep", *args, "--parallel=8"))
    assert "8 runs' training block" in line and "--parallel=8" in line and "--nomemory_check" in line
    assert not (tmp_path / "sweep").exists()
    assert launch("sweep", *args, "--parallel=2", "--dry_run").returncode == 0  # two at once fit


def test_the_memory_check_compares_the_estimate_with_the_available_memory(monkeypatch):
    monkeypatch.setattr(footprint, "available_bytes", lambda: 2**30)
    monkeypatch.setattr(footprint, "device_bytes", lambda: None)
    footprint.require_fits({"data": 2**29, "training block": 2**28})
    with pytest.raises(footprint.TooLarge, match=r"needs about 1.50 GiB .*host has 1.00 GiB"):
        footprint.require_fits({"data": 2**30, "training block": 2**29})
    with footprint.checking(False):
        footprint.require_fits({"data": 2**40})  # --nomemory_check


def test_results_get_the_umask_mode_not_mkstemps_private_one(tmp_path):
    previous = os.umask(0o022)
    try:
        path = io.write_text(str(tmp_path / "table.csv"), "a\n")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(os.stat(io.write_text(str(tmp_path / "private.csv"), "a\n")).st_mode) == 0o600
    finally:
        os.umask(previous)

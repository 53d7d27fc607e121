"""Faults: one owner per workdir, sweep children that die with the driver and are
never launched twice, clean write failures, resume hygiene, refused changes of the recipe."""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmem import io, lock
from jaxmem.config import load_config
from jaxmem.validation import ConfigError
from jaxmem.experiments import edm_training
from jaxmem.train.checkpoint import Checkpointer, CheckpointWriteError

from conftest import REPO


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_lock_refuses_a_live_owner_takes_over_a_stale_one_and_is_released(tmp_path, caplog):
    workdir = str(tmp_path / "run")
    with lock.held(workdir):
        owner = json.loads((tmp_path / "run" / ".lock").read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(lock.WorkdirBusy, match=rf"in use by pid {os.getpid()} on host {socket.gethostname()}"):
            lock.acquire(workdir)
    assert not (tmp_path / "run" / ".lock").exists()

    stale = dict(pid=_dead_pid(), host=socket.gethostname(), started="then", command="launch/x.py")
    (tmp_path / "run" / ".lock").write_text(json.dumps(stale))
    assert lock.wait_until_free(workdir, timeout_s=0) is None  # the sweep sees a stale lock as free
    with caplog.at_level("WARNING"), lock.held(workdir):
        assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] == os.getpid()
    assert f"taking over the stale lock of pid {stale['pid']}" in caplog.text

    (tmp_path / "run" / ".lock").write_text(json.dumps(dict(stale, host="elsewhere")))
    with pytest.raises(lock.WorkdirBusy, match=r"cannot be checked from host .*remove .*\.lock and rerun"):
        lock.acquire(workdir)
    lock.release(workdir)  # not ours: left alone
    assert (tmp_path / "run" / ".lock").exists()


LAUNCHER = textwrap.dedent("""
    import os
    import time
    from jaxmem import io
    from jaxmem.cli import run_main

    def run(config, workdir):
        if config.size < 0:  # a long run, for the SIGTERM test
            io.write_text(os.path.join(workdir, "started"), "")
            time.sleep(120)
        io.write_text(os.path.join(workdir, "result.txt"), "x" * config.size)

    if __name__ == "__main__":
        run_main(run, default_workdir="unused")
""")
CONFIG = "import ml_collections\ndef get_config(arg=None):\n    return ml_collections.ConfigDict({'size': 10})\n"


def _launch(tmp_path, *args, file_limit=None):
    (tmp_path / "cfg.py").write_text(CONFIG)
    (tmp_path / "launch.py").write_text(LAUNCHER)
    limit = None if file_limit is None else (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit,) * 2))
    return subprocess.run([sys.executable, str(tmp_path / "launch.py"), "--config=cfg.py", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, preexec_fn=limit,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.slow
def test_a_second_launcher_on_a_busy_workdir_refuses_and_a_failed_write_is_one_line(tmp_path):
    with lock.held(str(tmp_path / "wd")):
        busy = _launch(tmp_path, "--workdir=wd")
    assert busy.returncode == 2
    assert busy.stderr.strip().splitlines()[-1].startswith(
        f"error: {tmp_path / 'wd'} is in use by pid {os.getpid()} on host {socket.gethostname()} since ")
    assert "Traceback" not in busy.stderr and not (tmp_path / "wd" / "result.txt").exists()

    full = _launch(tmp_path, "--workdir=wd", "--config.size=100000", file_limit=50_000)  # a full disk
    assert full.returncode == 1
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write {tmp_path / 'wd' / 'result.txt'}: File too large"]
    assert "Traceback" not in full.stderr and not (tmp_path / "wd" / ".lock").exists()


def test_sigterm_to_a_launcher_releases_its_workdir(tmp_path):
    (tmp_path / "cfg.py").write_text(CONFIG)
    (tmp_path / "launch.py").write_text(LAUNCHER)
    process = subprocess.Popen([sys.executable, str(tmp_path / "launch.py"), "--config=cfg.py", "--config.size=-1",
                                "--workdir=wd"], cwd=tmp_path, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (tmp_path / "wd" / "started").exists())
    assert (tmp_path / "wd" / ".lock").exists()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert not (tmp_path / "wd" / ".lock").exists() and "Traceback" not in stderr


def test_a_failed_checkpoint_write_names_the_step_and_keeps_the_last_good_one(tmp_path):
    state = {"w": np.random.default_rng(0).normal(size=20_000).astype(np.float32)}  # 80 kB, incompressible
    checkpointer = Checkpointer(str(tmp_path / "ck"), keep=2, with_position=False)
    for step in (1, 2, 3):
        checkpointer.save(step, state)
    checkpointer.close()
    checkpointer = Checkpointer(str(tmp_path / "ck"), keep=2, with_position=False)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, hard))  # a full disk: step 4 cannot be written
    try:
        checkpointer.save(4, {"w": state["w"] + 1})
        with pytest.raises(CheckpointWriteError) as error:
            checkpointer.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(error.value) == (f"checkpoint step 4 could not be written to {tmp_path / 'ck'}: File too large; "
                                "last good checkpoint: step 3 (intact)")
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    again = Checkpointer(str(tmp_path / "ck"), keep=2, with_position=False)
    restored = again.restore_latest(abstract, total_steps=4)
    again.close()
    assert restored.step == 3 and not again.rejected
    np.testing.assert_array_equal(restored.state["w"], state["w"])


def test_resume_drops_metrics_records_past_the_restored_step(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    io.append_jsonl(path, [{"step": s, "loss": float(s)} for s in (5, 10, 15)])
    with open(path, "a") as f:
        f.write('{"step": 20, "lo')  # torn by kill -9
    assert io.drop_records_after(path, 10) == 2
    assert [json.loads(line)["step"] for line in Path(path).read_text().splitlines()] == [5, 10]
    assert io.drop_records_after(str(tmp_path / "none.jsonl"), 0) == 0


@pytest.mark.slow
def test_a_changed_training_recipe_on_a_trained_edm_workdir_is_refused(tmp_path):
    config = load_config(os.path.join(REPO, "configs/edm_training.py:smoke"))
    workdir = tmp_path / "edm"
    workdir.mkdir()
    (workdir / "fingerprint.json").write_text(edm_training.recipe_fingerprint(config))  # as a trained run leaves
    io.save_config(str(workdir), config)
    recorded = (workdir / "config.json").read_text()
    changed = subprocess.run([sys.executable, "launch/edm_training.py", "--config=configs/edm_training.py:smoke",
                              "--config.optim.peak_lr=0.002", f"--workdir={workdir}"], capture_output=True, text=True,
                             cwd=REPO, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert changed.returncode == 2, changed.stderr[-2000:]
    assert changed.stderr.strip().splitlines()[-1] == (
        f"error: {workdir / 'fingerprint.json'} holds the checkpoints of another training recipe (fields that "
        "differ: optim.peak_lr); rerun with the config that wrote it, or use a new --workdir")
    assert (workdir / "config.json").read_text() == recorded

    neutral = load_config(os.path.join(REPO, "configs/edm_training.py:smoke"))
    neutral.training.log_every_steps, neutral.training.keep_checkpoints = 1, 5
    neutral.sampling.num_samples = 3  # sampling acts after training: the checkpoints are reused
    assert io.check_fingerprint(str(workdir / "fingerprint.json"), edm_training.recipe_fingerprint(neutral), "x")
    neutral.data.num_train = 7
    with pytest.raises(ConfigError, match=r"fields that differ: data.num_train\)"):
        io.check_fingerprint(str(workdir / "fingerprint.json"), edm_training.recipe_fingerprint(neutral), "x")


# A resumable stand-in for a launcher: takes its workdir's lock like launch/*.py, counts STEPS
# steps of 0.3 s (its "checkpoint" is step.txt), then writes summary.json; SIGTERM saves and
# exits 143 like the EDM trainer. Every start appends its pid to pids.txt.
FAKE_LAUNCHER = textwrap.dedent("""
    import os, signal, sys, time
    from jaxmem import io, lock
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    workdir, seed = args["workdir"], int(args["config.seed"])
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "pids.txt"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with lock.held(workdir):
        path = os.path.join(workdir, "step.txt")
        step = int(open(path).read()) if os.path.exists(path) else 0
        while step < STEPS:
            time.sleep(0.3)
            step += 1
            io.write_text(path, str(step))
        io.write_json(os.path.join(workdir, "summary.json"), {"value": 100 * seed + step})
""")


def _start_sweep(tmp_path, root, steps):
    launcher = tmp_path / "fake_launcher.py"
    launcher.write_text(FAKE_LAUNCHER.replace("STEPS", str(steps)))
    return subprocess.Popen([sys.executable, os.path.join(REPO, "launch", "sweep.py"),
                             "--config=configs/gmm_crossover.py:smoke", "--sweep.seed=0,1", "--parallel=2",
                             f"--launcher={launcher}", f"--workdir={root}"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _child_pids(root):
    return [int(p) for name in ("seed=0", "seed=1") if (root / name / "pids.txt").exists()
            for p in (root / name / "pids.txt").read_text().split()]


def _wait_for(condition, timeout=60):
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.2)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not reaped) counts as gone
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.slow
def test_sigterm_to_the_sweep_driver_stops_every_child_and_marks_the_runs_unfinished(tmp_path):
    root = tmp_path / "sweep"
    driver = _start_sweep(tmp_path, root, steps=200)
    _wait_for(lambda: len(_child_pids(root)) == 2 and all((root / n / ".lock").exists() for n in ("seed=0", "seed=1")))
    children = _child_pids(root)
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "sweep stopped by SIGTERM; rerun the same command to resume" in stderr
    assert not any(_alive(pid) for pid in children)
    for name in ("seed=0", "seed=1"):
        attempts = [json.loads(line) for line in (root / name / "attempts.jsonl").read_text().splitlines()]
        assert attempts[-1]["interrupted"] and attempts[-1]["exit_code"] == 143
        assert not (root / name / "DONE").exists() and not (root / name / "FAILED").exists()
    assert not (root / ".lock").exists()


# Steps of 0.3 s: the orphans must outlive the second driver's start-up (a few seconds of imports
# and checks), or there is nothing left to wait for.
ORPHAN_STEPS = 40


@pytest.mark.slow
def test_a_rerun_after_kill_9_of_the_driver_waits_for_the_orphans_and_matches_an_uninterrupted_sweep(tmp_path):
    reference = _start_sweep(tmp_path, tmp_path / "reference", steps=ORPHAN_STEPS)
    assert reference.wait(timeout=120) == 0

    root = tmp_path / "sweep"
    first = _start_sweep(tmp_path, root, steps=ORPHAN_STEPS)
    _wait_for(lambda: len(_child_pids(root)) == 2 and all((root / n / ".lock").exists() for n in ("seed=0", "seed=1")))
    first.kill()
    first.communicate()
    orphans = _child_pids(root)
    assert all(_alive(pid) for pid in orphans)  # children of a SIGKILLed driver live on

    second = _start_sweep(tmp_path, root, steps=ORPHAN_STEPS)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr[-2000:]
    assert "taking over the stale lock" in stderr and "waiting for it" in stderr
    for name in ("seed=0", "seed=1"):
        assert (root / name / "DONE").exists() and not (root / name / "FAILED").exists()
        assert len((root / name / "pids.txt").read_text().split()) == 2  # the orphan, then one resume
    assert (root / "results.csv").read_text() == (tmp_path / "reference" / "results.csv").read_text()
    assert (f"run,status,seed,value\nseed=0,done,0,{ORPHAN_STEPS}\nseed=1,done,1,{100 + ORPHAN_STEPS}\n"
            == (root / "results.csv").read_text())

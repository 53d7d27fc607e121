"""Sweep execution: each unfinished run as a subprocess of its family's launcher, `parallel` at a
time, with its bookkeeping (sweep_run.json, run.log, attempts.jsonl, DONE or FAILED).
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import queue
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import ml_collections
from absl import logging

from jaxmem import io
from jaxmem.sweep.expand import Run, resolve

DONE, FAILED = "DONE", "FAILED"
RUN_FILE, ATTEMPTS_FILE, LOG_FILE = "sweep_run.json", "attempts.jsonl", "run.log"
STDERR_TAIL_LINES = 40


def _override_text(value) -> str:
    """The text of a value in a `--config.<field>=` flag (parsed back by ml_collections)."""
    return value if isinstance(value, str) else repr(value)


def default_launcher(config_spec: str) -> str:
    """configs/<family>.py -> launch/<family>.py next to it."""
    config_path = os.path.abspath(config_spec.partition(":")[0])
    base = os.path.basename(config_path)
    launcher = os.path.join(os.path.dirname(os.path.dirname(config_path)), "launch", base)
    if not os.path.isfile(launcher):
        raise FileNotFoundError(f"no launcher {launcher} for {config_spec}; pass --launcher=launch/<x>.py")
    return launcher


def status(run: Run) -> str:
    """'done', 'failed' or 'pending' (never started or interrupted)."""
    if os.path.exists(os.path.join(run.workdir, DONE)):
        return "done"
    return "failed" if os.path.exists(os.path.join(run.workdir, FAILED)) else "pending"


def launch_command(run: Run, config_spec: str, launcher: str, overrides: Mapping[str, str]) -> list[str]:
    """The subprocess command of one run: fixed overrides first, then the run's swept values."""
    flags = [f"--config.{k}={v}" for k, v in overrides.items() if k not in run.values]
    flags += [f"--config.{k}={_override_text(v)}" for k, v in run.values.items()]
    return [sys.executable, launcher, f"--config={config_spec}", *flags, f"--workdir={run.workdir}"]


def execute_run(run: Run, command: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Launches one run (unless DONE) with environment `env` (default: ours) and records the
    outcome; returns its status."""
    if status(run) == "done":
        logging.info("%s: done before, skipped", run.name)
        return "done"
    failed_marker = os.path.join(run.workdir, FAILED)
    if os.path.exists(failed_marker):
        os.remove(failed_marker)
    io.write_json(os.path.join(run.workdir, RUN_FILE), dict(name=run.name, values=run.values))
    logging.info("%s: launching %s", run.name, " ".join(command))
    start = time.time()
    with open(os.path.join(run.workdir, LOG_FILE), "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=env).returncode
    seconds = round(time.time() - start, 2)
    io.append_jsonl(os.path.join(run.workdir, ATTEMPTS_FILE), [dict(exit_code=code, seconds=seconds,
                                                                    finished=time.time())])
    if code == 0:
        io.write_json(os.path.join(run.workdir, DONE), dict(seconds=seconds))
        logging.info("%s: done in %.1f s", run.name, seconds)
        return "done"
    with open(os.path.join(run.workdir, LOG_FILE)) as log:
        tail = "".join(log.readlines()[-STDERR_TAIL_LINES:])
    io.write_json(failed_marker, dict(exit_code=code, seconds=seconds, stderr_tail=tail))
    logging.error("%s: FAILED with exit code %d after %.1f s; see %s", run.name, code, seconds,
                  os.path.join(run.workdir, LOG_FILE))
    return "failed"


def _check_recorded_config(run: Run, config: ml_collections.ConfigDict) -> None:
    """A finished run counts as done only for the config it recorded (its launcher's config.json)."""
    recorded = os.path.join(run.workdir, "config.json")
    if os.path.exists(recorded) and pathlib.Path(recorded).read_text() != io.config_json(config):
        raise ValueError(f"{run.workdir} finished with another config than this sweep's (check the "
                         f"--config.* overrides); rerun with the same ones, or use a new --workdir")


def execute(runs: Sequence[Run], config: ml_collections.ConfigDict, config_spec: str, launcher: str,
            overrides: Mapping[str, str] | None = None, parallel: int = 1, gpus_per_run: int = 0) -> dict[str, str]:
    """Runs every unfinished run, `parallel` subprocesses at a time; returns {name: status}.

    `config` is the base config with the fixed `overrides` ({field: flag text}) applied; a
    failed run is recorded and the others go on. gpus_per_run > 0 pins slot s of the
    `parallel` slots to GPUs s*gpus_per_run ... (s+1)*gpus_per_run - 1 (CUDA_VISIBLE_DEVICES).
    """
    overrides = dict(overrides or {})
    for run in runs:
        if status(run) == "done":
            _check_recorded_config(run, resolve(config, run.values))
    parallel = max(1, parallel)
    slots = queue.Queue()
    for slot in range(parallel):
        slots.put(slot)

    def one(run: Run) -> str:
        command = launch_command(run, config_spec, launcher, overrides)
        slot = slots.get()
        try:
            env = None
            if gpus_per_run > 0:
                gpus = ",".join(str(slot * gpus_per_run + i) for i in range(gpus_per_run))
                env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpus)
            return execute_run(run, command, env)
        finally:
            slots.put(slot)

    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        results = dict(zip([r.name for r in runs], pool.map(one, runs)))
    logging.info("sweep: %d done, %d failed of %d runs", sum(s == "done" for s in results.values()),
                 sum(s == "failed" for s in results.values()), len(results))
    return results


def describe(runs: Sequence[Run], config_spec: str, launcher: str, overrides: Mapping[str, str]) -> str:
    """The dry-run listing: one line per run with its status and its shell-quoted command."""
    lines = [f"{len(runs)} runs of {config_spec} via {launcher}"]
    for i, run in enumerate(runs, 1):
        lines.append(f"[{i}/{len(runs)}] {status(run):7s} {run.name}\n    "
                     + shlex.join(launch_command(run, config_spec, launcher, overrides)))
    return "\n".join(lines)

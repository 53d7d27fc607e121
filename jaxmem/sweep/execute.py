"""Sweep execution: each unfinished run as a subprocess of its family's launcher, `parallel` at a
time, with its bookkeeping (sweep_run.json, run.log, attempts.jsonl, DONE or FAILED).

Children die with the driver: each child runs in its own session (process group), and while
`execute` runs, SIGTERM or SIGINT to the driver is forwarded as SIGTERM to every child's group
(a launcher saves a checkpoint and stops; a second signal sends SIGKILL). The driver waits for
them, records the attempts as interrupted (no DONE, no FAILED: a rerun resumes them), launches
nothing more and raises SweepInterrupted. A child of an earlier driver that was killed with
SIGKILL may still run: its workdir lock (jaxmem.lock) says so, and the run is waited for (up to
`busy_wait_s`) before it is relaunched to resume, never launched beside it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import pathlib
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import ml_collections
from absl import logging

from jaxmem import io, lock
from jaxmem.sweep.expand import Run, resolve

DONE, FAILED = "DONE", "FAILED"
RUN_FILE, ATTEMPTS_FILE, LOG_FILE = "sweep_run.json", "attempts.jsonl", "run.log"
STDERR_TAIL_LINES = 40


def _override_text(value) -> str:
    """The text of a value in a `--config.<field>=` flag (parsed back by ml_collections)."""
    return value if isinstance(value, str) else repr(value)


def default_launcher(config_spec: str) -> str:
    """configs/<experiment>.py -> launch/<experiment>.py next to it."""
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


class SweepInterrupted(Exception):
    """The driver got SIGTERM/SIGINT; its children were stopped and recorded as interrupted."""

    def __init__(self, signum: int):
        super().__init__(f"sweep stopped by {signal.Signals(signum).name}; rerun the same command to resume")
        self.signum = signum


class Children:
    """The running child processes of a sweep driver, and the signal that stops them all.

    Inside `forwarding()` (main thread), SIGTERM/SIGINT set `signum` and send SIGTERM to each
    child's process group (a repeated signal: SIGKILL); children started afterwards are
    stopped at once.
    """

    def __init__(self):
        self.signum: int | None = None
        self._kill = signal.SIGTERM
        self._running: set[subprocess.Popen] = set()
        self._mutex = threading.Lock()

    def _send(self, child: subprocess.Popen) -> None:
        try:
            os.killpg(child.pid, self._kill)
        except ProcessLookupError:  # already gone
            pass

    def start(self, command: Sequence[str], log, env: Mapping[str, str] | None) -> subprocess.Popen:
        """Popen of one run in its own session, output to `log`."""
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, start_new_session=True)
        with self._mutex:
            self._running.add(child)
            if self.signum is not None:
                self._send(child)
        return child

    def finished(self, child: subprocess.Popen) -> None:
        with self._mutex:
            self._running.discard(child)

    def _handle(self, signum, frame) -> None:
        del frame
        with self._mutex:
            if self.signum is not None:
                self._kill = signal.SIGKILL
            self.signum = signum
            logging.warning("%s: stopping %d running child(ren) with %s and waiting for them",
                            signal.Signals(signum).name, len(self._running), self._kill.name)
            for child in self._running:
                self._send(child)

    @contextlib.contextmanager
    def forwarding(self):
        """The SIGTERM/SIGINT handlers above while the block runs (main thread only: elsewhere
        signals cannot be handled, and the block runs without them)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def execute_run(run: Run, command: Sequence[str], env: Mapping[str, str] | None = None,
                children: Children | None = None, busy_wait_s: float = 600.0) -> str:
    """Launches one run (unless DONE) with environment `env` (default: ours) and records the
    outcome; returns its status: 'done', 'failed', 'interrupted' (stopped by a signal to the
    driver), 'pending' (not launched: the driver is stopping) or 'busy' (another process still
    holds the run's workdir after busy_wait_s seconds)."""
    children = children or Children()
    if status(run) == "done":
        logging.info("%s: done before, skipped", run.name)
        return "done"
    owner = lock.wait_until_free(run.workdir, busy_wait_s)
    if owner is not None:
        logging.error("%s: not launched: %s is still in use by %s; rerun when it has finished", run.name,
                      run.workdir, lock.describe(owner))
        return "busy"
    if children.signum is not None:
        return "pending"
    failed_marker = os.path.join(run.workdir, FAILED)
    if os.path.exists(failed_marker):
        os.remove(failed_marker)
    io.write_json(os.path.join(run.workdir, RUN_FILE), dict(name=run.name, values=run.values))
    logging.info("%s: launching %s", run.name, " ".join(command))
    start = time.time()
    with open(os.path.join(run.workdir, LOG_FILE), "a") as log:  # earlier attempts' output is kept
        log.write(f"--- attempt started {time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(start))}: "
                  f"{' '.join(command)}\n")
        log.flush()
        attempt_offset = log.tell()
        child = children.start(command, log, env)
        code = child.wait()
        children.finished(child)
    seconds = round(time.time() - start, 2)
    attempt = dict(exit_code=code, seconds=seconds, finished=time.time())
    if children.signum is not None and code != 0:
        io.append_jsonl(os.path.join(run.workdir, ATTEMPTS_FILE), [dict(attempt, interrupted=True)])
        logging.warning("%s: interrupted (exit code %d) after %.1f s; a rerun resumes it", run.name, code, seconds)
        return "interrupted"
    io.append_jsonl(os.path.join(run.workdir, ATTEMPTS_FILE), [attempt])
    if code == 0:
        io.write_json(os.path.join(run.workdir, DONE), dict(seconds=seconds))
        logging.info("%s: done in %.1f s", run.name, seconds)
        return "done"
    with open(os.path.join(run.workdir, LOG_FILE)) as log:  # this attempt's lines only
        log.seek(attempt_offset)
        tail = "".join(log.readlines()[-STDERR_TAIL_LINES:])
    io.write_json(failed_marker, dict(exit_code=code, seconds=seconds, stderr_tail=tail))
    logging.error("%s: FAILED with exit code %d after %.1f s; see %s", run.name, code, seconds,
                  os.path.join(run.workdir, LOG_FILE))
    return "failed"


def _check_recorded_config(run: Run, config: ml_collections.ConfigDict) -> None:
    """A finished run counts as done only for the config it recorded (its launcher's config.json)."""
    recorded = os.path.join(run.workdir, "config.json")
    if not os.path.exists(recorded):
        return
    changed = io.differing_fields(json.loads(pathlib.Path(recorded).read_text()), json.loads(io.config_json(config)))
    if changed:
        raise ValueError(f"{run.workdir} finished with another config than this sweep's (fields that differ: "
                         f"{', '.join(changed)}; check the --config.* overrides); rerun with the same ones, or "
                         f"use a new --workdir")


def execute(runs: Sequence[Run], config: ml_collections.ConfigDict, config_spec: str, launcher: str,
            overrides: Mapping[str, str] | None = None, parallel: int = 1, gpus_per_run: int = 0,
            busy_wait_s: float = 600.0) -> dict[str, str]:
    """Runs every unfinished run, `parallel` subprocesses at a time; returns {name: status}
    (execute_run's statuses).

    `config` is the base config with the fixed `overrides` ({field: flag text}) applied; a
    failed run is recorded and the others go on. gpus_per_run > 0 pins slot s of the
    `parallel` slots to GPUs s*gpus_per_run ... (s+1)*gpus_per_run - 1 (CUDA_VISIBLE_DEVICES).
    busy_wait_s: how long a run whose workdir another process holds is waited for.
    Raises SweepInterrupted after a SIGTERM/SIGINT, once every child has stopped and been recorded.
    """
    overrides = dict(overrides or {})
    for run in runs:
        if status(run) == "done":
            _check_recorded_config(run, resolve(config, run.values))
    parallel = max(1, parallel)
    slots = queue.Queue()
    for slot in range(parallel):
        slots.put(slot)
    children = Children()

    def one(run: Run) -> str:
        command = launch_command(run, config_spec, launcher, overrides)
        slot = slots.get()
        try:
            env = None
            if gpus_per_run > 0:
                gpus = ",".join(str(slot * gpus_per_run + i) for i in range(gpus_per_run))
                env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpus)
            return execute_run(run, command, env, children, busy_wait_s)
        finally:
            slots.put(slot)

    with children.forwarding(), concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        results = dict(zip([r.name for r in runs], pool.map(one, runs)))
    counts = {s: sum(v == s for v in results.values()) for s in sorted(set(results.values()))}
    logging.info("sweep: %s of %d runs", ", ".join(f"{n} {s}" for s, n in counts.items()), len(results))
    if children.signum is not None:
        raise SweepInterrupted(children.signum)
    return results


def describe(runs: Sequence[Run], config_spec: str, launcher: str, overrides: Mapping[str, str]) -> str:
    """The dry-run listing: one line per run with its status and its shell-quoted command."""
    lines = [f"{len(runs)} runs of {config_spec} via {launcher}"]
    for i, run in enumerate(runs, 1):
        lines.append(f"[{i}/{len(runs)}] {status(run):7s} {run.name}\n    "
                     + shlex.join(launch_command(run, config_spec, launcher, overrides)))
    return "\n".join(lines)

"""Fault scenarios at smoke size: each run is interrupted (kill -9, a corrupt checkpoint, a full
disk, SIGTERM), then its command is run again, and the results must equal those of the same
command run without interruption.

    python results/reliability/faults.py [--out=results/reliability/faults] [--scratch=DIR]

Writes <out>.csv and <out>.md: per scenario the fault, the exit status of the interrupted run,
the exit status of the rerun, what the rerun logged about the interruption, the result files
compared and whether every one is identical (arrays bit for bit; text with the workdir's path
replaced). The runs are niced and use the shared compilation cache; on 2 busy cores the whole
script takes tens of minutes.
"""

import argparse
import csv
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EDM = ["launch/edm_training.py", "--config=configs/edm_training.py:smoke", "--config.training.total_images=480"]
GRID = ["launch/gmm_crossover.py", "--config=configs/gmm_crossover.py:smoke", "--config.training.steps=60"]
SWEEP = ["launch/sweep.py", "--config=configs/gmm_crossover.py:smoke", "--sweep.training.steps=40,60",
         "--parallel=2"]
# What a rerun logs about the fault it recovers from.
NOTICES = ("resumed from step", "cannot be restored", "taking over the stale lock", "waiting for it", "skipping",
           "relaunch", "unfinished", "could not be written")


def start(command, workdir, file_limit=None, extra=()):
    limit = None if file_limit is None else (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit,) * 2))
    log = open(workdir + ".log", "a")
    return subprocess.Popen(["nice", "-n", "5", sys.executable, *command, f"--workdir={workdir}", *extra], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=limit,
                            env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO))


def run(command, workdir, **kwargs) -> int:
    return start(command, workdir, **kwargs).wait()


def checkpoint_steps(folder):
    """Committed checkpoint steps anywhere under folder (orbax renames a finished step to its number)."""
    return sorted(int(name) for root, dirs, _ in os.walk(folder) if os.path.basename(root) == "checkpoints"
                  for name in dirs if name.isdigit())


def wait_for(condition, process, timeout=1800):
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"the run ended (exit {process.returncode}) or timed out before the fault")
        time.sleep(0.05)


def results(workdir, names):
    """{relative path: bytes, or {key: array} of an .npz} of the result files, the workdir's path
    replaced in text."""
    found = {}
    for name in names:
        path = os.path.join(workdir, name)
        if name.endswith(".npz"):
            with np.load(path) as data:
                found[name] = {key: data[key] for key in data.files}
        else:
            with open(path) as f:
                text = f.read().replace(workdir, "<workdir>")
            if name.endswith("summary.json"):  # the record of the interruption itself differs
                record = json.loads(text)
                for key in ("resumed_from", "rejected_checkpoints"):
                    record.pop(key, None)
                text = json.dumps(record, sort_keys=True)
            found[name] = text
    return found


def identical(a, b):
    if a.keys() != b.keys():
        return False
    for name in a:
        if isinstance(a[name], dict):
            if a[name].keys() != b[name].keys() or not all(np.array_equal(a[name][k], b[name][k], equal_nan=True)
                                                          for k in a[name]):
                return False
        elif a[name] != b[name]:
            return False
    return True


def notice(log_path):
    """The rerun's first log line about the fault, without its absl prefix."""
    with open(log_path) as f:
        lines = f.read().splitlines()
    marked = [i for i, line in enumerate(lines) if line.startswith("=== rerun")]
    for line in lines[marked[-1] if marked else 0:]:
        if any(word in line for word in NOTICES):
            return re.sub(r"^[IWE]\d{4} [\d:.]+ +\d+ \S+\] ", "", line)[:200]
    return ""


def mark(workdir, text):
    with open(workdir + ".log", "a") as f:
        f.write(f"=== {text}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "results/reliability/faults"))
    parser.add_argument("--scratch", default="/tmp/jaxmem_faults")
    options = parser.parse_args()
    os.makedirs(options.scratch, exist_ok=True)
    folder = lambda name: os.path.join(options.scratch, name)  # noqa: E731
    for name in ("edm_kill9", "edm_corrupt", "edm_full_disk", "grid_kill9", "sweep_sigterm", "sweep_kill9"):
        shutil.rmtree(folder(name), ignore_errors=True)
        if os.path.exists(folder(name) + ".log"):
            os.remove(folder(name) + ".log")
    edm_files = ["samples.npz", "train_indices.npz", "summary.json"]
    grid_files = ["models.csv", "crossover.csv", "summary.json"]
    sweep_files = ["results.csv"]
    reference = {}
    for name, command, files in (("edm", EDM, edm_files), ("grid", GRID, grid_files), ("sweep", SWEEP, sweep_files)):
        code = run(command, folder(f"reference_{name}"))  # a finished reference is skipped by the rerun
        assert code == 0, f"the uninterrupted {name} run failed: {folder(f'reference_{name}')}.log"
        reference[name] = results(folder(f"reference_{name}"), files)
    rows = []

    def finish(scenario, fault, workdir, kind, files, fault_code):
        mark(workdir, "rerun")
        code = run(EDM if kind == "edm" else GRID if kind == "grid" else SWEEP, workdir)
        leftovers = [os.path.join(r, d) for r, ds, _ in os.walk(workdir) for d in ds if d.endswith("-tmp")]
        same = code == 0 and not leftovers and identical(results(workdir, files), reference[kind])
        rows.append(dict(scenario=scenario, fault=fault, interrupted_exit=fault_code, rerun_exit=code,
                         rerun_notice=notice(workdir + ".log"), compared=" ".join(files),
                         partial_checkpoints_left=len(leftovers), identical=same))
        print(rows[-1], flush=True)

    # 1. kill -9 of an EDM training once two checkpoints are committed
    w = folder("edm_kill9")
    p = start(EDM, w)
    wait_for(lambda: len(checkpoint_steps(w)) >= 2, p)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    killed_at = checkpoint_steps(w)
    shutil.copytree(w, folder("edm_corrupt"), symlinks=True)  # the same killed run, for scenario 2
    finish("kill -9 mid-training (EDM)", f"SIGKILL with checkpoints {killed_at} committed", w, "edm", edm_files,
           p.returncode)

    # 2. the latest checkpoint of that killed run made unreadable (its array data files removed)
    w = folder("edm_corrupt")
    latest = os.path.join(w, "checkpoints", str(checkpoint_steps(w)[-1]))
    for root, _, names in os.walk(os.path.join(latest, "state")):
        if os.path.basename(root) == "d":
            for name in names:
                os.remove(os.path.join(root, name))
    finish("corrupt latest checkpoint (EDM)", f"step {os.path.basename(latest)}'s array files deleted", w, "edm",
           edm_files, "-")

    # 3. a full disk: no file may grow past 200 kB, so the first checkpoint save fails
    w = folder("edm_full_disk")
    code = run(EDM, w, file_limit=200_000, extra=["--compile_cache="])
    finish("full disk (EDM)", "RLIMIT_FSIZE 200 kB: the checkpoint save fails", w, "edm", edm_files, code)

    # 4. kill -9 of the GMM grid once its first chunk is checkpointed
    w = folder("grid_kill9")
    p = start(GRID, w)
    wait_for(lambda: checkpoint_steps(w), p)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    finish("kill -9 of the GMM grid (crossover)", f"SIGKILL with checkpoints {checkpoint_steps(w)}", w, "grid",
           grid_files, p.returncode)

    # 5. SIGTERM to a sweep driver while its runs train
    w = folder("sweep_sigterm")
    p = start(SWEEP, w)
    wait_for(lambda: checkpoint_steps(w), p)
    p.send_signal(signal.SIGTERM)
    code = p.wait()
    finish("SIGTERM to a sweep", "SIGTERM to the driver once a run has a checkpoint", w, "sweep", sweep_files, code)

    # 6. kill -9 of a sweep driver: its children are orphaned and keep their workdirs' locks
    w = folder("sweep_kill9")
    p = start(SWEEP, w)
    wait_for(lambda: checkpoint_steps(w), p)
    p.send_signal(signal.SIGKILL)  # the driver only: its children run on
    code = p.wait()
    finish("kill -9 of a sweep driver", "SIGKILL to the driver only; the children run on", w, "sweep",
           sweep_files, code)

    with open(options.out + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(options.out + ".md", "w") as f:
        f.write("| " + " | ".join(rows[0]) + " |\n" + "|---" * len(rows[0]) + "|\n")
        f.writelines("| " + " | ".join(str(v).replace("|", "/") for v in r.values()) + " |\n" for r in rows)


if __name__ == "__main__":
    main()

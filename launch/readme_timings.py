"""Times the README's commands from a fresh clone and records them (the README quotes this table).

    python launch/readme_timings.py [--only=demo,test] [--out=results/readme_timings]

Clones the repository (its committed HEAD) into a temporary folder and runs each command there
in order, as a new user would: `make demo` first (it creates the virtual environment, so its
time includes the install), then `make test` and the launchers' offline presets with the
environment in place. Writes <out>/report.md (machine, versions, date, one row per command:
wall time and exit code) and <out>/timings.json. A recorded measurement, not an assertion: rerun
it after a change that may move a number the README states, and update the README from it.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from jaxmem import io
from jaxmem.cli import run_app

PY = ".venv/bin/python"
COMMANDS = {  # name -> the README's command, run in the clone's root
    "demo": "make demo",
    "test": "make test",
    "crossover_smoke": f"{PY} launch/gmm_crossover.py --config=configs/gmm_crossover.py:smoke --workdir=runs/smoke",
    "geometry_digits": f"{PY} launch/noise_regimes.py --config=configs/noise_regimes.py:digits --workdir=runs/geometry",
    "edm_smoke": f"{PY} launch/edm_training.py --config=configs/edm_training.py:smoke --workdir=runs/edm_smoke",
    "swap_smoke": f"{PY} launch/denoiser_swaps.py --config=configs/denoiser_swaps.py:smoke --workdir=runs/swap_smoke",
    "bench_knn_cpu": f"{PY} launch/bench.py --only=knn --size=cpu --workdir=runs/bench",
}

TAIL_LINES = 40  # of each command's output, kept in timings.json (failures: every FAILED/ERROR line too)

_ONLY = flags.DEFINE_list("only", [], f"Commands to time, in this order (default: all of {list(COMMANDS)}).")
_OUT = flags.DEFINE_string("out", "results/readme_timings", "Folder of report.md and timings.json.")


def _machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}, {platform.platform()}"


def main(argv):
    del argv
    unknown = sorted(set(_ONLY.value) - set(COMMANDS))
    if unknown:
        raise app.UsageError(f"unknown commands {unknown}; valid: {list(COMMANDS)}")
    names = [n for n in COMMANDS if n in _ONLY.value] if _ONLY.value else list(COMMANDS)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="jaxmem_readme_") as root:
        clone = os.path.join(root, "jaxmem")
        subprocess.run(["git", "clone", "-q", repo, clone], check=True)
        for name in names:
            start = time.perf_counter()
            result = subprocess.run(COMMANDS[name], shell=True, cwd=clone, capture_output=True, text=True)
            minutes = (time.perf_counter() - start) / 60
            output = (result.stdout + "\n" + result.stderr).strip().splitlines()
            summary = [line for line in output if line.startswith(("FAILED", "ERROR", "error:"))] or output[-1:]
            rows.append(dict(name=name, command=COMMANDS[name], minutes=round(minutes, 2),
                             exit_code=result.returncode, last_line=(summary or [""])[-1][:120],
                             output_tail=output[-TAIL_LINES:]))
            print(f"{name}: {minutes:.1f} min, exit {result.returncode}", flush=True)
    header = [f"# README commands from a fresh clone ({head})", "",
              f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}", f"- machine: {_machine()}",
              "- each command in a fresh `git clone`, in this order (the first `make` installs `.venv`; later "
              "commands find JAX's compilation cache warm from the tests, ~/.cache/jaxmem/xla)", "", ""]
    io.write_json(os.path.join(_OUT.value, "timings.json"), dict(commit=head, machine=_machine(), rows=rows))
    io.write_text(os.path.join(_OUT.value, "report.md"), "\n".join(header) + io.markdown_table(
        rows, ["name", "command", "minutes", "exit_code", "last_line"]) + "\n")
    if any(r["exit_code"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    run_app(main)

"""Every paper-scale job compiled for TPU and GPU targets, then the plan's tables
(jaxmem.experiments.accelerator_plan; results/accelerator_plan/ holds a curated copy).

    .venv-accelerators/bin/python launch/accelerator_plan.py --workdir=runs/accelerator_plan \\
        --out=results/accelerator_plan [--jobs=edm_1k_f32,crossover_paper] [--report_only]

Each job is one launch/compile_check.py command, run in its own process (printed before it runs)
into <workdir>/<job>; a job whose compile_check.json exists is not run again, so a stopped plan
resumes. A job whose programs do not all fit is reported, not fatal. --out receives jobs.md/.csv,
programs.md/.csv, scaling.md/.csv, gpu_check_predictions.json (what launch/gpu_check.py compares its
measurements with), versions.json and commands.txt (every command with its wall time).
"""

import importlib.metadata
import os
import platform
import subprocess
import sys
import time

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jaxmem import io  # noqa: E402
from jaxmem.cli import run_app  # noqa: E402
from jaxmem.experiments import accelerator_plan as plan  # noqa: E402

VERSIONED = ("jax", "jaxlib", "libtpu", "jax-cuda12-plugin", "jax-cuda12-pjrt", "flax", "optax")
_WORKDIR = flags.DEFINE_string("workdir", "runs/accelerator_plan", "Folder of the jobs' compile-check workdirs.")
_OUT = flags.DEFINE_string("out", None, "Folder for the plan's tables (default: --workdir).")
_JOBS = flags.DEFINE_list("jobs", [], f"Jobs to run, in this order (default: all): "
                          f"{', '.join(j.name for j in plan.JOBS)}.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only write the tables from the jobs already run.")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments: {' '.join(argv[1:])}")
    known = {j.name for j in plan.JOBS}
    unknown = sorted(set(_JOBS.value) - known)
    if unknown:
        print(f"error: --jobs: unknown {', '.join(unknown)}; jobs: {', '.join(sorted(known))}", file=sys.stderr)
        sys.exit(2)
    workdir, out = os.path.abspath(_WORKDIR.value), os.path.abspath(_OUT.value or _WORKDIR.value)
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "commands.txt")
    chosen = [plan.JOBS_BY_NAME[name] for name in _JOBS.value] if _JOBS.value else plan.JOBS  # in --jobs order
    for job in chosen:
        if _REPORT_ONLY.value or plan.load(workdir, job):
            continue
        command = job.command(sys.executable, os.path.join(REPO, "launch", "compile_check.py"), workdir)
        print("$ " + " ".join(command), flush=True)
        start = time.time()
        status = subprocess.run(command, cwd=REPO).returncode
        with open(log_path, "a") as f:
            f.write(f"{' '.join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in command[1:])}"
                    f"  # exit {status}, {time.time() - start:.0f} s wall\n")
    io.write_csv(os.path.join(out, "jobs.csv"), plan.job_rows(workdir))
    io.write_text(os.path.join(out, "jobs.md"), io.markdown_table(plan.job_rows(workdir)) + "\n")
    io.write_csv(os.path.join(out, "programs.csv"), plan.program_rows(workdir))
    io.write_text(os.path.join(out, "programs.md"), io.markdown_table(plan.program_rows(workdir)) + "\n")
    io.write_csv(os.path.join(out, "scaling.csv"), plan.scaling_rows(workdir))
    io.write_text(os.path.join(out, "scaling.md"), io.markdown_table(plan.scaling_rows(workdir)) + "\n")
    io.write_json(os.path.join(out, "gpu_check_predictions.json"), plan.gpu_check_predictions(workdir))
    io.write_json(os.path.join(out, "versions.json"), {"python": platform.python_version(), **{
        name: importlib.metadata.version(name) for name in VERSIONED}})
    print(f"tables: {out}")


if __name__ == "__main__":
    run_app(main)

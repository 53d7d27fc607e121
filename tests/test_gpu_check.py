"""The GPU check (launch/gpu_check.py) on a CPU: its dry run, its budget, its set-up and report."""

import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from jaxmem.benchmarks import crossover_time, entry_names, stages
from jaxmem.config import load_config

SCRIPT = os.path.join(REPO, "launch", "gpu_check.py")


def _gpu_check(*flags: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a plain host
    return subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def launcher():
    """launch/gpu_check.py as a module (its absl flags are defined once per process)."""
    if "gpu_check_launcher" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check_launcher", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["gpu_check_launcher"] = module
    return sys.modules["gpu_check_launcher"]


@pytest.mark.slow
def test_dry_run_writes_the_summary_and_fills_the_benchmarks_section(tmp_path):
    benchmarks = tmp_path / "BENCHMARKS.md"
    shutil.copy(os.path.join(REPO, "BENCHMARKS.md"), benchmarks)
    out = _gpu_check("--quick", "--skip_install", "--stages=env,pytest,bench:knn,slice", "--timeout_factor=8",
                     f"--out={tmp_path / 'out'}", f"--scratch={tmp_path / 'scratch'}",
                     f"--update_benchmarks={benchmarks}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "out")) == ["logs.txt", "summary.json", "summary.md"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {r["stage"]: r["status"] for r in summary["stages"]}
    entries = [f"bench:{e}" for e in ("knn", "geometry", "gmm", "crossover_time")]
    assert list(status) == ["setup", "env", "pytest", *entries, "slice", "bench:edm", "bench:fid"]
    assert {k for k, v in status.items() if v == "ok"} == {"env", "pytest", "bench:knn", "slice"}, summary["stages"]
    records = {r["stage"]: r for r in summary["stages"]}
    assert records["setup"]["reason"] == "--skip_install" and records["bench:edm"]["reason"] == "not in --stages"
    assert records["env"]["details"]["backend"] == "cpu"
    assert records["pytest"]["details"]["skipped"] == 3 and records["pytest"]["details"]["failed"] == 0
    rows = records["bench:knn"]["details"]["rows"]
    assert [r["method"].split()[0] for r in rows[:2]] == ["jaxmem", "jnp"]
    assert rows[0]["agrees_with_numpy"] == 1.0 and rows[0]["peak_gib"] is None
    piece = records["slice"]["details"]
    assert piece["returncode"] == 0 and piece["steps_done"] == piece["steps"] == 20 and piece["models"] > 0
    assert {"crossover.csv", "models.csv", "report.md"} <= set(piece["outputs"])

    section = benchmarks.read_text()
    assert "No GPU run yet" not in section and stages.BEGIN_MARKER in section and stages.END_MARKER in section
    assert "### cpu x1 (cpu)" in section and "| bench:knn | ok |" in section and "CPU dry run" in section
    assert (tmp_path / "out" / "summary.md").read_text().count("| slice | ok |") == 1

    again = tmp_path / "again.md"
    shutil.copy(os.path.join(REPO, "BENCHMARKS.md"), again)
    rendered = _gpu_check(f"--from_summary={tmp_path / 'out' / 'summary.json'}", f"--update_benchmarks={again}")
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert again.read_text() == section


def test_a_tiny_budget_skips_every_stage_and_says_why(tmp_path):
    out = _gpu_check("--quick", "--skip_install", "--budget_s=1", f"--out={tmp_path}", timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(r["status"] == "skipped" for r in summary["stages"])
    assert all("of the budget left" in r["reason"] for r in summary["stages"][1:])
    help_text = _gpu_check("--help", timeout=60).stdout
    for promise in ("480 s", "summary.json", "summary.md", "logs.txt", "$OUT"):
        assert promise in help_text


def test_a_failing_stage_does_not_stop_the_others(launcher, monkeypatch, tmp_path):
    def fake_stage(check, name, timeout_s):
        if name == "env":
            raise RuntimeError("no device")
        return "ok", {"timeout_s": timeout_s}

    monkeypatch.setattr(launcher, "run_stage", fake_stage)
    check = launcher.Check(str(tmp_path), str(tmp_path), quick=True, budget=stages.Budget(100.0, reserve_s=0.0))
    launcher.run_stages(check, ["env", "pytest", "bench:edm"], {"env", "pytest"})
    env, tests, edm = check.records
    assert env["status"] == "failed" and "RuntimeError: no device" in env["error_tail"]
    assert tests["status"] == "ok" and tests["details"]["timeout_s"] == 2 * launcher.ESTIMATES["pytest"][1]
    assert edm["status"] == "skipped" and edm["reason"] == "not in --stages"


def test_commands_past_their_timeout_are_killed_with_their_output_kept():
    result = stages.run_command([sys.executable, "-u", "-c", "import time; print('started'); time.sleep(60)"], 2.0)
    assert result.returncode is None and result.wall_s < 15 and result.text == "started\n"
    assert next(t for t, line in result.lines if "start" in line) < 2.0  # stamped on arrival
    failed = stages.run_command([sys.executable, "-c", "import sys; sys.exit(3)"], 30.0)
    assert failed.returncode == 3 and stages.Budget(10.0, reserve_s=2.0).timeout_for(100.0) <= 8.0


def test_setup_installs_only_what_is_missing_and_pins_jax(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["jax>=0.4", "surely-not-installed-xyz>=1"]\n'
                         '[project.optional-dependencies]\ntest = ["pytest>=8"]\n')
    assert stages.missing_requirements(str(pyproject)) == ["surely-not-installed-xyz>=1"]
    pins = stages.constraints_text()
    for name in ("jax", "jaxlib"):
        assert f"{name}=={importlib.metadata.version(name)}\n" in pins
    from_wheels = stages.pip_install_command("python3", "ml-collections>=1.0", "c.txt", ".whl")
    assert from_wheels[-3:] == ["--find-links", ".whl", "ml-collections>=1.0"] and "--no-index" in from_wheels
    assert "--no-index" not in stages.pip_install_command("python3", "x", "c.txt", None)


def test_the_benchmarks_file_has_the_section_markers():
    text = open(os.path.join(REPO, "BENCHMARKS.md")).read()
    assert "No GPU run yet" in stages.replace_section(text, "No GPU run yet.")
    with pytest.raises(ValueError, match="gpu-check:begin"):
        stages.replace_section("# Benchmarks\n", "table")


def test_bench_entries_are_named_after_their_modules():
    names = entry_names()
    assert {"knn", "geometry", "gmm", "crossover_time", "edm"} <= set(names)
    for name in names:
        assert importlib.import_module(f"jaxmem.benchmarks.{name}").NAME == name


def test_crossover_presets_extrapolate_from_their_grids():
    paper = crossover_time.preset_grids(load_config(crossover_time.CONFIG_PATH + ":paper"))
    assert len(paper) == 16 and sum(g["sets"] * g["members"] for g in paper) == 640  # 4 d x 4 K x 4 N x 10 M/N
    assert {g["steps"] for g in paper} == {50_000} and max(g["capacity"] for g in paper) == 200
    curve = crossover_time.preset_grids(load_config(crossover_time.CONFIG_PATH + ":curve"))
    assert len(curve) == 6 and {g["rounds"] for g in curve} == {5} and {g["sets"] for g in curve} == {3}
    grids = [dict(rounds=1, steps=10, flops_per_step=f) for f in (1.0, 2.0, 3.0)]
    assert crossover_time.extrapolate(grids, [(1.0, 1.0), (3.0, 2.0)]) == pytest.approx(10 * (1.0 + 1.5 + 2.0))
    assert crossover_time.extrapolate(grids, [(2.0, 4.0)]) == pytest.approx(120.0)

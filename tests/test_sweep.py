"""Sweeps: expansion (grid, zipped, typed flags, clear errors), dry run, and a smoke sweep of the
GMM laboratory over 3 values of N run end to end, killed half way, rerun and aggregated."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxmem.sweep import execute, expand
from jaxmem.config import load_config

from conftest import REPO

SMOKE = "configs/gmm_crossover.py:smoke"


@pytest.fixture()
def smoke_config():
    return load_config(os.path.join(REPO, SMOKE))


def test_grid_and_zipped_axes_expand_into_named_runs(smoke_config, tmp_path):
    axes = [{"data.train_sizes": [(8,), (12, 16)]},
            {"training.steps": [10, 20], "training.chunk_steps": [5, 10]}]
    runs = expand.expand(smoke_config, axes, str(tmp_path))
    assert [r.name for r in runs] == [
        "data.train_sizes=8__training.steps=10__training.chunk_steps=5",
        "data.train_sizes=8__training.steps=20__training.chunk_steps=10",
        "data.train_sizes=12-16__training.steps=10__training.chunk_steps=5",
        "data.train_sizes=12-16__training.steps=20__training.chunk_steps=10"]
    assert runs[3].values == {"data.train_sizes": (12, 16), "training.steps": 20, "training.chunk_steps": 10}
    assert runs[3].workdir == os.path.join(str(tmp_path), runs[3].name)
    resolved = expand.resolve(smoke_config, runs[3].values)
    assert resolved.training.steps == 20 and resolved.data.train_sizes == (12, 16)
    assert smoke_config.training.steps == 20 and smoke_config.data.train_sizes == (8, 12)  # base untouched
    assert expand.run_name({"data.model": "a b/c"}) == "data.model=a_b_c"


def test_bad_sweeps_fail_with_a_message_naming_the_field(smoke_config, tmp_path):
    with pytest.raises(ValueError, match=r"'data.trian_sizes'; did you mean 'data.train_sizes'\? "
                                         r"\(data has the fields: copies, dims, model, num_components"):
        expand.expand(smoke_config, [{"data.trian_sizes": [(8,)]}], str(tmp_path))
    with pytest.raises(ValueError, match=r"'optim.peak_lr' \(the config has the fields: .*sampling, seed, training"):
        expand.flag_axes(smoke_config, {"optim.peak_lr": "1,2"})
    with pytest.raises(ValueError, match="is a group"):
        expand.expand(smoke_config, [{"data": [1]}], str(tmp_path))
    with pytest.raises(ValueError, match="equal length"):
        expand.expand(smoke_config, [{"training.steps": [1, 2], "seed": [0]}], str(tmp_path))
    with pytest.raises(ValueError, match="swept on two axes"):
        expand.expand(smoke_config, [{"seed": [0]}, {"seed": [1]}], str(tmp_path))
    with pytest.raises(ValueError, match="wrong type"):
        expand.expand(smoke_config, [{"training.steps": ["many"]}], str(tmp_path))
    with pytest.raises(ValueError, match="cannot parse 'x' as int"):
        expand.flag_axes(smoke_config, {"training.steps": "10,x"})
    (tmp_path / "bad_plot.py").write_text("PLOT = {'x': 'N', 'y': 'M'}\ndef get_sweep():\n    return []\n")
    with pytest.raises(ValueError, match="PLOT of .* must be"):
        expand.load_sweep_file(str(tmp_path / "bad_plot.py"))
    (tmp_path / "no_sweep.py").write_text("AXES = []\n")
    with pytest.raises(ValueError, match="defines no get_sweep"):
        expand.load_sweep_file(str(tmp_path / "no_sweep.py"))


def test_the_crossover_n_sweep_file_expands_over_n(smoke_config, tmp_path):
    axes, plot = expand.load_sweep_file(os.path.join(REPO, "configs", "sweeps", "gmm_crossover_n.py"))
    runs = expand.expand(smoke_config, axes, str(tmp_path))
    assert [r.values["data.train_sizes"] for r in runs] == [(20,), (40,), (60,), (80,), (100,)]
    assert plot["x"] == "rows.0.N" and "rows.0.M_pt" in plot["y"]


def test_flag_values_take_the_type_of_the_config_field(smoke_config):
    axes = expand.flag_axes(smoke_config, {
        "data.train_sizes": "(8,),(12, 16),20", "training.steps": "10,20", "training.peak_lr": "1e-3,2",
        "data.model": "isotropic,lowrank", "training.grid_per_train_size": "true,False"})
    assert axes == [{"data.train_sizes": [(8,), (12, 16), (20,)]}, {"training.steps": [10, 20]},
                    {"training.peak_lr": [1e-3, 2.0]}, {"data.model": ["isotropic", "lowrank"]},
                    {"training.grid_per_train_size": [True, False]}]
    assert isinstance(axes[2]["training.peak_lr"][1], float)
    rest, sweeps, overrides = expand.split_argv(
        ["sweep.py", "--config=c.py:x", "--sweep.seed=0,1", "--config.training.steps=5", "--dry_run"])
    assert rest == ["sweep.py", "--config=c.py:x", "--dry_run"]
    assert sweeps == {"seed": "0,1"} and overrides == {"training.steps": "5"}
    assert expand.apply_overrides(smoke_config, overrides).training.steps == 5


GPU_LAUNCHER = textwrap.dedent("""
    import os, sys, time
    workdir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir="))
    with open(os.path.join(workdir, "gpus"), "w") as f:
        f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
    time.sleep(0.2)
    sys.exit(3 if workdir.endswith("seed=2") else 0)
""")


def test_parallel_runs_get_their_own_gpus_and_a_failure_stops_no_other_run(smoke_config, tmp_path):
    launcher = tmp_path / "launcher.py"
    launcher.write_text(GPU_LAUNCHER)
    runs = expand.expand(smoke_config, [{"seed": [0, 1, 2, 3, 4]}], str(tmp_path / "sweep"))
    results = execute.execute(runs, smoke_config, SMOKE, str(launcher), parallel=2, gpus_per_run=2)
    assert results == {"seed=0": "done", "seed=1": "done", "seed=2": "failed", "seed=3": "done", "seed=4": "done"}
    gpus = [(Path(r.workdir) / "gpus").read_text() for r in runs]
    assert set(gpus) == {"0,1", "2,3"}
    assert json.loads((Path(runs[2].workdir) / "FAILED").read_text())["exit_code"] == 3


def _sweep_cli(*args, timeout=60):
    return subprocess.run([sys.executable, os.path.join(REPO, "launch", "sweep.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)


@pytest.mark.slow
def test_dry_run_prints_the_runs_and_launches_nothing(tmp_path):
    root = tmp_path / "sweep"
    result = _sweep_cli(f"--config={SMOKE}", "--sweep=configs/sweeps/gmm_crossover_n.py", "--sweep.seed=0,1",
                        "--config.training.steps=5", f"--workdir={root}", "--dry_run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"10 runs of {SMOKE} via {os.path.join(REPO, 'launch', 'gmm_crossover.py')}"
    assert lines[1] == "[1/10] pending data.train_sizes=20__seed=0"
    assert (f"--config={SMOKE} --config.training.steps=5 '--config.data.train_sizes=(20,)' --config.seed=0 "
            f"--workdir={root}/data.train_sizes=20__seed=0") in lines[2]
    assert not root.exists()

    one = _sweep_cli(f"--config={SMOKE}", "--sweep=configs/sweeps/gmm_crossover_n.py", "--run_index=4", "--dry_run")
    assert one.stdout.splitlines()[1] == "[1/1] pending data.train_sizes=100"
    assert "--run_index=5 is invalid; allowed: 0..4" in _sweep_cli(
        f"--config={SMOKE}", "--sweep=configs/sweeps/gmm_crossover_n.py", "--run_index=5", "--dry_run").stderr

    bad = _sweep_cli(f"--config={SMOKE}", "--sweep.sampling.num_sample=1,2", "--dry_run")
    assert bad.returncode == 2
    assert ("unknown config field 'sampling.num_sample'; did you mean 'sampling.num_samples'? "
            "(sampling has the fields: ") in bad.stderr


# A launcher that fails the first attempt of the N=12 run (a sweep killed half way, with a
# partial workdir), then behaves like launch/gmm_crossover.py; every attempt is logged in the run dir.
FLAKY_LAUNCHER = textwrap.dedent("""
    import os, runpy, sys
    workdir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir="))
    with open(os.path.join(workdir, "launches.log"), "a") as f:
        f.write("launch\\n")
    flag = os.path.join(os.path.dirname(workdir), "failed_once")
    if workdir.endswith("=12") and not os.path.exists(flag):
        open(flag, "w").close()
        open(os.path.join(workdir, "partial.npz"), "w").close()
        sys.exit("simulated crash of the N=12 run")
    runpy.run_path({crossover!r}, run_name="__main__")
""")


SMOKE_SWEEP = textwrap.dedent("""
    PLOT = {"x": "rows.0.N", "y": ["rows.0.M_pt", "rows.0.Mstar_formula_eps"]}

    def get_sweep():
        return [{"data.train_sizes": [(8,), (12,), (16,)]}]
""")


@pytest.mark.slow
def test_smoke_sweep_over_n_runs_end_to_end_resumes_and_aggregates(tmp_path):
    root = tmp_path / "sweep"
    launcher = tmp_path / "flaky_launcher.py"
    launcher.write_text(FLAKY_LAUNCHER.format(crossover=os.path.join(REPO, "launch", "gmm_crossover.py")))
    (tmp_path / "smoke_n.py").write_text(SMOKE_SWEEP)
    args = [f"--config={SMOKE}", f"--sweep={tmp_path / 'smoke_n.py'}", "--config.training.steps=10",
            "--config.training.chunk_steps=10", "--config.sampling.num_steps=3", f"--launcher={launcher}",
            f"--workdir={root}"]
    names = ["data.train_sizes=8", "data.train_sizes=12", "data.train_sizes=16"]

    first = _sweep_cli(*args, timeout=120)
    assert first.returncode == 1, first.stderr[-2000:]  # one run failed; the others went on
    assert [os.path.exists(root / n / "DONE") for n in names] == [True, False, True]
    failed = json.loads((root / names[1] / "FAILED").read_text())
    assert failed["exit_code"] == 1 and "simulated crash of the N=12 run" in failed["stderr_tail"]
    assert "| data.train_sizes=12 | failed |" in (root / "report.md").read_text()
    for name in names:  # as recorded before the launcher took its experiment's name: still the same experiment
        (root / name / "experiment.json").write_text(json.dumps({"experiment": "crossover"}) + "\n")

    second = _sweep_cli(*args, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    for name, launches, codes in zip(names, [1, 2, 1], [[0], [1, 0], [0]]):
        assert (root / name / "launches.log").read_text().count("launch") == launches
        attempts = [json.loads(line) for line in (root / name / "attempts.jsonl").read_text().splitlines()]
        assert [a["exit_code"] for a in attempts] == codes  # done exactly once
        log = (root / name / "run.log").read_text()  # every attempt's output is kept, in order
        assert log.count("--- attempt started") == launches
        assert ("simulated crash of the N=12 run" in log) == (name == names[1])
        assert not (root / name / "FAILED").exists()
        config = json.loads((root / name / "config.json").read_text())
        assert config["data"]["train_sizes"] == [int(name.split("=")[1])] and config["training"]["steps"] == 10

    with open(root / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == names and {r["status"] for r in rows} == {"done"}
    assert [r["data.train_sizes"] for r in rows] == ["8", "12", "16"]
    assert [int(r["rows.0.N"]) for r in rows] == [8, 12, 16]
    assert all(0 < float(r["rows.0.M_pt"]) <= int(r["rows.0.N"]) for r in rows)
    report = (root / "report.md").read_text()
    assert "runs: 3 (3 done, 0 failed, 0 pending)" in report and "jax 0." in report and "optax" in report
    assert "![data.train_sizes=16/crossover.png](data.train_sizes=16/crossover.png)" in report
    assert "![rows.0.M_pt, rows.0.Mstar_formula_eps versus rows.0.N](results.png)" in report
    assert (root / "results.png").stat().st_size > 0
    assert (root / "results.md").read_text().startswith("| run | status | data.train_sizes |")


def test_a_finished_run_of_another_config_is_not_counted_as_done(smoke_config, tmp_path):
    from jaxmem import io

    (run,) = expand.expand(smoke_config, [{"training.steps": [10]}], str(tmp_path))
    os.makedirs(run.workdir)
    io.write_json(os.path.join(run.workdir, execute.DONE), {"seconds": 1.0})
    io.save_config(run.workdir, expand.resolve(smoke_config, {"training.steps": 10, "seed": 7}))
    with pytest.raises(ValueError, match="finished with another config"):
        execute.execute([run], smoke_config, SMOKE, launcher="/nonexistent/launcher.py")
    io.save_config(run.workdir, expand.resolve(smoke_config, run.values))
    assert execute.execute([run], smoke_config, SMOKE, launcher="/nonexistent/launcher.py") == {run.name: "done"}


def test_a_run_finished_before_a_field_existed_counts_as_done_at_its_earlier_value(smoke_config, tmp_path):
    import json
    from jaxmem import io

    (run,) = expand.expand(smoke_config, [{"training.steps": [10]}], str(tmp_path))
    os.makedirs(run.workdir)
    io.write_json(os.path.join(run.workdir, execute.DONE), {"seconds": 1.0})
    recorded = json.loads(io.config_json(expand.resolve(smoke_config, run.values)))
    del recorded["model"]["window_rounds"], recorded["model"]["window_tolerance"]  # written before they existed
    io.write_json(os.path.join(run.workdir, "config.json"), recorded)
    assert smoke_config.model.window_rounds == 0  # the earlier behaviour
    assert execute.execute([run], smoke_config, SMOKE, launcher="/nonexistent/launcher.py") == {run.name: "done"}
    with smoke_config.unlocked():
        smoke_config.model.window_rounds = 2
    with pytest.raises(ValueError, match="fields that differ: model.window_rounds"):
        execute.execute([run], smoke_config, SMOKE, launcher="/nonexistent/launcher.py")

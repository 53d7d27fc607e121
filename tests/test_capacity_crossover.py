"""The U-Net capacity crossover: onset interpolation, fits, the sweep analysis hook end to end on
fake run folders, and the unet_crossover_* sweep files against their base presets."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxmem.experiments import unet_crossover as cc
from jaxmem import io, theory
from jaxmem.sweep import aggregate, execute, expand
from jaxmem.config import config_module, load_config

from conftest import REPO


def test_onset_is_interpolated_linearly_in_log_capacity():
    # j = 2: log c* = log 1e5 + (log 1e6 - log 1e5) (0.5 - 0.2) / (0.8 - 0.2) = log 10^5.5
    value, reason = cc.onset_capacity([1e4, 1e5, 1e6], [0.0, 0.2, 0.8])
    assert reason == "" and value == pytest.approx(10**5.5, rel=1e-12)
    assert cc.onset_capacity([100, 400], [0.1, 0.5], threshold=0.3)[0] == pytest.approx(200.0)  # sqrt(100 * 400)
    assert cc.onset_capacity([100, 400, 900], [0.1, 0.5, 1.0])[0] == pytest.approx(400.0)  # reached exactly
    # the first crossing counts, not a later dip and rise
    assert cc.onset_capacity([1, 2, 4, 8], [0.0, 1.0, 0.0, 1.0])[0] == pytest.approx(2 ** 0.5)


def test_no_onset_inside_the_swept_capacities_gives_nan_and_a_reason():
    value, reason = cc.onset_capacity([1e3, 1e4, 1e5], [0.0, 0.1, 0.4])
    assert math.isnan(value) and reason == "never reached 0.5: rate 0.4 at the largest capacity 1e+05"
    value, reason = cc.onset_capacity([1e3, 1e4], [0.6, 0.9])
    assert math.isnan(value) and reason.startswith("memorising already at the smallest capacity 1000 (rate 0.6")


def test_bad_input_fails_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"threshold = 0.0 is invalid; allowed: a rate in \(0, 1\]"):
        cc.onset_capacity([1, 2], [0, 1], threshold=0.0)
    with pytest.raises(ValueError, match="capacities = .* positive and strictly increasing"):
        cc.onset_capacity([2, 1], [0, 1])
    with pytest.raises(ValueError, match=r"rates = \[0.0, 1.5\] is invalid; allowed: rates in \[0, 1\]"):
        cc.onset_capacity([1, 2], [0, 1.5])
    with pytest.raises(ValueError, match="one length"):
        cc.onset_capacity([1, 2, 3], [0, 1])
    rows = [dict(run="a", status="done", num_train=16, parameters=1000, loss=0.1)]
    with pytest.raises(ValueError, match=r"rate='memorization_rate'.*columns there: loss, num_train, "
                                         r"parameters, run, status"):
        cc.capacity_curves(rows)
    with pytest.raises(ValueError, match="memorization_rate of run a = 2.0 is invalid; allowed: a rate in"):
        cc.capacity_curves([dict(rows[0], memorization_rate=2.0)])
    with pytest.raises(ValueError, match="GMM table .* has none of the column pairs"):
        (tmp_path / "gmm.csv").write_text("N,M\n20,15\n")
        cc.gmm_reference([str(tmp_path / "gmm.csv")])


def _synthetic_rows(slope=1000.0, intercept=500.0, sizes=(16, 32, 64, 128)):
    """Rows whose rate is 0.5 + 0.25 log2(c / c*(N)) (clipped) with c*(N) = slope N + intercept, at
    capacities c*/4, c*/2, 2 c*, 4 c*: the log interpolation between c*/2 and 2 c* is exact."""
    rows = []
    for n in sizes:
        star = slope * n + intercept
        for factor in (0.25, 0.5, 2.0, 4.0):
            rate = float(np.clip(0.5 + 0.25 * np.log2(factor), 0.0, 1.0))
            rows.append(dict(run=f"n{n}_c{factor}", status="done", num_train=n, parameters=star * factor,
                             memorization_rate=rate))
    return rows


def test_fit_recovers_a_known_line_from_synthetic_rows():
    rows = _synthetic_rows()
    rows.append(dict(run="failed", status="failed", num_train=16, parameters=1.0, memorization_rate=0.9))
    rows.append(dict(run="dup", status="done", num_train="16", parameters=str(16500 * 4.0), memorization_rate="0.5"))
    curves = cc.capacity_curves(rows)
    assert list(curves) == [16, 32, 64, 128]
    caps, rates, runs = curves[16]
    assert runs == 5 and rates[-1] == pytest.approx(0.75)  # (1.0 + 0.5) / 2 at 4 c*; the failed run ignored
    table = cc.crossover_table(curves)
    stars = [r["capacity_star"] for r in table]
    np.testing.assert_allclose(stars, [1000.0 * n + 500.0 for n in (16, 32, 64, 128)], rtol=1e-12)
    fit = theory.linear_fits([r["N"] for r in table], stars)
    assert fit["slope"] == pytest.approx(1000.0) and fit["intercept"] == pytest.approx(500.0, abs=1e-6)
    assert fit["r2"] == pytest.approx(1.0) and fit["points"] == 4
    n = np.array([16, 32, 64, 128.0])
    assert fit["slope_origin"] == pytest.approx(np.sum(n * (1000 * n + 500)) / np.sum(n * n))
    assert fit["r2_origin"] < 1.0
    assert math.isnan(theory.linear_fits([16], [5.0])["slope"]) and theory.linear_fits([16], [5.0])["slope_origin"] == 5 / 16


def _fake_sweep(root, base, rows_by_name):
    """A sweep root like launch/sweep.py leaves it: sweep.json, and per run sweep_run.json, DONE and
    summary.json (what launch/edm_training.py writes)."""
    for name, (values, summary) in rows_by_name.items():
        workdir = os.path.join(root, name)
        io.write_json(os.path.join(workdir, execute.RUN_FILE), dict(name=name, values=values))
        io.write_json(os.path.join(workdir, execute.DONE), dict(seconds=1.0))
        io.write_json(os.path.join(workdir, "summary.json"), summary)


@pytest.mark.slow
def test_the_analysis_hook_writes_table_figures_and_report_lines(tmp_path):
    sweep_file = os.path.join(REPO, "configs", "sweeps", "unet_crossover_digits.py")
    analysis = expand.load_sweep_analysis(sweep_file)
    assert analysis["function"] == "jaxmem.experiments.unet_crossover:analyze"
    gmm_csv = tmp_path / "gmm_results.csv"  # a GMM crossover sweep's results.csv: M_pt = 0.75 N + 1
    gmm_csv.write_text("run,status,rows.0.N,rows.0.M_pt\na,done,20,16\nb,done,40,31\nc,done,60,46\nd,failed,,\n")
    analysis["options"]["gmm_results"] = [str(tmp_path / "missing.csv"), str(gmm_csv)]
    root = str(tmp_path / "sweep")
    runs = {}
    for row in _synthetic_rows(sizes=(16, 32, 64)):
        name = row["run"]
        runs[name] = ({"data.num_train": row["num_train"]}, dict(
            num_train=row["num_train"], parameters=row["parameters"], memorization_rate=row["memorization_rate"],
            steps=10, quality={"train": {"fid": 10.0 + row["memorization_rate"]},
                               "heldout": {"fid": 20.0 + row["memorization_rate"], "precision": 0.5}}))
    runs["n512_never"] = ({"data.num_train": 512}, dict(num_train=512, parameters=1000, memorization_rate=0.1))
    _fake_sweep(root, None, runs)
    aggregate.write_sweep_record(root, "configs/edm_training.py:crossover_digits", "launch/edm_training.py",
                             [expand.Run(n, v, os.path.join(root, n)) for n, (v, _) in runs.items()],
                             analysis=analysis)

    result = subprocess.run([sys.executable, os.path.join(REPO, "launch", "sweep.py"), f"--workdir={root}",
                             "--aggregate_only"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(root, "capacity_crossover.csv")) as f:
        table = list(csv.DictReader(f))
    assert [int(r["N"]) for r in table] == [16, 32, 64, 512]
    np.testing.assert_allclose([float(r["capacity_star"]) for r in table[:3]], [16500, 32500, 64500], rtol=1e-5)
    assert table[3]["capacity_star"] == "nan" and table[3]["reason"].startswith("never reached 0.5")
    summary = json.loads(open(os.path.join(root, "capacity_crossover.json")).read())
    assert summary["fit"]["slope"] == pytest.approx(1000.0) and summary["fit"]["points"] == 3
    assert summary["gmm"]["source"] == str(gmm_csv) and summary["gmm"]["fit"]["slope"] == pytest.approx(0.75)
    for png in ("capacity_crossover.png", "memorization_vs_capacity.png"):
        assert os.path.getsize(os.path.join(root, png)) > 1000
    report = open(os.path.join(root, "report.md")).read()
    assert "## Capacity crossover" in report and "[capacity_crossover.csv](capacity_crossover.csv)" in report
    assert "(capacity_crossover.png)" in report and "(memorization_vs_capacity.png)" in report
    assert "parameters* = 1000 N + 500" in report and "| 512 | nan |" in report
    assert "per data dimension (d = 64)" in report
    assert "fit: parameters* = 1000 N + 500" in open(os.path.join(root, "capacity_crossover.md")).read()
    with open(os.path.join(root, "quality_vs_capacity.csv")) as f:
        quality = list(csv.DictReader(f))
    assert len(quality) == len(runs) - 1  # every run with a quality summary, by (N, parameters)
    assert [(int(r["N"]), float(r["parameters"])) for r in quality] == sorted(
        (int(r["N"]), float(r["parameters"])) for r in quality)
    for r in quality:
        assert float(r["fid_train"]) == pytest.approx(10.0 + float(r["memorization_rate"]))
        assert float(r["fid_heldout"]) == pytest.approx(20.0 + float(r["memorization_rate"]))
        assert float(r["precision_heldout"]) == 0.5 and r["recall_heldout"] == "nan"
    assert "## Sample quality beside memorisation" in report and "| fid_train |" in report

    # without a GMM table: the closed-form line, named as such
    lines = cc.analyze(aggregate.aggregate(root)["rows"][:12], str(tmp_path / "other"), gmm_results=())
    assert any("closed form M* = 0.660 N (x0 weighting" in line for line in lines)

    # a failing analysis: the report says so, then the error is raised
    meta = json.loads(open(os.path.join(root, "sweep.json")).read())
    meta["analysis"]["options"]["rate"] = "no_such_column"
    io.write_json(os.path.join(root, "sweep.json"), meta)
    with pytest.raises(ValueError, match="analysis jaxmem.experiments.unet_crossover:analyze of .* failed"):
        aggregate.aggregate(root)
    assert "## Analysis jaxmem.experiments.unet_crossover:analyze failed" in open(os.path.join(root, "report.md")).read()


def test_bad_analysis_specs_fail_when_the_sweep_file_is_loaded(tmp_path):
    for text, message in [("ANALYSIS = 'jaxmem.experiments.unet_crossover'", "allowed: 'package.module:function'"),
                          ("ANALYSIS = 'jaxmem.experiments.unet_crossover:nope'", "cannot be loaded"),
                          ("ANALYSIS = 'jaxmem.experiments.unet_crossover:analyze'\nANALYSIS_OPTIONS = [1]",
                           "must be a dict")]:
        (tmp_path / "s.py").write_text(text + "\ndef get_sweep():\n    return []\n")
        with pytest.raises(ValueError, match=message):
            expand.load_sweep_analysis(str(tmp_path / "s.py"))
    (tmp_path / "s.py").write_text("def get_sweep():\n    return []\n")
    assert expand.load_sweep_analysis(str(tmp_path / "s.py")) is None


@pytest.mark.parametrize("family, preset, runs", [("digits", "digits", 30), ("mnist", "mnist", 24),
                                                  ("cifar10", "cifar10", 20), ("cpu", "digits", 9)])
def test_the_unet_crossover_sweep_files_expand_against_their_presets(family, preset, runs, tmp_path):
    from jaxmem.denoisers import unet
    from jaxmem.train import trainer

    config = load_config(os.path.join(REPO, f"configs/edm_training.py:crossover_{preset}"))
    path = os.path.join(REPO, "configs", "sweeps", f"unet_crossover_{family}.py")
    axes, plot = expand.load_sweep_file(path)
    expanded = expand.expand(config, axes, str(tmp_path))
    assert len(expanded) == runs and plot is None
    assert expand.load_sweep_analysis(path)["function"] == "jaxmem.experiments.unet_crossover:analyze"
    assert config.sampling.num_samples >= 256 and config.sampling.solver in ("heun", "euler")
    widths = sorted({r.values["model.channels"] for r in expanded})
    params = []
    for run in expanded[:len(widths)]:  # one run per width: every width builds (GroupNorm divides)
        resolved = expand.resolve(config, run.values)
        assert resolved.model.embed_dim == 4 * resolved.model.channels
        trainer.validate_training_config(resolved, 1)
        network = unet.network_from_config(resolved.model)
        params.append(unet.count_params(unet.abstract_params(network, unet.input_shape(resolved.model))))
    assert params == sorted(params) and params[-1] > 10 * params[0]
    sizes = sorted({r.values["data.num_train"] for r in expanded})
    assert sizes[-1] / sizes[0] >= 16
    if family != "cifar10":  # fixed epochs: total_images = max(EPOCHS x N, MIN_IMAGES) in every run
        module = config_module(path, "sweep file")
        for run in expanded:
            n = run.values["data.num_train"]
            assert expand.resolve(config, run.values).training.total_images == max(
                module.EPOCHS * n, getattr(module, "MIN_IMAGES", 0))


def test_sweep_axes_zip_images_with_n_for_fixed_epochs():
    axes = cc.sweep_axes([16, 64], [8, 32], epochs=100)
    assert axes == [{"data.num_train": [16, 64], "training.total_images": [1_600, 6_400]},
                    {"model.channels": [8, 32], "model.embed_dim": [32, 128]}]
    assert cc.sweep_axes([16, 64], [8], epochs=100, min_images=4_000)[0]["training.total_images"] == [4_000, 6_400]
    assert "training.total_images" not in cc.sweep_axes([16], [8])[0]
    with pytest.raises(ValueError, match="epochs"):
        cc.sweep_axes([16], [8], epochs=0)

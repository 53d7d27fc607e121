"""The tables and the report of the crossover experiment (jaxmem.experiments.gmm_crossover);
the rows they show come from analysis.py.

model_rows, per_t_rows: one row per trained model, per (model, t). write_report: report.md with
the command, versions, wall time and every table and figure of a run. read_table: a finished
run's crossover.csv or models.csv back, numbers as numbers. compare_runs: two runs' tables side
by side.
"""

from __future__ import annotations

import csv
import datetime
import importlib.metadata
import os
import platform
import sys

import numpy as np

from jaxmem import io, theory
from jaxmem.experiments.gmm_crossover.analysis import AnalysisSettings, models_of_set, set_multiplicity
from jaxmem.validation import ConfigError


def read_table(workdir: str, name: str) -> list[dict]:
    """The rows of a crossover run's table `name` (crossover.csv, models.csv) in `workdir`, cells
    that are numbers as int or float; ConfigError when the run has not written it."""
    path = os.path.join(workdir, name)
    if not os.path.isfile(path):
        raise ConfigError(f"{path} does not exist: run the crossover experiment into {workdir} first")
    with open(path, errors="replace") as f:
        rows = list(csv.DictReader(f))
    for line, row in enumerate(rows, 2):
        if None in row or None in row.values():  # more or fewer cells than the header names
            raise ConfigError(f"{path} line {line} does not match its header: not a table the crossover "
                              "experiment wrote")
    return [{k: number_or_text(v) for k, v in row.items()} for row in rows]


def number_or_text(text: str):
    """'3' -> 3, '0.25' -> 0.25, anything else unchanged (a CSV cell or a swept value's text)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def model_rows(settings: AnalysisSettings, dim: int, result: dict) -> list[dict]:
    """One row per trained model of a grid of dimension `dim`: capacity, memorisation ratio, final
    s^2, whether it belongs to the refinement grid, and weighted losses (x0-unit per-t losses
    combined with each weighting of `settings`) on the training and validation sets. With
    replicated data, per multiplicity m of the set: ratio_x<m> (share of the samples that memorise
    a point stored m times; they sum to the ratio) and enrichment_x<m> (ratio_x<m> / ratio over
    the share of distinct points stored m times: 1 when memorised samples land on points
    regardless of their multiplicity; NaN at ratio 0)."""
    times, custom = result["times"], settings.custom_weights
    set_of_model = np.zeros(len(result["M"]), np.int64)
    for j in range(len(result["set_N"])):
        set_of_model[models_of_set(result, j)] = j
    rows = []
    for g in range(len(result["M"])):
        row = dict(d=dim, K=int(result["K"][g]), N=int(result["N"][g]), seed=int(result["seed"][g]),
                   M=int(result["M"][g]), M_over_N=float(result["M"][g] / result["N"][g]),
                   ratio=float(result["ratio"][g]), variance=float(result["variance"][g]),
                   skipped_steps=int(result["skipped"][g]), refinement=bool(result["refinement"][g]),
                   round=int(result["round"][g]))
        for weighting in settings.weightings:
            for split in ("train", "val"):
                row[f"{split}_loss_{weighting}"] = float(theory.weighted_loss(
                    result[f"{split}_loss"][g], times, weighting, custom))
        counts = set_multiplicity(result, set_of_model[g])
        if np.any(counts > 1):
            landed = result["landed_multiplicity"][g]
            for m in np.unique(counts):
                row[f"ratio_x{m}"] = float(np.mean(landed == m))
                row[f"enrichment_x{m}"] = (row[f"ratio_x{m}"] / row["ratio"] / np.mean(counts == m)
                                           if row["ratio"] > 0 else float("nan"))
        rows.append(row)
    return rows


def per_t_rows(dim: int, result: dict) -> list[dict]:
    """The per-t losses (x0 units, unweighted) of every data set's models, one row per (model, t):
    the generalising ground truth ('generalizing', M = K), the fully memorising baseline
    ('memorizing', M = N), the partially memorising baselines ('partial', each M of the
    crossover grid) and the trained models ('trained', with their validation loss; NaN for the
    baselines, which are measured on the training set)."""
    rows = []
    for j in range(len(result["set_N"])):
        key = dict(d=dim, K=int(result["set_K"][j]), N=int(result["set_N"][j]), seed=int(result["set_seed"][j]))
        curves = [("generalizing", key["K"], result["gen_loss"][j], None),
                  ("memorizing", key["N"], result["mem_loss"][j], None)]
        curves += [("partial", int(m), loss, None) for m, loss in zip(result["pmem_M"][j], result["pmem_loss"][j])
                   if np.isfinite(m)]
        of_set = np.nonzero(models_of_set(result, j))[0]
        curves += [("trained", int(result["M"][g]), result["train_loss"][g], result["val_loss"][g])
                   for g in of_set[np.argsort(result["M"][of_set])]]
        for model, m, train, val in curves:
            rows += [dict(**key, model=model, M=m, t=float(t), train_loss=float(train[i]),
                          val_loss=float(val[i]) if val is not None else float("nan"))
                     for i, t in enumerate(result["times"])]
    return rows


def _versions() -> str:
    names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"python {platform.python_version()}, " + ", ".join(found)


def fit_text(fit: dict) -> str:
    """One line for a theory.linear_fits result: both lines with their standard errors, R^2, points."""
    sign = "-" if fit["intercept"] < 0 else "+"
    return (f"M_pt = {fit['slope']:.3f} (+-{fit['slope_se']:.3f}) N {sign} {abs(fit['intercept']):.1f} "
            f"(+-{fit['intercept_se']:.1f}), R^2 = {fit['r2']:.4f}; through the origin {fit['slope_origin']:.3f} "
            f"(+-{fit['slope_origin_se']:.3f}) N; {fit['points']} points (+- = one standard error)")


def write_report(path: str, config, summary: dict, wall_s: float, devices: str) -> str:
    """report.md: command, date, versions, devices, wall time, the fit, the per-N and per-set
    tables and links to the figures of a crossover run (summary: crossover.run's)."""
    fit, pooled, predicted = summary["fit"], summary["by_N"], summary["predicted_slopes"]
    text = [
        "# GMM laboratory: memorisation capacity M_pt versus N", "",
        f"- command: `{' '.join(sys.argv) if sys.argv and sys.argv[0] else 'crossover.run'}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; devices: {devices}",
        f"- versions: {_versions()}",
        f"- wall time of this invocation: {wall_s / 60:.1f} min (a rerun that resumes finished grids is "
        "faster)",
        f"- models trained: {sum(r['models'] for r in pooled)}; search: {config.model.search}; "
        f"training: {config.training.steps} steps, peak lr {config.training.peak_lr}, "
        f"Adam b2 {config.training.adam_b2}, "
        f"{config.training.noise_draws} draws ({config.training.estimator})", "",
        "## Fit", "", fit_text(fit), "",
        "Predicted slopes (fits of the predicted M* over the same data sets): "
        + ", ".join(f"{k} = {v:.3f}" for k, v in predicted.items()), "",
        "## M_pt per N (mean over seeds, Student-t 95% interval)", "", io.markdown_table(pooled), "",
        "## Per data set", "", io.markdown_table(summary["rows"]), "",
        "![M_pt versus N](crossover.png)", "", "![memorisation ratio versus M/N](memorization_ratio.png)", ""]
    return io.write_text(path, "\n".join(text))




def compare_runs(reference: list[dict], candidate: list[dict], reference_rows: list[dict],
                 candidate_rows: list[dict], tolerance: float = 0.1) -> tuple[list[dict], list[dict]]:
    """The equivalence of two protocols on the same data sets (e.g. anchor_full vs anchor_cheap).

    reference, candidate: models.csv rows (d, K, N, seed, M, ratio) of the two runs;
    reference_rows, candidate_rows: their crossover.csv rows. Returns (per capacity: both
    ratios, |difference| and whether it is <= tolerance; per data set: both M_pt, the
    reference's delta window and whether the candidate's M_pt lies inside it).
    """
    key = lambda r: (int(r["d"]), int(r["K"]), int(r["N"]), int(r["seed"]))  # noqa: E731
    cheap = {key(r) + (int(r["M"]),): float(r["ratio"]) for r in candidate}
    per_capacity = []
    for r in reference:
        other = cheap.get(key(r) + (int(r["M"]),))
        if other is None:
            continue
        difference = abs(other - float(r["ratio"]))
        per_capacity.append(dict(N=int(r["N"]), seed=int(r["seed"]), M=int(r["M"]),
                                 ratio_reference=float(r["ratio"]), ratio_candidate=other,
                                 abs_difference=difference, within=bool(difference <= tolerance)))
    candidates = {key(r): float(r["M_pt"]) for r in candidate_rows}
    per_set = []
    for r in reference_rows:
        if key(r) not in candidates:
            continue
        start, end, m_pt = float(r["window_start"]), float(r["window_end"]), candidates[key(r)]
        per_set.append(dict(N=int(r["N"]), seed=int(r["seed"]), M_pt_reference=float(r["M_pt"]),
                            window_start=start, window_end=end, M_pt_candidate=m_pt,
                            inside_window=bool(start <= m_pt <= end)))
    return per_capacity, per_set

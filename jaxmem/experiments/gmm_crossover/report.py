"""Tables, fits and the report of the crossover experiment (jaxmem.experiments.gmm_crossover).

summarize: one row per data set (d, K, N, seed): M_pt (first crossing of ratio 0.5,
interpolated), its delta window, the bracket of the last search round, models trained, and
M* predicted by the closed form and the measured losses per weighting. by_train_size: the
rows of one (d, K, N) pooled over seeds: mean M_pt with a Student-t 95% interval.
linear_fits: least squares with standard errors. write_report: report.md with the command,
versions, wall time and every table and figure of a run. read_table: a finished run's
crossover.csv or models.csv back, numbers as numbers.
"""

from __future__ import annotations

import csv
import datetime
import importlib.metadata
import os
import platform
import sys

import numpy as np
from scipy import stats

from jaxmem import io, theory
from jaxmem.validation import ConfigError, require
from jaxmem.experiments.gmm_crossover import search


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


def models_of_set(result: dict, j: int) -> np.ndarray:
    """[G] bool: the models of a result trained on its data set j (same K, N and seed)."""
    return ((result["K"] == result["set_K"][j]) & (result["N"] == result["set_N"][j])
            & (result["seed"] == result["set_seed"][j]))


def measured_capacity(result: dict, j: int, weighting: str, custom=None) -> tuple[float, float]:
    """(M*, weighted ground-truth loss) of data set j from its baselines: M* is the capacity
    where the weighted partial-memorisation loss falls to the ground truth's."""
    valid = np.isfinite(result["pmem_M"][j])
    gen = theory.weighted_loss(result["gen_loss"][j], result["times"], weighting, custom)
    pmem = theory.weighted_loss(result["pmem_loss"][j][valid], result["times"], weighting, custom)
    return theory.measured_crossover(result["pmem_M"][j][valid], pmem, gen), float(gen)


def dimension_variances(config, dim: int) -> np.ndarray:
    """Per-dimension variances of the data model for the closed form (theory.formula_crossover_fraction):
    [s0^2] (isotropic: every dimension alike), C x s0^2 and (d - C) x tau^2 (subspace), [NaN]
    (low-rank: no GMM truth)."""
    data = config.data
    if data.model == "isotropic":
        return np.array([data.variance], np.float64)
    if data.model == "subspace":
        return np.concatenate([np.full(data.rank, data.variance), np.full(dim - data.rank, data.off_variance)])
    return np.array([np.nan])


def set_multiplicity(result: dict, j: int) -> np.ndarray:
    """[N] copies of each distinct point of data set j (ones for results without replication)."""
    n = int(result["set_N"][j])
    if "set_multiplicity" not in result:
        return np.ones(n, np.int64)
    return np.asarray(result["set_multiplicity"][j][:n], np.int64)


def transition_window(m, ratio, delta: float, fallback: str = "nan") -> tuple[float, float]:
    """(start, end): the first M at which the ratio (over increasing M) reaches delta and 1 - delta
    (theory.first_crossing). Where it never does, NaN (fallback 'nan'), or the first M trained
    for the start and the last for the end (fallback 'capacities': the authors' code)."""
    start, end = theory.first_crossing(m, ratio, delta), theory.first_crossing(m, ratio, 1.0 - delta)
    if fallback == "capacities":
        start = float(m[0]) if np.isnan(start) else start
        end = float(m[-1]) if np.isnan(end) else end
    return start, end


def summarize(config, dim: int, result: dict) -> list[dict]:
    """One table row per data set (d, K, N, seed): M_pt, delta window, predicted M* per method."""
    times, delta = result["times"], config.eval.delta
    rows = []
    for j in range(len(result["set_N"])):
        k, n, s = int(result["set_K"][j]), int(result["set_N"][j]), int(result["set_seed"][j])
        of_set = models_of_set(result, j)
        order = np.argsort(result["M"][of_set])
        m, ratio = result["M"][of_set][order], result["ratio"][of_set][order]
        start, end = transition_window(m, ratio, delta, config.eval.get("window_fallback", "nan"))
        row = dict(d=dim, K=k, N=n, seed=s, M_pt=theory.first_crossing(m, ratio, 0.5),
                   window_start=start, window_end=end,
                   ratio_at_max_M=float(ratio[-1]), models=int(of_set.sum()))
        row["bracket_lo"], row["bracket_hi"], _ = search.bracket(m, ratio, n)
        counts = set_multiplicity(result, j)
        if np.any(counts > 1):  # replicated data: stored rows and replicated points
            row.update(rows=int(counts.sum()), replicated_points=int(np.sum(counts > 1)))
        for weighting in config.eval.weightings:
            custom = config.training.custom_weights
            fraction = theory.formula_crossover_fraction(times, weighting, dimension_variances(config, dim), custom)
            row[f"Mstar_formula_{weighting}"] = (theory.covered_capacity(counts, fraction) if np.any(counts > 1)
                                                 else n * fraction)
            row[f"Mstar_measured_{weighting}"], row[f"gen_loss_{weighting}"] = measured_capacity(
                result, j, weighting, custom)
            row[f"mem_loss_{weighting}"] = float(theory.weighted_loss(result["mem_loss"][j], times, weighting, custom))
        rows.append(row)
    return rows


def model_rows(config, dim: int, result: dict) -> list[dict]:
    """One row per trained model: capacity, memorisation ratio, final s^2, whether it belongs to
    the refinement grid, and weighted losses (x0-unit per-t losses combined with each
    weighting) on the training and validation sets. With replicated data, per multiplicity m of
    the set: ratio_x<m> (share of the samples that memorise a point stored m times; they sum to
    the ratio) and enrichment_x<m> (ratio_x<m> / ratio over the share of distinct points stored m
    times: 1 when memorised samples land on points regardless of their multiplicity; NaN at
    ratio 0)."""
    times, custom = result["times"], config.training.custom_weights
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
        for weighting in config.eval.weightings:
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


def linear_fits(n, capacity_star) -> dict:
    """Least-squares lines through the finite points: y = slope N + intercept and y = slope_origin N
    (y: M* here, the U-Net capacity* in jaxmem.experiments.unet_crossover); R^2 = 1 - SS_res / SS_tot
    (SS_tot about the mean, so the origin fit's R^2 can be negative). NaN where fewer than 2
    points (1 for the origin fit)."""
    n, c = np.asarray(n, np.float64), np.asarray(capacity_star, np.float64)
    require(n.shape == c.shape and n.ndim == 1, "n, capacity_star", (n.shape, c.shape),
            "two 1-D arrays of one length")
    ok = np.isfinite(c) & np.isfinite(n)
    n, c = n[ok], c[ok]
    nan = float("nan")
    fit = dict(slope=nan, intercept=nan, r2=nan, slope_origin=nan, r2_origin=nan, points=int(ok.sum()),
               slope_se=nan, intercept_se=nan, slope_origin_se=nan)
    total = float(np.sum((c - c.mean()) ** 2)) if c.size else nan

    def r2(residual):
        return 1.0 - float(np.sum(residual**2)) / total if total > 0 else 1.0

    if c.size >= 1 and np.any(n != 0):
        fit["slope_origin"] = float(np.sum(n * c) / np.sum(n * n))
        fit["r2_origin"] = r2(c - fit["slope_origin"] * n)
        if c.size >= 2:
            residual = c - fit["slope_origin"] * n
            fit["slope_origin_se"] = float(np.sqrt(np.sum(residual**2) / (c.size - 1) / np.sum(n * n)))
    if c.size >= 2 and np.ptp(n) > 0:
        slope, intercept = np.polyfit(n, c, 1)
        fit.update(slope=float(slope), intercept=float(intercept), r2=r2(c - (slope * n + intercept)))
        if c.size >= 3:  # ordinary least-squares standard errors
            s2 = float(np.sum((c - (slope * n + intercept)) ** 2)) / (c.size - 2)
            sxx = float(np.sum((n - n.mean()) ** 2))
            fit["slope_se"] = float(np.sqrt(s2 / sxx))
            fit["intercept_se"] = float(np.sqrt(s2 * (1.0 / c.size + n.mean() ** 2 / sxx)))
    return fit


def by_train_size(rows: list[dict]) -> list[dict]:
    """The rows of each (d, K, N) pooled over seeds: M_pt mean, standard deviation, Student-t 95%
    interval (NaN half-width for one seed), seeds with a transition, models trained, and the
    mean predicted M* per method."""
    pooled = []
    for key in sorted({(r["d"], r["K"], r["N"]) for r in rows}):
        mine = [r for r in rows if (r["d"], r["K"], r["N"]) == key]
        m_pt = np.array([r["M_pt"] for r in mine], np.float64)
        ok = m_pt[np.isfinite(m_pt)]
        half = (float(stats.t.ppf(0.975, ok.size - 1) * ok.std(ddof=1) / np.sqrt(ok.size))
                if ok.size >= 2 else float("nan"))
        mean = float(ok.mean()) if ok.size else float("nan")
        row = dict(d=key[0], K=key[1], N=key[2], seeds=len(mine), with_transition=int(ok.size), M_pt=mean,
                   M_pt_sd=float(ok.std(ddof=1)) if ok.size >= 2 else float("nan"),
                   ci95_lo=mean - half, ci95_hi=mean + half, M_pt_over_N=mean / key[2],
                   models=int(sum(r["models"] for r in mine)))
        for name in [k for k in mine[0] if k.startswith("Mstar_")]:
            values = np.array([r[name] for r in mine], np.float64)
            row[name] = float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")
        pooled.append(row)
    return pooled


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
    """One line for a linear_fits result: both lines with their standard errors, R^2, points."""
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

"""The numbers behind the corrections of results/gmm_structure/README.md, recomputed from that
folder's committed CSVs only (no training; launch/gmm_structure_recheck.py writes them to
results/gmm_structure/recheck.md). numpy, scipy.stats and the csv module; 0.1 s.

Sections of the report (recheck):
  1. p = 0.1: the measured-loss M*/N per N (structure.csv) and per data set (crossover_p0.1.csv),
     and the least-squares slopes over N (with intercept; jaxmem.theory.linear_fits) of M_pt and
     of the measured-loss M* over the per-seed points, with standard errors; their difference
     over the measured slope's SE and over the combined SE (the two SEs added in quadrature).
  2. Where memorised samples land: per model with ratio >= MIN_RATIO (the README's table) the
     counts behind the enrichment of points stored 10 times: `memorised` = samples * ratio of
     the model's samples memorise a training point, `on_10x` = samples * ratio_x10 of them a
     point stored 10 times; enrichment = (on_10x / memorised) / p (p: the share of distinct
     points stored 10 times; ceiling 1 / p, every memorised sample on such a point), and an
     exact binomial (Clopper-Pearson) 95% interval of on_10x / memorised divided by p. The
     interval is over the model's samples only (one trained model), not over seeds. Then the
     same with the counts of the seeds summed per (p, M/N).
  3. Rank (subspace GMM of intrinsic dimension C): whether the measured-loss M*/N lies inside
     the Student-t 95% interval over seeds of M_pt / N.
  4. Per data set whose window end is NaN (the ratio never reaches 1 - delta among the M the
     adaptive search trained): the largest M/N trained and the ratio there; then the fixed M/N
     grid of rates/ (the same N = 200 data sets, other draws) with its window and M_pt, next to
     the adaptive run's.
  5. The intervals over seeds of M_pt wider than half their mean.
  6. p = 0.3: train loss (x0 units) of the replicated-first start against the paper's start at
     the (N, seed, M) both trained.

Cells print as `.3g` (rounded to 3 decimals first where the section says so), integers and
booleans as they are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from jaxmem import io, theory
from jaxmem.config import load_config
from jaxmem.experiments.gmm_crossover.analysis import transition_window
from jaxmem.experiments.gmm_crossover.report import read_table
from jaxmem.plots.structure import MIN_RATIO
from jaxmem.validation import ConfigError

# The preset the rates/ runs were made with (its samples per model, N and delta).
RATES_PRESET = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "gmm_crossover.py") + \
    ":replication_rates"
COMMAND = "launch/gmm_structure_recheck.py"
FRACTIONS = (0.1, 0.3)  # the fractions p of replicated points of rates/ and replication/
LEVEL = 0.95  # of every interval
EXAMPLE = dict(N=200, seed=0)  # the data set whose train losses section 6 lists
# Section 4's adaptive runs: (name, crossover table, models table); the rank runs commit no
# models.csv, so only the ratio at the largest M trained is known there.
WINDOW_RUNS = (("replication p=0.1", "replication/crossover_p0.1.csv", "replication/models_p0.1.csv"),
               ("replicated_first p=0.1", "replicated_first/p0.1_crossover.csv", "replicated_first/p0.1_models.csv"),
               ("replicated_first p=0.3", "replicated_first/p0.3_crossover.csv", "replicated_first/p0.3_models.csv"))
WINDOW_RANKS = (2, 5)
# The columns of the tables that can be empty.
WINDOW_COLUMNS = ("run", "N", "seed", "largest_M_over_N", "ratio_there")
WIDE_COLUMNS = ("run", "value", "N", "seeds", "M_pt", "ci95_lo", "ci95_hi", "width_over_mean")
LOSS_COLUMNS = ("N", "seed", "M", "ratio_first", "ratio_paper", "train_loss_x0_first", "train_loss_x0_paper")


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact binomial interval (lower, upper) of the proportion behind k successes in n
    trials: the (1 - level) / 2 and (1 + level) / 2 quantiles of Beta(k, n - k + 1) and
    Beta(k + 1, n - k); 0 for k = 0 and 1 for k = n."""
    from scipy import stats  # imported here: scipy.stats costs every launcher start ~0.6 s
    alpha = 1.0 - level
    lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


def read_rows(folder: str, name: str) -> list[dict]:
    """The rows of the CSV `name` under `folder` (report.read_table), typed per column: a column
    of integers stays int, one of numbers is float (an empty cell NaN), other cells stay text;
    ConfigError naming the file when it does not exist."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise ConfigError(f"{path} does not exist: the GMM structure recheck reads it (a results folder laid out "
                          "as results/gmm_structure)")
    rows = read_table(os.path.dirname(path), os.path.basename(path))
    for column in rows[0] if rows else ():
        cells = [row[column] for row in rows]
        if not all(isinstance(c, int) for c in cells) and all(isinstance(c, int | float) or c == "" for c in cells):
            for row in rows:
                row[column] = math.nan if row[column] == "" else float(row[column])
    return rows


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, rounded: bool = True) -> str:
    """jaxmem.io.markdown_table of `rows` (no final newline): a column of integers or of booleans
    as they are, any other number `.3g` (after rounding to 3 decimals when `rounded`), text as
    it is."""
    columns = list(columns or rows[0])
    texts = [{} for _ in rows]
    for column in columns:
        cells = [row[column] for row in rows]
        exact = (all(isinstance(v, bool | np.bool_) for v in cells)
                 or all(isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) for v in cells))
        for text, value in zip(texts, cells):
            if exact or isinstance(value, str):
                text[column] = str(value)
            else:
                text[column] = f"{float(np.round(value, 3)) if rounded else float(value):.3g}"
    return io.markdown_table(texts, columns).rstrip("\n")


def slopes(folder: str) -> list[str]:
    """Section 1 (p = 0.1): the measured-loss M*/N per N and per data set, and the slopes of
    M_pt and of the measured-loss M* over N with their standard errors."""
    sets = read_rows(folder, "replication/crossover_p0.1.csv")
    by_n = [r for r in read_rows(folder, "replication/structure.csv") if r["value"] == 0.1]
    n = np.array([r["N"] for r in sets], np.float64)
    measured = theory.linear_fits(n, [r["M_pt"] for r in sets])
    predicted = theory.linear_fits(n, [r["Mstar_measured_x0"] for r in sets])
    gap = measured["slope"] - predicted["slope"]
    combined = float(np.hypot(measured["slope_se"], predicted["slope_se"]))
    rows = [dict(quantity="slope of M_pt", value=measured["slope"], se=measured["slope_se"]),
            dict(quantity="slope of measured-loss M*", value=predicted["slope"], se=predicted["slope_se"]),
            dict(quantity="difference", value=gap, se=combined)]
    return ["## 1. p = 0.1: measured-loss M*/N and the slopes", "",
            "Per N (mean of the 2 seeds, `replication/structure.csv`): " + ", ".join(
                f"N = {int(r['N'])}: {r['Mstar_measured_x0'] / r['N']:.3f}" for r in by_n) + ".",
            "Per seed (`replication/crossover_p0.1.csv`): " + ", ".join(
                f"{r['Mstar_measured_x0'] / r['N']:.3f}" for r in sets) + ".", "",
            table(rows, rounded=False), "",
            f"Difference / SE of the measured slope: {gap / measured['slope_se']:.2f}; / the combined SE: "
            f"{gap / combined:.2f}.", ""]


def enrichment(folder: str, samples: int) -> list[str]:
    """Section 2: per model with ratio >= MIN_RATIO (`samples` samples each), memorised and
    on_10x counts, enrichment of points stored 10 times with its Clopper-Pearson interval over
    the model's samples, and the ceiling 1 / p; then the counts summed over seeds per (p, M/N)."""
    rows = []
    for p in FRACTIONS:
        name = f"rates/models_p{p}.csv"
        for r in read_rows(folder, name):
            if r["ratio"] < MIN_RATIO:
                continue
            n, k = int(round(samples * r["ratio"])), int(round(samples * r["ratio_x10"]))
            if not math.isclose(k / n / p, r["enrichment_x10"], rel_tol=1e-4):
                raise ConfigError(f"{os.path.join(folder, name)}: enrichment_x10 {r['enrichment_x10']} is not "
                                  f"the counts' {k} / {n} / {p} ({samples} samples per model)")
            lower, upper = clopper_pearson(k, n)
            rows.append(dict(p=p, M_over_N=r["M_over_N"], seed=int(r["seed"]), memorised=n, on_10x=k,
                             enrichment=k / n / p, ci95_lo=lower / p, ci95_hi=upper / p, ceiling=1 / p))
    pooled = {}
    for r in rows:
        pooled.setdefault((r["p"], r["M_over_N"]), []).append(r)
    summed = []
    for (p, m_over_n), group in sorted(pooled.items()):
        n, k = sum(r["memorised"] for r in group), sum(r["on_10x"] for r in group)
        lower, upper = clopper_pearson(k, n)
        summed.append(dict(p=p, M_over_N=m_over_n, memorised=n, on_10x=k, enrichment=k / n / p, ci95_lo=lower / p,
                           ci95_hi=upper / p, seeds=len(group)))
    return ["## 2. Enrichment of points stored 10 times, exact binomial 95% intervals", "",
            f"Models with ratio >= {MIN_RATIO} ({samples} samples each; `rates/models_p<p>.csv`). enrichment = "
            "(on_10x / memorised) / p; interval: Clopper-Pearson on on_10x of memorised, divided by p.", "",
            table(rows), "", "Seeds pooled (counts summed over the models above):", "", table(summed), ""]


def rank(folder: str) -> list[str]:
    """Section 3: per C, M_pt / N with its interval over seeds and the measured-loss M*/N, and
    whether the latter is inside."""
    rows = []
    for r in read_rows(folder, "rank/structure.csv"):
        row = dict(C=r["value"], M_pt_over_N=r["M_pt"] / r["N"], ci95_lo=r["ci95_lo"] / r["N"],
                   ci95_hi=r["ci95_hi"] / r["N"], measured_loss_over_N=r["Mstar_measured_x0"] / r["N"])
        row["inside"] = row["ci95_lo"] <= row["measured_loss_over_N"] <= row["ci95_hi"]
        rows.append(row)
    return ["## 3. Rank: the measured-loss prediction against the 95% interval of M_pt / N", "", table(rows), ""]


def window_ends(folder: str, train_size: int, delta: float, samples: int) -> list[str]:
    """Section 4: per data set of WINDOW_RUNS and the rank runs WINDOW_RANKS whose window end is
    NaN, the largest M/N trained (NaN for the rank runs) and the ratio at the largest M; then per
    p and seed the fixed grid's window start, M_pt and window end (delta window) at N =
    `train_size`, in units of N, next to the adaptive run's M_pt and window end."""
    rows = []
    for run, crossover, models in WINDOW_RUNS:
        largest = {}
        for r in read_rows(folder, models):
            largest[r["N"], r["seed"]] = max(largest.get((r["N"], r["seed"]), -math.inf), r["M_over_N"])
        for r in read_rows(folder, crossover):
            if _is_nan(r["window_end"]):
                if (r["N"], r["seed"]) not in largest:
                    raise ConfigError(f"{os.path.join(folder, models)} has no model of N = {r['N']}, seed "
                                      f"{r['seed']}, a data set of {os.path.join(folder, crossover)}")
                rows.append(dict(run=run, N=int(r["N"]), seed=int(r["seed"]),
                                 largest_M_over_N=largest[r["N"], r["seed"]], ratio_there=r["ratio_at_max_M"]))
    for c in WINDOW_RANKS:
        for r in read_rows(folder, f"rank/crossover_C{c}.csv"):
            if _is_nan(r["window_end"]):
                rows.append(dict(run=f"rank C={c}", N=int(r["N"]), seed=int(r["seed"]), largest_M_over_N=math.nan,
                                 ratio_there=r["ratio_at_max_M"]))
    grid = []
    for p in FRACTIONS:
        name = f"replication/crossover_p{p}.csv"
        adaptive = {r["seed"]: r for r in read_rows(folder, name) if r["N"] == train_size}
        by_seed = {}
        for r in read_rows(folder, f"rates/models_p{p}.csv"):
            by_seed.setdefault(r["seed"], []).append(r)
        for seed, group in sorted(by_seed.items()):
            group = sorted(group, key=lambda r: r["M"])
            m = np.array([r["M"] for r in group], np.float64)
            ratio = np.array([r["ratio"] for r in group], np.float64)
            start, end = transition_window(m, ratio, delta)
            if seed not in adaptive:
                raise ConfigError(f"{os.path.join(folder, name)} has no data set of N = {train_size}, seed {seed}")
            grid.append(dict(p=p, N=train_size, seed=int(seed), window_start=start / train_size,
                             M_pt=theory.first_crossing(m, ratio, 0.5) / train_size, window_end=end / train_size,
                             adaptive_M_pt=adaptive[seed]["M_pt"] / train_size,
                             adaptive_window_end=adaptive[seed]["window_end"] / train_size))
    return [f"## 4. Window ends that are NaN (the ratio never reaches 1 - delta = {1 - delta:g} among the M "
            "trained)", "", table(rows, WINDOW_COLUMNS, rounded=False), "",
            f"Fixed grid M/N in 0.1..1.0 at N = {train_size} (`rates/models_p<p>.csv`: the same data sets as the "
            f"adaptive runs of `replication/`, the same protocol, other draws, {samples} samples per model), in "
            "units of N, next to the adaptive run's M_pt and window end (`replication/crossover_p<p>.csv`):", "",
            table(grid), ""]


def wide_intervals(folder: str) -> list[str]:
    """Section 5: the rows of replication/ and rank/ structure.csv whose interval over seeds of
    M_pt is wider than half its mean M_pt."""
    rows = []
    for run in ("replication", "rank"):
        for r in read_rows(folder, f"{run}/structure.csv"):
            width = r["ci95_hi"] - r["ci95_lo"]
            if width > 0.5 * r["M_pt"]:
                rows.append(dict(run=run, value=r["value"], N=int(r["N"]), seeds=int(r["seeds"]), M_pt=r["M_pt"],
                                 ci95_lo=r["ci95_lo"], ci95_hi=r["ci95_hi"], width_over_mean=width / r["M_pt"]))
    return ["## 5. Intervals over seeds wider than half their mean", "", table(rows, WIDE_COLUMNS), ""]


def train_losses(folder: str) -> list[str]:
    """Section 6 (p = 0.3): at the (N, seed, M) both starts trained, how often the
    replicated-first model's train loss (x0 units) is lower where M < N, and how often the two
    agree to rtol 1e-5 where M = N; the models of EXAMPLE with M < N."""
    first_name, paper_name = "replicated_first/p0.3_models.csv", "replication/models_p0.3.csv"
    paper = {}
    for r in read_rows(folder, paper_name):
        key = (r["N"], r["seed"], r["M"])
        if key in paper:
            raise ConfigError(f"{os.path.join(folder, paper_name)} holds two models of (N, seed, M) = {key}")
        paper[key] = r
    shared = [(r, paper[r["N"], r["seed"], r["M"]]) for r in read_rows(folder, first_name)
              if (r["N"], r["seed"], r["M"]) in paper]
    below = [(a, b) for a, b in shared if a["M"] < a["N"]]
    at_n = [(a, b) for a, b in shared if not a["M"] < a["N"]]
    lower = sum(a["train_loss_x0"] < b["train_loss_x0"] for a, b in below)
    equal = sum(bool(np.isclose(a["train_loss_x0"], b["train_loss_x0"], rtol=1e-5)) for a, b in at_n)
    example = [dict(N=a["N"], seed=a["seed"], M=a["M"], ratio_first=a["ratio"], ratio_paper=b["ratio"],
                    train_loss_x0_first=a["train_loss_x0"], train_loss_x0_paper=b["train_loss_x0"])
               for a, b in below if a["N"] == EXAMPLE["N"] and a["seed"] == EXAMPLE["seed"]]
    return ["## 6. p = 0.3: train loss (x0 units), replicated-first start against the paper's", "",
            f"{len(shared)} shared (N, seed, M) in `{first_name}` and `{paper_name}`: "
            f"the replicated-first model's loss is lower at {lower} of the {len(below)} "
            f"with M < N; at the {len(at_n)} with M = N (every point has a component from either start) "
            f"the two agree to 5 significant digits at {equal}. N = {EXAMPLE['N']}, seed {EXAMPLE['seed']}:", "",
            table(example, LOSS_COLUMNS), ""]


def recheck(folder: str) -> str:
    """The Markdown report (recheck.md) of the results folder `folder`; ConfigError naming the
    first table it lacks (KeyError naming a column a table lacks)."""
    preset = load_config(RATES_PRESET)
    (train_size,) = preset.data.train_sizes
    samples = preset.sampling.num_samples
    return "\n".join([f"# Recomputed from the committed CSVs ({COMMAND})", "", *slopes(folder),
                      *enrichment(folder, samples), *rank(folder),
                      *window_ends(folder, train_size, preset.eval.delta, samples), *wide_intervals(folder),
                      *train_losses(folder)])

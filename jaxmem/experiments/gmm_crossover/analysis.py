"""The analysis of a crossover grid's results: what rounds.py plans the next round from and the
tables are built of (jaxmem.experiments.gmm_crossover).

AnalysisSettings: the few config fields the analysis reads, built once per run (AnalysisSettings.of).
summarize: one row per data set (d, K, N, seed): M_pt (first crossing of ratio 0.5,
interpolated), its delta window, the bracket of the last search round, models trained, and
M* predicted by the closed form and the measured losses per weighting. by_train_size: the
rows of one (d, K, N) pooled over seeds: mean M_pt with a Student-t 95% interval.
measured_capacity: a data set's measured-loss M* from its baselines.

result: a grid's result dict (jaxmem.experiments.gmm_crossover.grids): per model g the arrays
K, N, seed, M, ratio, ...; per data set j set_K, set_N, set_seed, the baseline losses gen_loss,
mem_loss [T] and pmem_loss [P, T] at the capacities pmem_M [P]; the time grid times [T].
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmem import theory
from jaxmem.experiments.gmm_crossover import search


@dataclasses.dataclass(frozen=True)
class AnalysisSettings:
    """What the analysis reads of a crossover config: how the ratios are read (eval.delta, a
    fraction in (0, 0.5); eval.window_fallback), the weightings of the predicted M*
    (eval.weightings; training.custom_weights: the eps-unit weights [T] of 'custom', empty
    otherwise) and the data model of the closed form (data.model, data.variance s0^2, data.rank
    C, data.off_variance tau^2)."""

    delta: float
    window_fallback: str
    weightings: tuple[str, ...]
    custom_weights: tuple[float, ...]
    data_model: str
    variance: float
    rank: int
    off_variance: float

    @classmethod
    def of(cls, config) -> AnalysisSettings:
        """The record of a crossover config (window_fallback 'nan' where the config predates it)."""
        data = config.data
        return cls(delta=config.eval.delta, window_fallback=config.eval.get("window_fallback", "nan"),
                   weightings=tuple(config.eval.weightings), custom_weights=tuple(config.training.custom_weights),
                   data_model=data.model, variance=data.variance, rank=data.rank, off_variance=data.off_variance)


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


def dimension_variances(settings: AnalysisSettings, dim: int) -> np.ndarray:
    """Per-dimension variances of the data model for the closed form (theory.formula_crossover_fraction):
    [s0^2] (isotropic: every dimension alike), C x s0^2 and (d - C) x tau^2 (subspace), [NaN]
    (low-rank: no GMM truth)."""
    if settings.data_model == "isotropic":
        return np.array([settings.variance], np.float64)
    if settings.data_model == "subspace":
        return np.concatenate([np.full(settings.rank, settings.variance),
                               np.full(dim - settings.rank, settings.off_variance)])
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


def summarize(settings: AnalysisSettings, dim: int, result: dict) -> list[dict]:
    """One table row per data set (d, K, N, seed) of a grid of dimension `dim`: M_pt, delta window,
    predicted M* per method (closed form and measured losses, per weighting of `settings`)."""
    times, delta, custom = result["times"], settings.delta, settings.custom_weights
    variances = dimension_variances(settings, dim)
    formula_fraction = {weighting: theory.formula_crossover_fraction(times, weighting, variances, custom)
                        for weighting in settings.weightings}  # closed-form M*/N: the same for every set
    rows = []
    for j in range(len(result["set_N"])):
        k, n, s = int(result["set_K"][j]), int(result["set_N"][j]), int(result["set_seed"][j])
        of_set = models_of_set(result, j)
        order = np.argsort(result["M"][of_set])
        m, ratio = result["M"][of_set][order], result["ratio"][of_set][order]
        start, end = transition_window(m, ratio, delta, settings.window_fallback)
        row = dict(d=dim, K=k, N=n, seed=s, M_pt=theory.first_crossing(m, ratio, 0.5),
                   window_start=start, window_end=end,
                   ratio_at_max_M=float(ratio[-1]), models=int(of_set.sum()))
        row["bracket_lo"], row["bracket_hi"], _ = search.bracket(m, ratio, n)
        counts = set_multiplicity(result, j)
        if np.any(counts > 1):  # replicated data: stored rows and replicated points
            row.update(rows=int(counts.sum()), replicated_points=int(np.sum(counts > 1)))
        for weighting, fraction in formula_fraction.items():
            row[f"Mstar_formula_{weighting}"] = (theory.covered_capacity(counts, fraction) if np.any(counts > 1)
                                                 else n * fraction)
            row[f"Mstar_measured_{weighting}"], row[f"gen_loss_{weighting}"] = measured_capacity(
                result, j, weighting, custom)
            row[f"mem_loss_{weighting}"] = float(theory.weighted_loss(result["mem_loss"][j], times, weighting, custom))
        rows.append(row)
    return rows


def by_train_size(rows: list[dict]) -> list[dict]:
    """The rows of each (d, K, N) pooled over seeds: M_pt mean, standard deviation, Student-t 95%
    interval (NaN half-width for one seed), seeds with a transition, models trained, and the
    mean predicted M* per method."""
    from scipy import stats  # imported here: scipy.stats costs every launcher start ~0.6 s
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

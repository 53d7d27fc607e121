"""The paper's grid pooled: M_pt per (d, K, N), fits per (d, K), the d/K test, three levels, lambda(t).

The sweep hook of configs/sweeps/gmm_crossover_paper_grid.py (one crossover run per d under one
root). analyze(rows, root) reads every run's crossover.csv and the baseline losses of its grids
(d<d>[_n<N>]/result.npz) and writes into root:

  data_sets.csv        one row per data set (d, K, N, seed): M_pt, window, measured-loss M*
  configurations.csv   one row per (d, K, N): M_pt and the window over seeds (mean, sd)
  fits_by_dk.csv       per (d, K): M_pt = slope N + intercept with standard errors, and z, the
                       slope's distance from the weighted mean slope in its standard errors
  levels.csv           the same fit over all data sets for the window start (ratio first >= delta),
                       the 0.5 crossing (M_pt) and the window end (ratio first >= 1 - delta)
  weighting.csv        per grid time t: the fitted x0-unit weights w_t and eps-unit lambda_t beside
                       the x0-uniform and eps weightings (each normalised to sum 1)
  weighting_errors.csv per weighting and split: |M*_predicted - M_pt| / N (mean, RMS, max)
  paper_grid.json      all of the above plus the homogeneity test of the per-(d, K) slopes
  paper_grid.png       M_pt against N marked by d and K; the fitted lambda(t) against the two others

The homogeneity tests: with per-(d, K) slopes b_i and standard errors se_i, the weighted mean
b = sum(b_i / se_i^2) / sum(1 / se_i^2) and chi^2 = sum((b_i - b)^2 / se_i^2) on (groups - 1)
degrees of freedom; and the F test of one common slope (common_slope_test), which pools the
residual variance of all groups (each se_i above rests on its group's few data sets only, so a
group whose points happen to fall close to a line gets a small se_i and a large share of chi^2).
A small p-value says the slope depends on d or K. A least-squares fit of M_pt / N on d and K
over all data sets gives the size of any such dependence.

The weighting is fitted (weighting_fit.fit_weights) on the data sets of a random half of the
configurations (both seeds of a configuration on one side, split seeded by SPLIT_SEED) and
scored on the other half.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from jaxmem import io, theory
from jaxmem.experiments.gmm_crossover import weighting_fit
from jaxmem.experiments.gmm_crossover.report import read_table
from jaxmem.noise import vp_snr

SPLIT_SEED = 0
LEVELS = ("window_start", "M_pt", "window_end")
_GRID_FOLDER = re.compile(r"d(\d+)(?:_n\d+)?$")


def collect(root: str) -> tuple[list[dict], dict]:
    """(rows, baselines): every crossover.csv row under root's runs, and per (d, K, N, seed) the
    baseline arrays {times [T], gen_loss [T], pmem_M [J], pmem_loss [J, T]} of its first grid."""
    rows, baselines = [], {}
    for table in sorted(glob.glob(os.path.join(root, "*", "crossover.csv"))):
        run = os.path.dirname(table)
        rows += read_table(run, "crossover.csv")
        for result_path in sorted(glob.glob(os.path.join(run, "d*", "result.npz"))):
            match = _GRID_FOLDER.match(os.path.basename(os.path.dirname(result_path)))
            if match is None:
                continue
            with np.load(result_path) as result:
                for j, key in enumerate(zip(result["set_K"], result["set_N"], result["set_seed"])):
                    baselines[(int(match.group(1)), *map(int, key))] = dict(
                        times=result["times"], gen_loss=result["gen_loss"][j], pmem_M=result["pmem_M"][j],
                        pmem_loss=result["pmem_loss"][j])
    if not rows:
        raise ValueError(f"no crossover.csv under {root}/*/: the sweep's runs have not finished")
    return rows, baselines


def configurations(rows: Sequence[Mapping]) -> list[dict]:
    """Per (d, K, N): seeds, M_pt, window start and end over seeds (mean; sd of M_pt), M_pt / N."""
    out = []
    for key in sorted({(r["d"], r["K"], r["N"]) for r in rows}):
        mine = [r for r in rows if (r["d"], r["K"], r["N"]) == key]
        row = dict(d=key[0], K=key[1], N=key[2], seeds=len(mine))
        for level in LEVELS:
            values = np.array([r[level] for r in mine], np.float64)
            row[level] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        m_pt = np.array([r["M_pt"] for r in mine], np.float64)
        row["M_pt_sd"] = float(np.nanstd(m_pt, ddof=1)) if np.isfinite(m_pt).sum() >= 2 else float("nan")
        row["M_pt_over_N"] = row["M_pt"] / key[2]
        out.append(row)
    return out


def fits_by_group(rows: Sequence[Mapping]) -> list[dict]:
    """Per (d, K): the linear fit of M_pt against N over its data sets (theory.linear_fits)."""
    out = []
    for d, k in sorted({(r["d"], r["K"]) for r in rows}):
        mine = [r for r in rows if (r["d"], r["K"]) == (d, k)]
        fit = theory.linear_fits([r["N"] for r in mine], [r["M_pt"] for r in mine])
        out.append(dict(d=d, K=k, **{key: fit[key] for key in ("slope", "slope_se", "intercept", "intercept_se",
                                                               "r2", "slope_origin", "points")}))
    return out


def common_slope_test(rows: Sequence[Mapping]) -> dict:
    """The F test of one slope of M_pt against N for every (d, K) group (analysis of covariance).

    Two nested least-squares models over the data sets: each group its own intercept and slope
    (residual sum of squares RSS_1 on n - 2G dof) against each group its own intercept and one
    common slope (RSS_0). F = ((RSS_0 - RSS_1) / (G - 1)) / (RSS_1 / (n - 2G)). Unlike the chi^2 of
    the per-group slopes, it pools the scatter of all groups into one residual variance instead of
    trusting each group's slope error from its own n_g - 2 dof.
    """
    from scipy import stats  # imported here: scipy.stats costs every launcher start ~0.6 s
    finite = [r for r in rows if np.isfinite(r["M_pt"])]
    keys = sorted({(r["d"], r["K"]) for r in finite})
    rss_separate = sxy_total = sxx_total = syy_total = 0.0
    for key in keys:
        x, y = np.array([(r["N"], r["M_pt"]) for r in finite if (r["d"], r["K"]) == key], np.float64).T
        dx, dy = x - x.mean(), y - y.mean()
        sxx, sxy, syy = np.sum(dx * dx), np.sum(dx * dy), np.sum(dy * dy)
        rss_separate += syy - sxy**2 / sxx
        sxx_total, sxy_total, syy_total = sxx_total + sxx, sxy_total + sxy, syy_total + syy
    rss_common = syy_total - sxy_total**2 / sxx_total
    dof_between, dof_within = len(keys) - 1, len(finite) - 2 * len(keys)
    f = ((rss_common - rss_separate) / dof_between) / (rss_separate / dof_within)
    return dict(common_slope=float(sxy_total / sxx_total), f=float(f), f_dof=[dof_between, dof_within],
                f_p_value=float(stats.f.sf(f, dof_between, dof_within)),
                residual_sd=float(np.sqrt(rss_separate / dof_within)))


def homogeneity(groups: Sequence[Mapping], rows: Sequence[Mapping]) -> dict:
    """The tests of equal per-(d, K) slopes (chi^2 of the slopes against their own errors, and
    common_slope_test's F) and the least-squares fit M_pt / N = a + b_d d + b_K K."""
    from scipy import stats  # imported here: scipy.stats costs every launcher start ~0.6 s
    b = np.array([g["slope"] for g in groups])
    se = np.array([g["slope_se"] for g in groups])
    ok = np.isfinite(b) & np.isfinite(se) & (se > 0)
    weights = 1.0 / se[ok] ** 2
    mean = float(np.sum(weights * b[ok]) / np.sum(weights))
    chi2 = float(np.sum(weights * (b[ok] - mean) ** 2))
    dof = int(ok.sum()) - 1
    finite = [r for r in rows if np.isfinite(r["M_pt"])]
    design = np.array([[1.0, r["d"], r["K"]] for r in finite])
    target = np.array([r["M_pt"] / r["N"] for r in finite])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coef
    cov = np.sum(residual**2) / (len(target) - 3) * np.linalg.inv(design.T @ design)
    return dict(groups=int(ok.sum()), weighted_mean_slope=mean, chi2=chi2, dof=dof,
                p_value=float(stats.chi2.sf(chi2, dof)), slope_min=float(b[ok].min()), slope_max=float(b[ok].max()),
                per_d=float(coef[1]), per_d_se=float(np.sqrt(cov[1, 1])), per_K=float(coef[2]),
                per_K_se=float(np.sqrt(cov[2, 2])), data_sets=len(target), **common_slope_test(rows))


def level_fits(rows: Sequence[Mapping]) -> list[dict]:
    """The linear fit against N of each transition level over all data sets; `missing`: data sets
    where the level was not reached among the trained capacities (NaN)."""
    out = []
    for level in LEVELS:
        fit = theory.linear_fits([r["N"] for r in rows], [r[level] for r in rows])
        out.append(dict(level=level, **{key: fit[key] for key in ("slope", "slope_se", "intercept", "r2",
                                                                  "slope_origin", "points")},
                        missing=len(rows) - fit["points"]))
    return out


def fit_weighting(rows: Sequence[Mapping], baselines: Mapping) -> tuple[list[dict], list[dict], dict]:
    """(weighting rows per t, error rows per weighting and split, details): lambda(t) fitted on a
    random half of the configurations, scored against x0-uniform and eps weights on both halves."""
    sets = [r for r in rows if np.isfinite(r["M_pt"]) and (r["d"], r["K"], r["N"], r["seed"]) in baselines]
    base = [baselines[(r["d"], r["K"], r["N"], r["seed"])] for r in sets]
    times = np.asarray(base[0]["times"], np.float64)
    psi = vp_snr(times)
    configs = sorted({(r["d"], r["K"], r["N"]) for r in sets})
    order = np.random.default_rng(SPLIT_SEED).permutation(len(configs))
    train_configs = {configs[i] for i in order[: len(configs) // 2]}
    is_train = np.array([(r["d"], r["K"], r["N"]) in train_configs for r in sets])
    inside = [weighting_fit.gap_and_slope(b["pmem_M"], b["pmem_loss"], b["gen_loss"], r["M_pt"])
              if np.nanmin(b["pmem_M"]) <= r["M_pt"] <= np.nanmax(b["pmem_M"]) else None
              for r, b in zip(sets, base)]
    usable = np.array([x is not None for x in inside])
    fit_rows = is_train & usable
    gaps = np.stack([x[0] for x, ok in zip(inside, fit_rows) if ok])
    slopes = np.stack([x[1] for x, ok in zip(inside, fit_rows) if ok])
    sizes = np.array([r["N"] for r, ok in zip(sets, fit_rows) if ok])
    candidates = {"fitted": weighting_fit.fit_weights(gaps, slopes, sizes),
                  "x0": np.ones_like(times) / times.size, "eps": psi / psi.sum()}
    m_pt = np.array([r["M_pt"] for r in sets])
    n = np.array([r["N"] for r in sets], np.float64)
    pmem_m = np.stack([b["pmem_M"] for b in base])
    pmem_loss = np.stack([b["pmem_loss"] for b in base])
    gen = np.stack([b["gen_loss"] for b in base])
    errors = []
    for name, w in candidates.items():
        error = np.abs(weighting_fit.predicted_capacities(w, pmem_m, pmem_loss, gen) - m_pt) / n
        for split, mask in (("train", is_train), ("held_out", ~is_train)):
            e = error[mask]
            errors.append(dict(weighting=name, split=split, data_sets=int(mask.sum()),
                               predicted=int(np.isfinite(e).sum()), mean_abs=float(np.nanmean(e)),
                               rms=float(np.sqrt(np.nanmean(e**2))), max_abs=float(np.nanmax(e))))
    lam = candidates["fitted"] / psi
    per_t = []
    for i, t in enumerate(times):
        per_t.append(dict(t=float(t), psi=float(psi[i]), w_fitted=float(candidates["fitted"][i]),
                          lambda_fitted=float(lam[i] / lam.sum()), w_x0=float(candidates["x0"][i]),
                          w_eps=float(candidates["eps"][i])))
    details = dict(train_configurations=sorted(train_configs), fitted_on=int(fit_rows.sum()),
                   outside_baselines=int((~usable).sum()))
    return per_t, errors, details


def analyze(rows: Sequence[Mapping], root: str) -> list[str]:
    """The sweep hook: writes the files listed in the module docstring into root; returns report lines.
    rows: jaxmem.sweep.aggregate's per-run rows (unused: each run's crossover.csv is read instead)."""
    from jaxmem.plots import crossover as plots

    del rows
    sets, baselines = collect(root)
    columns = ["d", "K", "N", "seed", *LEVELS, "Mstar_measured_x0", "Mstar_measured_eps", "models"]
    table = [{c: r.get(c, float("nan")) for c in columns} for r in sets]
    per_config, groups, levels = configurations(sets), fits_by_group(sets), level_fits(sets)
    test = homogeneity(groups, sets)
    for group in groups:  # each slope's distance from the weighted mean: its share of chi^2 is z^2
        group["z"] = (group["slope"] - test["weighted_mean_slope"]) / group["slope_se"]
    per_t, errors, details = fit_weighting(sets, baselines)
    overall = theory.linear_fits([r["N"] for r in sets], [r["M_pt"] for r in sets])
    files = dict(data_sets=io.write_csv(os.path.join(root, "data_sets.csv"), table, columns),
                 configurations=io.write_csv(os.path.join(root, "configurations.csv"), per_config),
                 fits_by_dk=io.write_csv(os.path.join(root, "fits_by_dk.csv"), groups),
                 levels=io.write_csv(os.path.join(root, "levels.csv"), levels),
                 weighting=io.write_csv(os.path.join(root, "weighting.csv"), per_t),
                 weighting_errors=io.write_csv(os.path.join(root, "weighting_errors.csv"), errors))
    files["figure"] = plots.save_paper_grid(os.path.join(root, "paper_grid.png"), sets, overall, per_t)
    io.write_json(os.path.join(root, "paper_grid.json"), dict(
        fit=overall, levels=levels, homogeneity=test, fits_by_dk=groups, weighting_errors=errors,
        weighting_split=details, files={k: os.path.relpath(v, root) for k, v in files.items()}))
    held = {e["weighting"]: e for e in errors if e["split"] == "held_out"}
    return [
        "## The paper's grid", "",
        f"- {len(sets)} data sets in {len(per_config)} configurations; M_pt = {overall['slope']:.3f} "
        f"(+-{overall['slope_se']:.3f}) N {overall['intercept']:+.1f}, R^2 {overall['r2']:.4f}",
        f"- per-(d, K) slopes {test['slope_min']:.3f}-{test['slope_max']:.3f}, weighted mean "
        f"{test['weighted_mean_slope']:.3f}; chi^2 {test['chi2']:.1f} on {test['dof']} dof, p = {test['p_value']:.3g}; "
        f"one common slope {test['common_slope']:.3f}: F {test['f']:.2f} on {test['f_dof']} dof, p = {test['f_p_value']:.3g}",
        f"- M_pt / N per unit d {test['per_d']:+.5f} (+-{test['per_d_se']:.5f}), per unit K "
        f"{test['per_K']:+.5f} (+-{test['per_K_se']:.5f})",
        *[f"- {lv['level']}: slope {lv['slope']:.3f} (+-{lv['slope_se']:.3f}), {lv['missing']} data sets without it"
          for lv in levels],
        f"- held-out |M* - M_pt| / N (mean): fitted lambda {held['fitted']['mean_abs']:.4f}, x0 "
        f"{held['x0']['mean_abs']:.4f}, eps {held['eps']['mean_abs']:.4f}", "",
        "![paper grid](paper_grid.png)", ""]

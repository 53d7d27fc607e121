"""Figures of the crossover experiment: M* versus N, memorisation ratio versus M/N."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from jaxmem import io, theory
from jaxmem.plots import line_text

DIAGONAL_TOLERANCE = 5e-3  # a predicted slope this close to 1 is the M = N line (no crossover below N)


def save_crossover(path: str, rows: list[dict], fit: dict, pooled: list[dict] | None = None) -> str:
    """M_pt (with its delta window) versus N per (d, K), the linear fit and the predicted M*, each
    prediction drawn and labelled with the report's fit (slope and intercept: theory.linear_fits).

    rows: the table rows of jaxmem.experiments.gmm_crossover.analysis.summarize; fit: {slope, intercept, r2};
    pooled: by_train_size rows (mean over seeds with 95% intervals), drawn when several seeds.
    """

    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    n_all = np.array([r["N"] for r in rows], np.float64)
    groups = sorted({(r["d"], r["K"]) for r in rows})
    for d, k in groups:
        mine = [r for r in rows if (r["d"], r["K"]) == (d, k)]
        n = np.array([r["N"] for r in mine], np.float64)
        m_pt = np.array([r["M_pt"] for r in mine])
        low = m_pt - np.array([r["window_start"] for r in mine])
        high = np.array([r["window_end"] for r in mine]) - m_pt
        axis.errorbar(n, m_pt, yerr=np.nan_to_num(np.stack([low, high]), nan=0.0).clip(0), fmt="o",
                      capsize=3, label=f"M_pt d={d} K={k} (bars: delta window)")
    if pooled and max(p["seeds"] for p in pooled) > 1:
        mean = np.array([p["M_pt"] for p in pooled])
        half = np.nan_to_num(np.array([p["ci95_hi"] for p in pooled]) - mean, nan=0.0)
        axis.errorbar([p["N"] for p in pooled], mean, yerr=half, fmt="ks", ms=4, capsize=4, zorder=5,
                      label="mean over seeds, 95% interval")
    grid = np.linspace(0.0, n_all.max() * 1.05, 50)
    if np.isfinite(fit["slope"]):
        axis.plot(grid, fit["slope"] * grid + fit["intercept"], "k-",
                  label=f"fit: {line_text(fit['slope'], fit['intercept'], '.3f', '.1f')} (R$^2$={fit['r2']:.3f})")
    styles = iter(["--", ":", "-.", (0, (5, 1)), (0, (1, 3))])
    on_diagonal = []  # predictions of no crossover below N: drawn as the M = N line itself
    for key in [k for k in rows[0] if k.startswith("Mstar_")]:
        values = np.array([r[key] for r in rows], np.float64)
        ok = np.isfinite(values)
        if not ok.any():
            continue
        method, weighting = key[len("Mstar_"):].split("_", 1)
        name = f"{'closed form' if method == 'formula' else 'measured losses'} ({weighting})"
        line = theory.linear_fits(n_all, values)  # the fit the report gives (with intercept)
        slope, intercept = line["slope"], line["intercept"]
        if not np.isfinite(slope):  # one N: the line through the origin
            slope, intercept = line["slope_origin"], 0.0
        if abs(slope - 1.0) < DIAGONAL_TOLERANCE and abs(intercept) < DIAGONAL_TOLERANCE * n_all.max():
            on_diagonal.append(name)
            continue
        drawn = axis.plot(grid, slope * grid + intercept, linestyle=next(styles),
                          label=f"predicted M*, {name}: {line_text(slope, intercept, '.3f', '.1f')}")
        if method == "measured":
            axis.plot(n_all[ok], values[ok], "x", color=drawn[0].get_color(), label=f"M*, {name}, per data set")
    diagonal = "M = N" + (f" (= predicted M*, {', '.join(on_diagonal)})" if on_diagonal else "")
    axis.plot(grid, grid, color="0.6" if on_diagonal else "0.8", lw=1.2 if on_diagonal else 0.8, label=diagonal)
    axis.set(xlabel="training points N", ylabel="capacity M", title="Memorisation transition M_pt vs N")
    axis.legend(fontsize=7)
    return io.save_figure(path, figure)


def save_ratio_curves(path: str, curves: list[dict]) -> str:
    """Memorisation ratio versus M/N, one panel per (d, K), one line per N (mean over seeds).

    curves: per grid {d: int, K, N, M, ratio: arrays over the grid's models}.
    """
    panels = [(c, int(d_k)) for c in curves for d_k in np.unique(c["K"])]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for axis, (curve, k) in zip(axes.flat, panels):
        for n in np.unique(curve["N"]):
            of_n = (curve["K"] == k) & (curve["N"] == n)
            m_values = np.unique(curve["M"][of_n])
            mean_ratio = [curve["ratio"][of_n & (curve["M"] == m)].mean() for m in m_values]
            axis.plot(m_values / n, mean_ratio, "o-", ms=3, label=f"N={n}")
        axis.axhline(0.5, color="0.7", lw=0.8, label="ratio 0.5 (M_pt)")
        axis.set(title=f"d={curve['d']} K={k}", xlabel="M / N", ylabel="memorisation ratio", ylim=(-0.03, 1.03))
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.tight_layout()
    return io.save_figure(path, figure)


def save_paper_grid(path: str, rows: list[dict], fit: dict, weighting: list[dict]) -> str:
    """Left: M_pt against N for every data set, colour by d, marker by K (jittered in N so the
    configurations of one N stay apart), with the overall fit. Right: the fitted x0-unit weights
    w_t against t beside the x0-uniform and eps weightings (rows of paper_grid.fit_weighting).

    rows: data-set rows with d, K, N, M_pt; fit: {slope, intercept, r2}."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.6))
    dims, ks = sorted({r["d"] for r in rows}), sorted({r["K"] for r in rows})
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(dims)))
    markers = "osD^v<>p"
    for i, d in enumerate(dims):
        for j, k in enumerate(ks):
            mine = [r for r in rows if (r["d"], r["K"]) == (d, k)]
            jitter = (i * len(ks) + j - (len(dims) * len(ks) - 1) / 2) * 0.6
            left.plot([r["N"] + jitter for r in mine], [r["M_pt"] for r in mine], markers[j % len(markers)],
                      color=colours[i], ms=4, alpha=0.8, label=f"d={d}" if j == 0 else None)
    for j, k in enumerate(ks):
        left.plot([], [], markers[j % len(markers)], color="0.4", ms=4, label=f"K={k}")
    n_max = max(r["N"] for r in rows)
    grid = np.linspace(0.0, n_max * 1.05, 50)
    left.plot(grid, fit["slope"] * grid + fit["intercept"], "k-",
              label=f"fit: {line_text(fit['slope'], fit['intercept'], '.3f', '.1f')} (R$^2$={fit['r2']:.3f})")
    left.plot(grid, grid, color="0.8", lw=0.8, label="M = N")
    left.set(xlabel="training points N", ylabel="M_pt (ratio 0.5)", title="M_pt vs N, every configuration and seed")
    left.legend(fontsize=7, ncol=2)
    t = np.array([w["t"] for w in weighting])
    for key, label, style in (("w_fitted", "fitted", "k-o"), ("w_x0", "x0 (uniform)", "--"), ("w_eps", "eps", ":")):
        right.plot(t, [w[key] for w in weighting], style, ms=3, label=label)
    right.set(xlabel="t", ylabel="weight on the x0-unit loss (sum 1)", title="Loss weighting that predicts M_pt")
    right.set_yscale("symlog", linthresh=1e-3)
    right.legend(fontsize=8)
    figure.tight_layout()
    return io.save_figure(path, figure)


def save_per_t_losses(path: str, rows: list[dict], partial_count: int = 4) -> str:
    """The per-t training losses (x0 units) of one data set: the generalising ground truth, the fully
    memorising baseline, `partial_count` partially memorising baselines evenly spread over the
    crossover grid, and every trained model (per_t_rows of jaxmem.experiments.gmm_crossover.report,
    all of one data set)."""
    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    first = rows[0]

    def curve(model, m):
        mine = [r for r in rows if r["model"] == model and r["M"] == m]
        return [r["t"] for r in mine], [r["train_loss"] for r in mine]

    axis.plot(*curve("generalizing", first["K"]), "k-", lw=2, label=f"generalising (ground truth, K={first['K']})")
    axis.plot(*curve("memorizing", first["N"]), "k--", lw=2, label=f"memorising (M=N={first['N']})")
    partial = sorted({r["M"] for r in rows if r["model"] == "partial"})
    for m in [partial[i] for i in np.linspace(0, len(partial) - 1, min(partial_count, len(partial))).astype(int)]:
        axis.plot(*curve("partial", m), ":", color="0.5", lw=1)
    axis.plot([], [], ":", color="0.5", label="partially memorising baselines (M " +
              ", ".join(str(partial[i]) for i in np.linspace(0, len(partial) - 1,
                                                             min(partial_count, len(partial))).astype(int)) + ")")
    trained = sorted({r["M"] for r in rows if r["model"] == "trained"})
    colours = plt.cm.plasma(np.linspace(0.0, 0.85, max(1, len(trained))))
    for colour, m in zip(colours, trained):
        axis.plot(*curve("trained", m), "-", color=colour, lw=1, label=f"trained, M={m}")
    axis.set(xlabel="t", ylabel="training loss per point (x0 units)", yscale="log",
             title=f"Per-t losses, d={first['d']} K={first['K']} N={first['N']} seed={first['seed']}")
    axis.legend(fontsize=6)
    return io.save_figure(path, figure)


def save_escape(path: str, rows: list[dict], settings: list[str]) -> str:
    """s^2 of the M = 100 model against the optimizer step, one line per setting (rows of
    jaxmem.experiments.gmm_crossover.escape.run); solid for Adam b2 0.999, dashed otherwise."""
    figure, axis = plt.subplots(figsize=(7.5, 5.0))
    for label in settings:
        mine = [r for r in rows if r["setting"] == label]
        axis.plot([r["step"] for r in mine], [r["s2_M100"] for r in mine], "-" if "0.999" in label else "--",
                  label=label)
    axis.axhline(0.416, color="grey", lw=0.8)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("s^2 of the M = 100 model")
    axis.set_title("leaving the memorising start (d 50, K 12, N 200): Adam b2 sets the pace")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return io.save_figure(path, figure)

"""Figures of the U-Net capacity crossover (jaxmem.experiments.unet_crossover)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from jaxmem import io
from jaxmem.plots import line_text


def save_capacity_crossover(path: str, curves: Mapping, table: Sequence[Mapping], fit: Mapping, gmm: Mapping,
                            capacity: str = "parameters", rate: str = "memorization_rate") -> str:
    """Two panels side by side.

    Left: every run as a marker at (N, capacity) coloured by its memorisation rate, the onset
    capacity* per N and the fits capacity* = a N + b and a0 N. Right: the GMM laboratory's M*
    versus N (measured points with their fit, or the closed-form line; the legend says which).
    curves: {N: (capacities [J], rates [J], runs)}; table: crossover_table rows; fit:
    theory.linear_fits; gmm: gmm_reference.
    """
    figure, (left, right) = plt.subplots(1, 2, figsize=(12.0, 4.8))
    n_runs = np.concatenate([np.full(len(c[0]), size, np.float64) for size, c in curves.items()])
    caps = np.concatenate([c[0] for c in curves.values()])
    rates = np.concatenate([c[1] for c in curves.values()])
    dots = left.scatter(n_runs, caps, c=rates, cmap="viridis", vmin=0.0, vmax=1.0, s=36, edgecolors="k",
                        linewidths=0.3, label="runs")
    figure.colorbar(dots, ax=left, label=rate)
    n = np.array([r["N"] for r in table], np.float64)
    star = np.array([r["capacity_star"] for r in table], np.float64)
    ok = np.isfinite(star)
    left.plot(n[ok], star[ok], "r*", ms=12, label=f"{capacity}* (onset)")
    grid = np.linspace(0.0, n.max() * 1.05, 50)
    if np.isfinite(fit["slope"]):
        left.plot(grid, fit["slope"] * grid + fit["intercept"], "r-", lw=1,
                  label=f"{line_text(fit['slope'], fit['intercept'])} (R$^2$ {fit['r2']:.3f})")
    if np.isfinite(fit["slope_origin"]):
        left.plot(grid, fit["slope_origin"] * grid, "r--", lw=1,
                  label=f"{fit['slope_origin']:.4g} N (R$^2$ {fit['r2_origin']:.3f})")
    left.set(xlabel="training images N", ylabel=capacity, title=f"U-Net: {capacity}* versus N")
    left.legend(fontsize=7, loc="best")
    left.grid(alpha=0.3)

    gmm_n, gmm_m = np.asarray(gmm["N"], np.float64), np.asarray(gmm["M_star"], np.float64)
    if gmm["source"] == "closed form":
        right.plot(gmm_n, gmm_m, "k--", label=gmm["label"])
    else:
        right.plot(gmm_n, gmm_m, "ko", label=gmm["label"])
        g = gmm["fit"]
        if np.isfinite(g["slope"]):
            line = np.linspace(0.0, np.nanmax(gmm_n) * 1.05, 50)
            right.plot(line, g["slope"] * line + g["intercept"], "k-", lw=1,
                       label=f"fit {line_text(g['slope'], g['intercept'], '.3f')} (R$^2$ {g['r2']:.3f})")
    right.set(xlabel="training points N", ylabel="components M*", title="GMM laboratory: M* versus N")
    right.legend(fontsize=7, loc="best")
    right.grid(alpha=0.3)
    return io.save_figure(path, figure)


def save_rate_curves(path: str, curves: Mapping, threshold: float, capacity: str = "parameters",
                     rate: str = "memorization_rate") -> str:
    """Memorisation rate versus capacity (log axis), one line per N, and the threshold."""
    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    colors = plt.cm.plasma(np.linspace(0.0, 0.85, max(len(curves), 1)))
    for color, (size, (caps, rates, _)) in zip(colors, curves.items()):
        axis.plot(caps, rates, "o-", color=color, label=f"N = {size}")
    axis.axhline(threshold, color="0.5", ls=":", label=f"threshold {threshold:g}")
    axis.set(xscale="log", xlabel=capacity, ylabel=rate, ylim=(-0.03, 1.03),
             title=f"{rate} versus {capacity}")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return io.save_figure(path, figure)

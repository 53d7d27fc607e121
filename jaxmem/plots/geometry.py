"""The geometry figure: W_sigma and C_sigma (and MSE curves) against log sigma, regimes shaded."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

REGIME_COLOURS = {"small": "#4c72b0", "medium": "#c44e52", "large": "#55a868", "neither": "#999999"}


def _shade(axis, sigmas: np.ndarray, regime_map: dict, with_labels: bool) -> None:
    """Shades each regime interval (clipped to the plotted grid)."""
    for name, interval in regime_map["regimes"].items():
        lo = interval["sigma_min"] if interval["sigma_min"] is not None else sigmas[0]
        hi = interval["sigma_max"] if interval["sigma_max"] is not None else sigmas[-1]
        axis.axvspan(max(lo, sigmas[0]), min(hi, sigmas[-1]), color=REGIME_COLOURS[name], alpha=0.12,
                     label=f"{name} regime" if with_labels else None)


def geometry_figure(sigmas: np.ndarray, max_weight: np.ndarray, coverage: np.ndarray, regime_map: dict,
                    mse_train: np.ndarray | None = None, mse_heldout: np.ndarray | None = None,
                    mse_wiener: np.ndarray | None = None, title: str = ""):
    """One figure: top, W_sigma and C_sigma with thresholds; bottom (when given), the MSE curves.

    sigmas [L] increasing; curves [L]; regime_map from `jaxmem.geometry.regimes.regime_map`.
    Returns the matplotlib Figure (save with jaxmem.io.save_figure).
    """
    with_mse = mse_train is not None
    figure, axes = plt.subplots(2 if with_mse else 1, 1, figsize=(7, 7 if with_mse else 4), sharex=True,
                                squeeze=False)
    top = axes[0, 0]
    _shade(top, sigmas, regime_map, with_labels=True)
    top.plot(sigmas, max_weight, "o-", ms=3, color="black", label=r"$W_\sigma$ (posterior concentration)")
    top.plot(sigmas, coverage, "s-", ms=3, color="tab:orange", label=r"$C_\sigma$ (shell coverage)")
    thresholds = regime_map["thresholds"]
    top.axhline(thresholds["w_threshold"], color="black", ls=":", lw=0.8)
    top.axhline(thresholds["c_threshold"], color="tab:orange", ls=":", lw=0.8)
    top.set_xscale("log")
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("probability")
    top.legend(fontsize=7, loc="center left")
    top.set_title(title)
    if with_mse:
        bottom = axes[1, 0]
        _shade(bottom, sigmas, regime_map, with_labels=False)
        bottom.plot(sigmas, mse_train, "o-", ms=3, label="empirical optimum, training points")
        bottom.plot(sigmas, mse_heldout, "s-", ms=3, label="empirical optimum, held-out points")
        if mse_wiener is not None:
            bottom.plot(sigmas, mse_wiener, "--", label="Wiener (linear Gaussian), held-out points")
        bottom.set_yscale("symlog", linthresh=1e-3)
        bottom.set_ylabel(r"MSE$(\sigma)$, summed over pixels")
        bottom.legend(fontsize=7)
    axes[-1, 0].set_xlabel(r"noise level $\sigma$ (log scale)")
    figure.tight_layout()
    return figure

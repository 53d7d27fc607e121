"""The regime map: where the posterior is concentrated (W) and held-out data is covered (C).

On a shared, increasing sigma grid ("Two Calm Ends and the Wild Middle"):
    small   high W, low C    (W >= w_threshold, C <  c_threshold)  the denoiser snaps to a training point
    medium  high W, high C   (W >= w_threshold, C >= c_threshold)  the danger zone where memorization is born
    large   low W,  high C   (W <  w_threshold, C >= c_threshold)  the denoiser averages many points
    neither low W,  low C    possible when W drops before C rises (no danger zone)
Boundaries are the first crossings of the thresholds, interpolated linearly in log sigma between
grid levels: sigma_W where W first falls below w_threshold, sigma_C where C first reaches
c_threshold. Intervals are reported in sigma and as inclusive index ranges on the EDM sampling grid.
"""

from __future__ import annotations

import numpy as np

from jaxmem import noise, theory
from jaxmem.validation import require

REGIMES = ("small", "medium", "large", "neither")


def sigma_crossing(sigmas: np.ndarray, values: np.ndarray, threshold: float, rising: bool) -> float:
    """First sigma where `values` reaches (rising) or falls below (not rising) `threshold`,
    interpolated linearly in log sigma (jaxmem.theory.first_crossing). 0.0 when the first level
    is already past the threshold (the regime starts below the grid), inf when no level is."""
    log_sigma = theory.first_crossing(np.log(sigmas), values, threshold, rising)
    if np.isnan(log_sigma):
        return float("inf")
    first_past = values[0] >= threshold if rising else values[0] < threshold
    return 0.0 if first_past else float(np.exp(log_sigma))


def label_levels(max_weight: np.ndarray, coverage: np.ndarray, w_threshold: float, c_threshold: float) -> np.ndarray:
    """Regime name of each grid level from its own W and C values, [L] str."""
    high_w, high_c = max_weight >= w_threshold, coverage >= c_threshold
    return np.select([high_w & ~high_c, high_w & high_c, ~high_w & high_c], REGIMES[:3], REGIMES[3])


def regime_map(sigmas: np.ndarray, max_weight: np.ndarray, coverage: np.ndarray, w_threshold: float = 0.8,
               c_threshold: float = 0.8, edm_steps: int = noise.EDM_STEPS) -> dict:
    """Regime intervals from W_sigma and C_sigma on an increasing grid `sigmas` [L].

    Returns {"boundaries": {"sigma_W", "sigma_C"}, "thresholds": ..., "regimes": {name: {"sigma_min",
    "sigma_max", "edm_indices"}}} with only non-empty regimes; None stands for 0 / infinity
    (unbounded) and for an interval holding no EDM level. edm_indices are inclusive [first, last]
    indices of the edm_steps-level EDM grid (index 0 = sigma_max = 80).
    """
    sigmas, max_weight, coverage = (np.asarray(a, np.float64) for a in (sigmas, max_weight, coverage))
    require(sigmas.ndim == 1 and sigmas.size >= 2 and bool(np.all(np.diff(sigmas) > 0)), "sigmas",
            sigmas.shape, "an increasing grid of >= 2 levels")
    require(max_weight.shape == sigmas.shape and coverage.shape == sigmas.shape, "max_weight/coverage shape",
            (max_weight.shape, coverage.shape), f"{sigmas.shape} (one value per level)")
    for field, value in (("w_threshold", w_threshold), ("c_threshold", c_threshold)):
        require(0.0 < value < 1.0, field, value, "a probability in (0, 1)")
    sigma_w = sigma_crossing(sigmas, max_weight, w_threshold, rising=False)
    sigma_c = sigma_crossing(sigmas, coverage, c_threshold, rising=True)
    intervals = {
        "small": (0.0, min(sigma_w, sigma_c)),
        "medium": (sigma_c, sigma_w),
        "large": (max(sigma_w, sigma_c), float("inf")),
        "neither": (sigma_w, sigma_c),
    }
    grid = noise.edm_sigmas(edm_steps, append_zero=False)
    regimes = {}
    for name, (lo, hi) in intervals.items():
        if lo < hi:
            regimes[name] = {
                "sigma_min": lo if lo > 0 else None,
                "sigma_max": hi if np.isfinite(hi) else None,
                "edm_indices": _as_list(noise.edm_index_range(grid, lo, hi)),
            }
    return {
        "boundaries": {"sigma_W": _finite_or_none(sigma_w), "sigma_C": _finite_or_none(sigma_c)},
        "thresholds": {"w_threshold": w_threshold, "c_threshold": c_threshold},
        "edm_grid": {"steps": edm_steps, "sigmas": grid.tolist()},
        "regimes": regimes,
    }


def _finite_or_none(value: float) -> float | None:
    return value if 0 < value < float("inf") else None


def _as_list(index_range: tuple[int, int] | None) -> list[int] | None:
    return list(index_range) if index_range is not None else None

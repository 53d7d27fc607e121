"""Noise grids: the EDM rho-schedule, the VP grid of the GMM laboratory, analysis grids.

Conventions. VE/EDM: y = x + sigma * eps, sigma in data units (pixels in [-1, 1]).
VP (GMM laboratory): x_t = alpha_t x + sigma_t eps with alpha_t = sqrt(1 - t^2),
sigma_t = t, so psi_t = alpha_t^2 / sigma_t^2 is the signal-to-noise ratio; the
equivalent VE level of x_t / alpha_t is sigma = t / sqrt(1 - t^2).
"""

from __future__ import annotations

import numpy as np

from jaxmem.validation import require

# EDM's sampling grid (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
# Generative Models", Table 1 and eq. 5): 18 noise levels (then a final 0) from sigma_max = 80 down to
# sigma_min = 0.002 (pixel units, data in [-1, 1]) with rho = 7; their Heun sampler spends 35 network
# evaluations on it for CIFAR-10 (2 per step, 1 on the last). These values are the paper's and are
# written only here: the configs, the swap regions and the regime indices are on this grid.
EDM_STEPS = 18
EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO = 0.002, 80.0, 7.0
# The GMM laboratory's VP time grid: 26 times evenly spaced on [0.001, 0.999].
VP_NUM_TIMES, VP_T_MIN, VP_T_MAX = 26, 0.001, 0.999


def edm_sigmas(
    num_steps: int = EDM_STEPS,
    sigma_min: float = EDM_SIGMA_MIN,
    sigma_max: float = EDM_SIGMA_MAX,
    rho: float = EDM_RHO,
    append_zero: bool = True,
) -> np.ndarray:
    """EDM sampling grid (Karras et al. 2022, eq. 5), float64, decreasing.

    sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho, i = 0..n-1,
    followed by a final 0 when `append_zero`. Shape [n] or [n + 1].
    """
    require(num_steps >= 2, "num_steps", num_steps, "an integer >= 2")
    require(0 < sigma_min < sigma_max, "sigma_min, sigma_max", (sigma_min, sigma_max),
            "0 < sigma_min < sigma_max")
    require(rho > 0, "rho", rho, "rho > 0")
    ramp = np.arange(num_steps, dtype=np.float64) / (num_steps - 1)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return np.append(sigmas, 0.0) if append_zero else sigmas


def log_sigmas(num: int = 40, sigma_min: float = EDM_SIGMA_MIN, sigma_max: float = EDM_SIGMA_MAX) -> np.ndarray:
    """Log-spaced analysis grid, increasing, float64, shape [num] (default: EDM's range)."""
    require(num >= 1, "num", num, "an integer >= 1")
    require(0 < sigma_min <= sigma_max, "sigma_min, sigma_max", (sigma_min, sigma_max),
            "0 < sigma_min <= sigma_max")
    return np.geomspace(sigma_min, sigma_max, num)


def vp_times(num: int = VP_NUM_TIMES, t_min: float = VP_T_MIN, t_max: float = VP_T_MAX) -> np.ndarray:
    """VP time grid of the GMM laboratory: linspace(t_min, t_max, num), float64, shape [num]."""
    require(num >= 2, "num", num, "an integer >= 2")
    require(0 < t_min < t_max < 1, "t_min, t_max", (t_min, t_max), "0 < t_min < t_max < 1")
    return np.linspace(t_min, t_max, num)


def vp_alpha(t):
    """alpha_t = sqrt(1 - t^2) (works on numpy and jax arrays)."""
    return (1.0 - t * t) ** 0.5


def vp_sigma(t):
    """sigma_t = t."""
    return t


def vp_snr(t):
    """psi_t = alpha_t^2 / sigma_t^2 = (1 - t^2) / t^2."""
    return (1.0 - t * t) / (t * t)


def edm_index_range(sigmas: np.ndarray, lo: float, hi: float) -> tuple[int, int] | None:
    """Inclusive index range [i, j] of the (decreasing) grid entries with lo <= sigma <= hi.

    Returns None when no grid level lies in the interval.
    """
    idx = np.nonzero((sigmas >= lo) & (sigmas <= hi))[0]
    return (int(idx[0]), int(idx[-1])) if idx.size else None

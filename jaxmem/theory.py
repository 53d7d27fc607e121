"""Closed-form crossover approximations and the measured-loss crossover of the GMM laboratory.

Weightings. A weighting is lambda(t) on the eps-unit training loss (what the trainer uses):
  "eps"     lambda = 1 (the paper's unweighted eps-prediction loss)
  "x0"      lambda = 1 / psi_t (the loss in x0 units, |x0_hat - x0|^2 = |eps_hat - eps|^2 / psi_t)
  "custom"  lambda = a user array over the time grid.
Because |eps_hat - eps|^2 = psi_t |x0_hat - x0|^2, the same objective on x0-unit losses has
weights w_t = lambda_t psi_t ("x0": w = 1, uniform over the grid).

Crossover (paper B; docs/formulas.md, "The GMM laboratory"): the capacity M* at which the weighted training loss
of the partially memorising model (M training points as components, s^2 -> 0) falls below
that of the generalising ground truth. With gen - mem ~ d s0^2 / (1 + psi_t s0^2) and
pmem - mem ~ d s0^2 (1 - M/N) in x0 units,

    M*/N = 1 - sum_t w_t / (1 + psi_t s0^2) / sum_t w_t.

The measured partial-memorisation loss is larger than this approximation, so the
measured-loss crossover (from baseline losses) is reported as well.

Per-dimension variances (the subspace GMM: s0^2 along its C dimensions, tau^2 along the d - C
others). The same two approximations summed over dimensions, gen - mem ~ sum_i v_i / (1 + psi_t
v_i) and pmem - mem ~ (1 - M/N) sum_i v_i, put the crossover where the uncovered share of the
training set falls to

    u* = sum_t w_t sum_i v_i / (1 + psi_t v_i) / (sum_t w_t sum_i v_i),

so M*/N = 1 - u* (for tau = 0 this is the isotropic formula whatever C: the intrinsic dimension
alone does not move the closed form).

Replicated training points (multiplicity m_i: point i stored m_i times; the loss is the mean
over the stored rows). A memorising component on a point of multiplicity m removes m rows'
loss, so the partially memorising baseline covers the most replicated points first, and
pmem - mem ~ U(M) sum_i v_i with U(M) the uncovered share of the rows when the M most
replicated points are covered. The crossover is where U(M*) = u*: with the multiplicities
sorted decreasingly, m_(1) >= m_(2) >= ..., M* is the first M with
sum_{i <= M} m_(i) >= (1 - u*) sum_i m_i, interpolated linearly between integers. For a
fraction p of N points stored r times (W = N (1 + p (r - 1)) rows) this is
    M* = (1 - u*) W / r                          if (1 - u*) W <= p N r,
    M* = p N + (1 - u*) W - p N r                otherwise,
which is (1 - u*) N at p = 0 or r = 1. The measured-loss crossover of the experiment uses the
same order and weights with the exact baseline losses.

linear_fits: the least-squares lines of a crossover capacity against N (M* of the GMM
laboratory, capacity* of the U-Net crossover), with standard errors.
"""

from __future__ import annotations

import numpy as np

from jaxmem.validation import require, require_choice
from jaxmem.noise import vp_snr

WEIGHTINGS = ("eps", "x0", "custom")


def eps_loss_weights(times, weighting: str, custom=None) -> np.ndarray:
    """lambda(t) on the eps-unit loss for each grid time: [T] float64."""
    require_choice("weighting", weighting, WEIGHTINGS)
    times = np.asarray(times, np.float64)
    if weighting == "eps":
        return np.ones_like(times)
    if weighting == "x0":
        return 1.0 / vp_snr(times)
    custom = np.asarray(custom if custom is not None else [], np.float64)
    require(custom.shape == times.shape and np.all(custom >= 0) and np.any(custom > 0),
            "custom_weights", custom.tolist(), f"{times.size} non-negative numbers, not all zero "
            "(one per grid time)")
    return custom


def x0_loss_weights(times, weighting: str, custom=None) -> np.ndarray:
    """w_t = lambda_t psi_t: the same objective's weights on x0-unit losses: [T] float64."""
    return eps_loss_weights(times, weighting, custom) * vp_snr(np.asarray(times, np.float64))


def formula_crossover_fraction(times, weighting: str, variance=1.0, custom=None) -> float:
    """M*/N = 1 - u* (closed-form approximation): u* = sum_t w_t / (1 + psi_t s0^2) / sum_t w_t for
    one variance s0^2; `variance` may also be per-dimension variances v [d] (see the module
    docstring; zeros add nothing)."""
    w = x0_loss_weights(times, weighting, custom)
    psi = vp_snr(np.asarray(times, np.float64))
    v = np.atleast_1d(np.asarray(variance, np.float64))
    uncovered = np.sum(w[:, None] * v / (1.0 + psi[:, None] * v)) / (np.sum(w) * np.sum(v))
    return float(1.0 - uncovered)


def covered_capacity(multiplicity, covered_share: float) -> float:
    """M*: the number of distinct points, most replicated first, whose rows reach `covered_share`
    of the stored training set (linear between integers; see the module docstring).
    multiplicity: [N] copies of each point (>= 1); covered_share: 1 - u* in [0, 1]."""
    m = np.sort(np.asarray(multiplicity, np.float64))[::-1]
    require(m.size >= 1 and np.all(m >= 1), "multiplicity", m.size, "one or more counts >= 1")
    covered = np.concatenate([[0.0], np.cumsum(m)]) / np.sum(m)                    # after 0..N points
    return float(np.interp(covered_share, covered, np.arange(m.size + 1, dtype=np.float64)))


def weighted_loss(x0_losses, times, weighting: str, custom=None) -> np.ndarray:
    """sum_t w_t L_t / sum_t w_t over the last axis of x0-unit losses [..., T]."""
    w = x0_loss_weights(times, weighting, custom)
    return np.asarray(x0_losses, np.float64) @ w / np.sum(w)


def measured_crossover(capacities, partial_losses, generalizing_loss) -> float:
    """The capacity where the partially memorising loss first falls to the generalising loss.

    capacities: increasing M values [J]; partial_losses: weighted loss of the partially
    memorising model at each M [J]; generalizing_loss: weighted ground-truth loss (scalar).
    Linear interpolation between the two grid points around the first crossing; NaN when the
    partial loss never falls that low, capacities[0] when it already starts below.
    """
    gap = np.asarray(partial_losses, np.float64) - float(generalizing_loss)
    return first_crossing(capacities, -gap, 0.0)


def first_crossing(xs, ys, level: float, rising: bool = True) -> float:
    """The first x at which the curve ys(xs) reaches `level` (rising: ys >= level; falling: ys
    < level), interpolated linearly between the bracketing points; xs[0] when the first point is
    already past the level, NaN if no point is.

    Used for the empirical transition M_pt (memorisation ratio 0.5) and its delta window, the
    measured crossover, the U-Net onset capacity and the regime boundaries (in log sigma).
    """
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    past = np.nonzero(ys >= level if rising else ys < level)[0]
    if past.size == 0:
        return float("nan")
    j = int(past[0])
    if j == 0:
        return float(xs[0])
    return float(xs[j - 1] + (xs[j] - xs[j - 1]) * (level - ys[j - 1]) / (ys[j] - ys[j - 1]))


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

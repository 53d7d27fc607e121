"""A loss weighting lambda(t) fitted so that the measured-loss crossover predicts the measured M_pt.

The measured-loss prediction of the crossover (jaxmem.theory.measured_crossover) is the capacity
M at which the weighted loss of the partially memorising baseline falls to the generalising
ground truth's. With weights w_t on the x0-unit losses of the T-point time grid, data set j
predicts M_pt exactly when its weighted gap at M_pt vanishes:

    g_j(w) = sum_t w_t (pmem_t(M_pt) - gen_t) = 0,

pmem_t(M) interpolated linearly between the baseline capacities. To first order the predicted
capacity misses M_pt by g_j(w) / sum_t w_t s_jt, with s_jt = -d pmem_t / dM at M_pt (the loss
falls as more points are memorised), so in units of N the error is

    e_j(w) = g_j(w) / (N_j sum_t w_t s_jt).

fit_weights minimises the mean of e_j(w)^2 over w >= 0 (the ratio does not depend on the scale
of w; the result is normalised to sum 1). The eps-unit weighting that trains the same
objective is lambda_t = w_t / psi_t (jaxmem.theory); predicted_capacities evaluates any w with
the exact crossing, not the first-order error.
"""

from __future__ import annotations

import numpy as np

from jaxmem import theory
from jaxmem.validation import require


def gap_and_slope(pmem_m, pmem_loss, gen_loss, capacity: float) -> tuple[np.ndarray, np.ndarray]:
    """(pmem_t(M) - gen_t, -d pmem_t / dM) at M = capacity, both [T] float64.

    pmem_m: increasing baseline capacities [J] (NaN padding allowed); pmem_loss: their x0-unit
    losses [J, T]; gen_loss: the ground truth's [T]. The slope is that of the segment holding M.
    """
    m = np.asarray(pmem_m, np.float64)
    valid = np.isfinite(m)
    m, loss = m[valid], np.asarray(pmem_loss, np.float64)[valid]
    require(m.size >= 2 and m[0] <= capacity <= m[-1], "capacity", capacity,
            f"inside the baseline capacities [{m[0] if m.size else 'none'}, {m[-1] if m.size else 'none'}]")
    i = int(np.clip(np.searchsorted(m, capacity) - 1, 0, m.size - 2))
    slope = (loss[i + 1] - loss[i]) / (m[i + 1] - m[i])
    at = loss[i] + slope * (capacity - m[i])
    return at - np.asarray(gen_loss, np.float64), -slope


def first_order_errors(weights, gaps, slopes, train_sizes) -> np.ndarray:
    """e_j(w) [S]: the first-order error of the predicted capacity in units of N.
    weights [T]; gaps, slopes [S, T]; train_sizes [S]."""
    w = np.asarray(weights, np.float64)
    return (np.asarray(gaps) @ w) / (np.asarray(train_sizes, np.float64) * (np.asarray(slopes) @ w))


def fit_weights(gaps, slopes, train_sizes, start=None) -> np.ndarray:
    """w [T] >= 0 summing to 1 that minimises mean_j e_j(w)^2 (L-BFGS-B from `start`, default
    uniform x0 weights). gaps, slopes: [S, T] (gap_and_slope per data set); train_sizes: [S]."""
    from scipy import optimize  # imported here: scipy costs every launcher start ~0.5 s
    gaps, slopes = np.asarray(gaps, np.float64), np.asarray(slopes, np.float64)
    require(gaps.ndim == 2 and gaps.shape == slopes.shape and gaps.shape[0] == len(train_sizes),
            "gaps, slopes, train_sizes", (gaps.shape, slopes.shape, len(train_sizes)), "[S, T], [S, T] and S sizes")
    num_times = gaps.shape[1]
    start = np.full(num_times, 1.0 / num_times) if start is None else np.asarray(start, np.float64) / np.sum(start)

    def objective(w):
        return float(np.mean(first_order_errors(w, gaps, slopes, train_sizes) ** 2))

    result = optimize.minimize(objective, start, method="L-BFGS-B", bounds=[(0.0, 1.0)] * num_times,
                               options=dict(maxiter=2_000, ftol=1e-15, gtol=1e-12))
    w = np.clip(result.x, 0.0, None)
    return w / np.sum(w)


def predicted_capacities(weights, pmem_m, pmem_loss, gen_loss) -> np.ndarray:
    """M* [S] of every data set under x0-unit weights [T] (the exact first crossing).
    pmem_m [S, J] (NaN-padded), pmem_loss [S, J, T], gen_loss [S, T]."""
    w = np.asarray(weights, np.float64)
    out = []
    for m, loss, gen in zip(pmem_m, pmem_loss, gen_loss):
        valid = np.isfinite(m)
        out.append(theory.measured_crossover(m[valid], np.asarray(loss)[valid] @ w, np.asarray(gen) @ w))
    return np.array(out)

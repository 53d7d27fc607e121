"""Adaptive capacity search: bracket the memorisation transition M_pt in a few vmapped rounds.

The fixed protocol trains M/N = 0.1, ..., 1.0 for every training set and reads M_pt (the
first M whose memorisation ratio reaches 0.5, interpolated) off that grid, to +-0.05 N at
best. The search instead

  round 0   places `points` capacities around a predicted crossover M_pred (jaxmem.theory's
            measured-loss prediction): M_pred (1 + span u), u evenly spaced in [-1, 1];
  round k   finds the bracket (lo, hi) of the first crossing of `level` among all M trained so
            far (lo: the largest M before it, 0 if none, whose ratio is taken as 0; hi: the
            first M at or above the level, or N itself when no trained M reaches it yet) and
            places `points` integers evenly inside it;
  stops     when hi - lo <= tolerance (in units of M; tolerance_fraction N), when the bracket
            holds no untried integer, or when the largest M = N stays below the level
            (no transition: M_pt is NaN).

Every round is one vmapped grid over all training sets of a grid (jaxmem.experiments.gmm_crossover), so the
rounds cost a handful of compiled programs; a set whose search has ended trains nothing more.
The functions here are pure (arrays in, arrays out) and know nothing about training.
"""

from __future__ import annotations

import numpy as np

from jaxmem.validation import require


def first_round(num_train: int, predicted: float, points: int, span: float) -> np.ndarray:
    """Round 0: up to `points` distinct integer capacities M_pred (1 + span u), u in [-1, 1], within [1, N].

    A non-finite prediction (no crossover predicted) falls back to evenly spaced M in [N/2, N].
    """
    require(points >= 1, "model.search_points", points, "an integer >= 1")
    require(0 < span <= 1, "model.search_span", span, "a fraction in (0, 1]")
    if np.isfinite(predicted):
        values = predicted * (1.0 + span * np.linspace(-1.0, 1.0, points)) if points > 1 else np.array([predicted])
    else:
        values = np.linspace(0.5 * num_train, num_train, points)
    return np.unique(np.clip(np.rint(values), 1, num_train).astype(np.int64))


def bracket(capacities, ratios, num_train: int, level: float = 0.5) -> tuple[float, float, bool]:
    """(lo, hi, hi_tried) around the first crossing of `level` by ratio(M).

    capacities: trained M values [J] (any order); ratios: their memorisation ratios [J].
    lo: the largest trained M before the first one at or above the level (0 when there is
    none: ratio(0) = 0 by convention); hi: that first M, or N when no trained M reaches the
    level (hi_tried False: N itself has not been trained yet). When N was trained and stays
    below the level, returns (N, N, True): nothing left to bracket.
    """
    m = np.asarray(capacities, np.int64)
    r = np.asarray(ratios, np.float64)
    require(m.shape == r.shape and m.ndim == 1, "capacities, ratios", (m.shape, r.shape), "two 1-D arrays of one length")
    order = np.argsort(m)
    m, r = m[order], r[order]
    above = np.nonzero(r >= level)[0]
    if above.size == 0:
        if m.size and m[-1] >= num_train:  # N trained and still below the level: no transition
            return float(num_train), float(num_train), True
        return (float(m[-1]) if m.size else 0.0), float(num_train), False
    j = int(above[0])
    return (float(m[j - 1]) if j > 0 else 0.0), float(m[j]), True


def next_round(capacities, ratios, num_train: int, points: int, tolerance: float, level: float = 0.5
               ) -> np.ndarray:
    """The untried integer capacities of the next round, empty when the search has ended.

    tolerance: the bracket width (in units of M, > 0) at which the search stops. Inside a
    bracket (lo, hi) wider than that, `points` integers evenly spaced strictly inside it; when
    hi = N is untried, N itself is among them (it decides whether there is a transition).
    """
    require(tolerance > 0, "model.search_tolerance", tolerance, "a positive bracket width")
    lo, hi, hi_tried = bracket(capacities, ratios, num_train, level)
    tried = np.asarray(capacities, np.int64)
    if hi_tried and hi - lo <= tolerance:
        return np.zeros(0, np.int64)
    inside = lo + (hi - lo) * np.arange(1, points + 1) / (points + 1)
    values = np.rint(inside).astype(np.int64)
    if not hi_tried:
        values = np.append(values, num_train)
    values = values[(values > lo) & (values <= hi) & (values >= 1)]
    return np.setdiff1d(np.unique(values), tried)

"""Trajectories of the memorizing model: the x* / noise / residual decomposition of its latents,
the deviation from the ideal memorizer and the overestimation of the clean estimate, and how
these scores correlate with memorization (jaxmem.trajectory)."""

from __future__ import annotations

import jax
import numpy as np

from jaxmem import memorization, sampling, trajectory
from jaxmem.experiments.denoiser_swaps.models import Model


SCORES = ("target_excess", "noise_deficit", "overestimation")


def trajectory_scores(model: Model, grid: np.ndarray, found, start, solver: str, guidance: float,
                      level: float) -> dict:
    """Decomposition scores of the model's trajectories from unit noise `start` [T, H, W, C].

    Per sample: memorized, distance_ratio d1/d2, nearest (trajectory_memorization of the final
    latents against the model's training set); target_excess and noise_deficit (mean over the
    latents in the medium region), overestimation (mean over the large region's steps), see
    jaxmem.trajectory. Also the coefficients a, b by level ([n + 1, T]) for the figure.
    """
    denoise = model.bound(guidance)
    solve = jax.jit(lambda z: sampling.edm_trajectory(lambda x, s, i: denoise(x, s), z, grid, solver))
    latents, estimates = solve(start)
    result = memorization.trajectory_memorization(np.asarray(latents[-1]), model.train.images, level)
    target = model.train.images[result["nearest"]]
    parts = trajectory.decompose(latents, target, start)
    deviation = trajectory.schedule_deviation(parts, grid)
    over = trajectory.overestimation(estimates, target, model.train.images.mean(axis=0))
    (m0, m1), (l0, l1) = found["medium"], found["large"]
    scores = {"target_excess": np.asarray(deviation["target_excess"][m0:m1 + 1]).mean(axis=0),
              "noise_deficit": np.asarray(deviation["noise_deficit"][m0:m1 + 1]).mean(axis=0),
              "overestimation": np.asarray(over[l0:l1 + 1]).mean(axis=0)}
    return dict(result, scores=scores, target_coef=np.asarray(parts["target_coef"]),
                noise_coef=np.asarray(parts["noise_coef"]))


def correlations(result: dict) -> list[dict]:
    """Spearman correlation of each score with d1/d2 (negative: the score rises as samples
    memorize) and the point-biserial (Pearson) correlation with the memorized flag; NaN when
    either side is constant."""
    from scipy import stats  # imported here: scipy.stats costs every launcher start ~0.6 s
    rows = []
    flags = result["memorized"].astype(np.float64)
    for name in SCORES:
        score = result["scores"][name].astype(np.float64)
        varied = np.ptp(score) > 0
        rho = stats.spearmanr(score, result["distance_ratio"]).statistic if varied else np.nan
        r = np.corrcoef(score, flags)[0, 1] if varied and np.ptp(flags) > 0 else np.nan
        rows.append(dict(score=name, spearman_vs_distance_ratio=float(rho), pearson_vs_memorized=float(r),
                         mean_memorized=float(score[flags > 0].mean()) if flags.any() else None,
                         mean_not_memorized=float(score[flags == 0].mean()) if (flags == 0).any() else None))
    return rows

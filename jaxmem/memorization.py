"""Memorization of a denoiser: along whole sampling trajectories and one noise level at a time.

Trajectory level ("Two Calm Ends and the Wild Middle", Table 1): a generated sample g is
memorized iff |g - NN1(g)| < |g - NN2(g)| / 3 over the training set (jaxmem.neighbors); the rate
over S samples is reported with a Wilson score interval for a binomial proportion,
    center = (k + z^2/2) / (S + z^2),   half = z / (S + z^2) * sqrt(k (S - k) / S + z^2 / 4),
k memorized samples, z the standard-normal quantile of (1 + level) / 2.

Per noise level (section 3): for each sigma, one denoising step D(x + sigma z, sigma) of clean
images x (training or held-out); the fraction of outputs that pass the 1/3 test, and the
denoising error |D(x + sigma z, sigma) - x|^2 (summed over dimensions, docs/formulas.md), whose
train / held-out difference is the generalization gap by sigma.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from jaxmem.validation import require
from jaxmem.denoisers.empirical import check_sigma
from jaxmem.geometry.mse import per_level
from jaxmem.geometry.queries import map_query_chunks
from jaxmem.neighbors import memorization_flags, memorization_test


def wilson_interval(successes, trials, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (lower, upper) of a binomial proportion; broadcasts over arrays.

    successes: counts k in [0, trials]; trials: S >= 1; level: confidence level in (0, 1).
    """
    require(0.0 < level < 1.0, "level", level, "a confidence level in (0, 1)")
    k, n = np.asarray(successes, np.float64), np.asarray(trials, np.float64)
    require(bool(np.all(n >= 1)) and bool(np.all((k >= 0) & (k <= n))), "successes, trials",
            (successes, trials), "0 <= successes <= trials, trials >= 1")
    from scipy.special import ndtri  # here: scipy's import costs a launcher's --help half a second

    z = ndtri(0.5 + 0.5 * level)
    center = (k + 0.5 * z * z) / (n + z * z)
    half = z / (n + z * z) * np.sqrt(k * (n - k) / n + 0.25 * z * z)
    # exact ends at k = 0 and k = S (the formula gives them up to rounding)
    return np.where(k == 0, 0.0, center - half), np.where(k == n, 1.0, center + half)


def trajectory_memorization(samples, train, level: float = 0.95, **knn_kwargs) -> dict:
    """Memorization rate of generated samples with its Wilson interval and nearest training images.

    samples: [S, ...] generated images; train: [N, ...] the model's training set (same trailing
    shape). knn_kwargs go to jaxmem.neighbors.knn. Returns
      {"rate": float, "ci_low": float, "ci_high": float, "level": level, "count": S,
       "memorized": bool [S], "nearest": int [S] index into train, "nearest_distance": [S],
       "distance_ratio": [S] d1 / d2 (nearest over second-nearest distance; memorized iff < 1/3)}.
    """
    samples, train = np.asarray(samples, np.float32), np.asarray(train, np.float32)
    require(samples.ndim >= 2 and samples.shape[1:] == train.shape[1:], "samples.shape vs train.shape",
            (samples.shape, train.shape), "[S, ...] and [N, ...] with the same trailing shape")
    flags, distances, indices = memorization_test(samples, train, **knn_kwargs)
    low, high = wilson_interval(int(flags.sum()), len(flags), level)
    return {"rate": float(flags.mean()), "ci_low": float(low), "ci_high": float(high), "level": level,
            "count": len(flags), "memorized": flags, "nearest": indices, "nearest_distance": distances[:, 0],
            "distance_ratio": distances[:, 0] / np.maximum(distances[:, 1], np.finfo(np.float32).tiny)}


def one_step_denoise(denoise: Callable, clean, noise, sigmas, chunk_size: int = 256, mesh=None) -> np.ndarray:
    """D(x_q + s z_q, s) for every query and level, [Q, L, ...] (numpy float32).

    denoise(x [B, ...], sigma [B]) -> [B, ...]; clean, noise: [Q, ...] (flat vectors or images;
    z shared by all levels); sigmas: [L] > 0. Queries are chunked and sharded
    (geometry.queries.map_query_chunks).
    """
    check_sigma(sigmas, "sigmas")
    clean, noise = np.asarray(clean, np.float32), np.asarray(noise, np.float32)
    require(clean.ndim >= 2 and noise.shape == clean.shape, "clean.shape, noise.shape", (clean.shape, noise.shape),
            "equal shapes [Q, ...]")

    kernel = jax.jit(functools.partial(per_level, denoise))
    return map_query_chunks(kernel, (clean, noise), (np.asarray(sigmas, np.float32),), chunk_size, mesh,
                            name="one-step denoise")


def per_level_memorization(denoise: Callable, clean, noise, sigmas, train, level: float = 0.95,
                           chunk_size: int = 256, **knn_kwargs) -> dict:
    """Fraction of one-step denoised outputs that pass the 1/3 test, and the MSE to clean, by sigma.

    denoise(x [B, ...], sigma [B]) -> [B, ...], e.g. functools.partial(empirical.apply, params) or a
    trained network. clean: [Q, ...] training or held-out images; noise: [Q, ...] unit Gaussian;
    sigmas: [L] > 0; train: [N, ...] the set the 1/3 test compares against. Returns
      {"sigmas": [L], "memorized_fraction": [L], "ci_low": [L], "ci_high": [L],
       "mse": [L] mean of |D(x + s z, s) - x|^2 over queries, "mse_per_query": [Q, L]}.
    """
    outputs = one_step_denoise(denoise, clean, noise, sigmas, chunk_size)
    num_queries, num_levels = outputs.shape[:2]
    outputs = outputs.reshape(num_queries, num_levels, -1)
    d = outputs.shape[-1]
    train = np.asarray(train, np.float32).reshape(len(train), -1)
    require(train.shape[1] == d, "train dimension d", train.shape[1], f"d = {d}, the queries' dimension")
    flags = memorization_flags(outputs.reshape(-1, d), train, **knn_kwargs).reshape(num_queries, num_levels)
    clean = np.asarray(clean, np.float32).reshape(num_queries, 1, d)
    errors = np.sum(np.square(outputs - clean), axis=-1)
    low, high = wilson_interval(flags.sum(axis=0), num_queries, level)
    return {"sigmas": np.asarray(sigmas, np.float64), "memorized_fraction": flags.mean(axis=0), "ci_low": low,
            "ci_high": high, "mse": errors.mean(axis=0), "mse_per_query": errors}

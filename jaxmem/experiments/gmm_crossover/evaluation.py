"""Measurements of the crossover experiment: per-t denoising losses and DDIM samples of many
models at once, and the baselines (ground truth, fully and partially memorising) of each data set.

Every model and baseline of a d is evaluated with the same noise draws (common random numbers),
so differences between their losses are not Monte Carlo noise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import noise, sampling
from jaxmem.data import gmm as gmm_data
from jaxmem.denoisers import gmm as gmm_denoiser

EVAL_SEED = 12345


def x0_losses_per_time(params, mask, points, point_mask, eps, times):
    """Denoising loss in x0 units, E|x0_hat(alpha x + sigma eps, t) - x|^2 summed over dims: [T].

    points: [N, d]; point_mask: [N] float; eps: [N, R, d] noise draws shared by every t (and by
    every denoiser evaluated with the same draws: common random numbers); times: [T].
    """
    num_points, draws, dim = eps.shape

    def at_time(t):
        x_t = noise.vp_alpha(t) * points[:, None, :] + noise.vp_sigma(t) * eps
        x0_hat = gmm_denoiser.apply_x0(params, x_t.reshape(-1, dim), t, mask).reshape(eps.shape)
        per_point = jnp.mean(jnp.sum((x0_hat - points[:, None, :]) ** 2, axis=-1), axis=1)
        return jnp.sum(point_mask * per_point) / jnp.sum(point_mask)

    return jax.lax.map(at_time, jnp.asarray(times, jnp.float32))


def _map_models(fn, xs, model_batch: int):
    """fn over the leading axis of xs: all at once (vmap) when model_batch is 0, else in batches."""
    if model_batch <= 0:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=model_batch)


@functools.partial(jax.jit, static_argnames="model_batch")
def grid_losses(params, masks, points, point_masks, eps, times, model_batch=0):
    """x0_losses_per_time of every model of a grid: [G, T]."""
    return _map_models(lambda a: x0_losses_per_time(*a, eps, times), (params, masks, points, point_masks),
                       model_batch)


@functools.partial(jax.jit, static_argnames="model_batch")
def capacity_losses(params, masks, points, point_mask, eps, times, model_batch=0):
    """x0_losses_per_time of one set of means under several component masks: [J, T]."""
    return _map_models(lambda m: x0_losses_per_time(params, m, points, point_mask, eps, times), masks,
                       model_batch)


def sample_grid(params, masks, x_start, times, final_denoise: bool = True):
    """DDIM samples of every model of the grid: [G, S, d] (final_denoise: see sampling.ddim_sample)."""
    def one_model(p, m, x):
        return sampling.ddim_sample(lambda x_t, t: gmm_denoiser.apply(p, x_t, t, m), x, times,
                                    final_denoise=final_denoise)

    return jax.jit(jax.vmap(one_model))(params, masks, x_start)


TRAIN_SPLIT, VAL_SPLIT = 1, 2  # the codes eval_noise folds into EVAL_SEED per split


def eval_noise(num_points: int, draws: int, dim: int, split: int) -> jax.Array:
    """The evaluation noise draws [num_points, draws (eval.noise_draws), d] of a split (TRAIN_SPLIT
    or VAL_SPLIT), shared by every model and baseline of a d (common random numbers)."""
    return jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(EVAL_SEED), split), (num_points, draws, dim))


def truth_losses(data: gmm_data.GMMData, points, point_mask, eps, times) -> np.ndarray:
    """Per-t x0-unit loss [T] of the data model's exact denoiser on weighted points (see
    x0_losses_per_time). The subspace GMM's denoiser splits along its basis B: inside the
    subspace the isotropic C-dimensional GMM denoiser of B^T x_t (the off-subspace part of the
    likelihood is the same for every component), outside it the Wiener shrinkage
    alpha tau^2 / (alpha^2 tau^2 + sigma^2) of (I - B B^T) x_t."""
    one = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)  # noqa: E731  (a grid of one model)
    mask = np.ones((1, data.means.shape[0]), bool)
    if data.basis is None:
        truth = one(gmm_denoiser.ground_truth_params(data.means, data.variance))
        return np.asarray(grid_losses(truth, mask, points[None], point_mask[None], eps, times)[0])
    basis = np.asarray(data.basis, np.float64)
    points, eps = np.asarray(points, np.float64), np.asarray(eps, np.float64)
    truth = one(gmm_denoiser.ground_truth_params((data.means @ basis).astype(np.float32), data.variance))
    inside = grid_losses(truth, mask, (points @ basis).astype(np.float32)[None], point_mask[None],
                         (eps @ basis).astype(np.float32), times)[0]
    points_off, eps_off = points - points @ basis @ basis.T, eps - eps @ basis @ basis.T
    outside = []
    for t in np.asarray(times, np.float64):
        alpha, sigma = noise.vp_alpha(t), noise.vp_sigma(t)
        shrink = alpha * data.off_variance / (alpha**2 * data.off_variance + sigma**2)
        error = shrink * (alpha * points_off[:, None] + sigma * eps_off) - points_off[:, None]    # [N, R, d]
        outside.append(np.mean(np.sum(error**2, axis=-1), axis=-1) @ point_mask / np.sum(point_mask))
    return np.asarray(inside, np.float64) + np.asarray(outside)


def baseline_losses(data_sets, eps, times, crossover_points: int, model_batch: int = 0) -> tuple[np.ndarray, ...]:
    """Per-t x0-unit training losses of the baselines of each data set (grids.DataSet), with the
    noise draws `eps` [N_max, R, d] at the times [T]; crossover_points (eval.crossover_points):
    J, the partially memorising capacities per set; model_batch (eval.model_batch): masks
    evaluated at once (0 = all).

    Returns gen [S, T] (ground truth, truth_losses; NaN for the low-rank model, which has no
    GMM truth), mem [S, T] (all N points, s^2 = 0), pmem_M [S, J] and pmem [S, J, T]: the
    partially memorising denoiser with M distinct training points (one fixed subset for every
    t; the most replicated points first, in point order among equals) for J capacities from 1
    to N (NaN-padded where a smaller N has fewer distinct capacities). Every loss is the mean
    over the stored training set: each distinct point weighted by its multiplicity.
    """
    max_n = eps.shape[0]
    gen = np.full((len(data_sets), len(times)), np.nan)
    mem = np.zeros((len(data_sets), len(times)))
    pmem_m = np.full((len(data_sets), crossover_points), np.nan)
    pmem = np.full((len(data_sets), crossover_points, len(times)), np.nan)
    for j, data_set in enumerate(data_sets):  # a handful of data sets per grid
        n, data = data_set.num_train, data_set.data
        order = gmm_data.most_replicated_first(data)
        points = np.zeros((max_n, data.dim), np.float32)
        points[:n] = data.train[order]
        point_mask = np.zeros(max_n, np.float32)
        point_mask[:n] = gmm_data.multiplicity_of(data)[order]
        if data.variance is not None:
            gen[j] = truth_losses(data, points, point_mask, eps, times)
        m_values = np.unique(np.rint(np.linspace(1, n, crossover_points)).astype(np.int64))
        masks = np.arange(max_n)[None, :] < m_values[:, None]
        losses = np.asarray(capacity_losses(gmm_denoiser.memorizing_params(points), masks, points, point_mask,
                                             eps, times, model_batch=model_batch))
        pmem_m[j, :len(m_values)], pmem[j, :len(m_values)], mem[j] = m_values, losses, losses[-1]
    return gen, mem, pmem_m, pmem

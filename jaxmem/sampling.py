"""Samplers: deterministic integrators of the reverse process for any denoiser.

A sampler takes the denoiser as a function of (x, noise level) and the starting noise, so one
sampler serves every model family; vmapping it over model parameters samples a whole grid.

DDIM (VP, eta = 0; Song et al. 2021, eq. 12 with sigma = 0) on a time grid
t_K > ... > t_0 of the VP process x_t = alpha_t x0 + sigma_t eps:
    x0_hat = (x - sigma_{t_k} eps_hat) / alpha_{t_k}
    x      <- alpha_{t_{k-1}} x0_hat + sigma_{t_{k-1}} eps_hat,
starting from x ~ N(0, I) at t_K and returning the clean estimate x0_hat at t_0 (one more
denoiser call), or with final_denoise=False x itself at t_0 (the authors' GMM code: 25 steps
from t = 0.999 that return x at t = 0.001).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import parallel, xla_options
from jaxmem.validation import require, require_choice
from jaxmem.noise import vp_alpha, vp_sigma
from jaxmem.progress import Progress

PREDICTIONS = ("eps", "x0")


def ddim_sample(denoiser: Callable, x_start, times, prediction: str = "eps", final_denoise: bool = True):
    """Deterministic DDIM from x_start [S, d] at times[-1] down to times[0]; returns x0 [S, d].

    denoiser(x [S, d], t scalar) -> [S, d]: the eps-prediction (prediction="eps") or the
    clean estimate (prediction="x0"). times: increasing VP times in (0, 1), shape [K + 1];
    the sampler makes K DDIM steps (K + 1 denoiser calls, the last one gives x0).
    final_denoise=False: K denoiser calls, returns x at times[0] (no final denoising step).
    """
    require_choice("prediction", prediction, PREDICTIONS)
    times = np.asarray(times, np.float64)
    require(times.ndim == 1 and times.size >= 2 and np.all(np.diff(times) > 0) and times[0] > 0
            and times[-1] < 1, "times", times, "an increasing 1-D grid inside (0, 1) with >= 2 points")
    descending = jnp.asarray(times[::-1], jnp.float32)

    def predict(x, t):
        alpha, sigma = vp_alpha(t), vp_sigma(t)
        out = denoiser(x, t)
        if prediction == "eps":
            return (x - sigma * out) / alpha, out
        return out, (x - alpha * out) / sigma

    def ddim_step(x, t_pair):
        t_now, t_next = t_pair
        x0_hat, eps_hat = predict(x, t_now)
        return vp_alpha(t_next) * x0_hat + vp_sigma(t_next) * eps_hat, None

    x, _ = jax.lax.scan(ddim_step, jnp.asarray(x_start, jnp.float32),
                        (descending[:-1], descending[1:]))
    return predict(x, descending[-1])[0] if final_denoise else x


# --- EDM samplers (Karras et al. 2022, Algorithm 1 without stochasticity) -----------------------
#
# Probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma on a decreasing grid
# sigma_0 > ... > sigma_{n-1} > sigma_n = 0 (jaxmem.noise.edm_sigmas), from x = sigma_0 z:
#   Euler:  d_i = (x_i - D(x_i; s_i)) / s_i,   x_{i+1} = x_i + (s_{i+1} - s_i) d_i
#   Heun:   x'  = Euler step;  if s_{i+1} > 0:  d'_i = (x' - D(x'; s_{i+1})) / s_{i+1},
#           x_{i+1} = x_i + (s_{i+1} - s_i) (d_i + d'_i) / 2     (2n - 1 denoiser calls)
# A step denoiser receives the step index i (both calls of a Heun step get the same i), so a
# per-step choice of network (swap windows) plugs in: denoise(x, sigma, i) may switch on i.

EDM_SOLVERS = ("euler", "heun")


def _check_edm_grid(sigmas) -> np.ndarray:
    sigmas = np.asarray(sigmas, np.float64)
    require(sigmas.ndim == 1 and sigmas.size >= 2 and np.all(np.diff(sigmas) < 0) and sigmas[-1] == 0
            and sigmas[-2] > 0, "sigmas", sigmas, "a decreasing 1-D grid of >= 2 levels ending in 0 "
            "(jaxmem.noise.edm_sigmas)")
    return sigmas


def _edm_solve(step_denoise: Callable, noise, sigmas, solver: str, record: bool):
    """The probability-flow ODE solve shared by `edm_sample_steps` and `edm_trajectory`."""
    require_choice("solver", solver, EDM_SOLVERS)
    sigmas = jnp.asarray(_check_edm_grid(sigmas), jnp.float32)
    steps = sigmas.shape[0] - 1

    def ode_step(x, index):
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        x0_hat = step_denoise(x, sigma, index)
        d = (x - x0_hat) / sigma
        x_next = x + (sigma_next - sigma) * d
        if solver == "heun":
            d_next = (x_next - step_denoise(x_next, sigma_next, index)) / sigma_next
            x_next = x + (sigma_next - sigma) * 0.5 * (d + d_next)
        return x_next, ((x, x0_hat) if record else None)

    x = sigmas[0] * jnp.asarray(noise, jnp.float32)
    x, history = jax.lax.scan(ode_step, x, jnp.arange(steps - 1, dtype=jnp.int32))
    last = jnp.int32(steps - 1)  # the final step to sigma = 0 is an Euler step for both solvers
    x0_last = step_denoise(x, sigmas[last], last)
    final = x - sigmas[last] * ((x - x0_last) / sigmas[last])
    if not record:
        return final
    latents = jnp.concatenate([history[0], x[None], final[None]])
    return latents, jnp.concatenate([history[1], x0_last[None]])


def edm_sample_steps(step_denoise: Callable, noise, sigmas, solver: str = "heun"):
    """Deterministic EDM sampling with a step-aware denoiser; returns x at sigma = 0, [S, ...].

    step_denoise(x [S, ...], sigma scalar, step int32 scalar) -> x0_hat [S, ...].
    noise: unit Gaussian [S, ...] (scaled by sigmas[0] here). sigmas: decreasing grid ending in
    0, shape [n + 1] (n steps). solver: 'euler' (n calls) or 'heun' (2n - 1 calls).
    """
    return _edm_solve(step_denoise, noise, sigmas, solver, record=False)


def edm_trajectory(step_denoise: Callable, noise, sigmas, solver: str = "heun"):
    """`edm_sample_steps` that also returns the path, for jaxmem.trajectory.

    Returns (latents [n + 1, S, ...]: x at sigmas[0], ..., sigmas[n] = 0, the last being the
    sample; clean_estimates [n, S, ...]: the denoiser's x0_hat at the start of each step).
    """
    return _edm_solve(step_denoise, noise, sigmas, solver, record=True)


def edm_noise(seed: int, first: int, count: int, shape: tuple[int, ...]) -> jax.Array:
    """Unit Gaussian starting noise of samples first..first+count-1 for `seed`, [count, *shape].

    Sample i uses fold_in(PRNGKey(seed), i), so a sample does not depend on the batching.
    """
    indices = jnp.asarray(first, jnp.uint32) + jnp.arange(count, dtype=jnp.uint32)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(indices)
    return jax.vmap(lambda key: jax.random.normal(key, shape))(keys)


@functools.lru_cache(maxsize=32)
def without_step(denoise: Callable) -> Callable:
    """step_denoise(params, x, sigma, step) -> denoise(params, x, sigma) for edm_generate, one
    object per denoiser (edm_generate caches its compiled programs by the step denoiser)."""
    return lambda params, x, sigma, step: denoise(params, x, sigma)


def sample_batch_program(step_denoise: Callable, grid: tuple, solver: str, image_ndim: int, mesh) -> Callable:
    """jit of sample_batch(params, noise [B, ...]) -> samples [B, ...] on `mesh` (the batch split
    along its data axis): the program `edm_generate` runs per batch, and the one
    launch/compile_check.py compiles for accelerator targets."""
    noise_sharding = parallel.sharding_along(mesh, 1 + image_ndim)
    return jax.jit(
        lambda p, z: edm_sample_steps(lambda x, s, i: step_denoise(p, x, s, i), z, np.asarray(grid), solver),
        out_shardings=noise_sharding, compiler_options=xla_options.convolutions(list(mesh.devices.flat)))


@functools.lru_cache(maxsize=32)
def _generate_programs(step_denoise: Callable, grid: tuple, solver: str, seed: int, batch: int,
                       shape: tuple[int, ...], mesh) -> tuple[Callable, Callable]:
    """The jitted (sample_batch(params, noise), make_noise(first)) of `edm_generate`, cached: calls
    with the same step denoiser and settings (e.g. a swap table whose windows are traced
    parameters) compile once."""
    noise_sharding = parallel.sharding_along(mesh, 1 + len(shape))
    make_noise = jax.jit(lambda first: edm_noise(seed, first, batch, shape), out_shardings=noise_sharding)
    return sample_batch_program(step_denoise, grid, solver, len(shape), mesh), make_noise


def edm_generate(step_denoise: Callable, params, num_samples: int, shape: tuple[int, ...], seed: int,
                 sigmas, solver: str = "heun", batch_size: int = 256, mesh=None, name: str = "sample") -> np.ndarray:
    """num_samples EDM samples [num_samples, *shape] (numpy float32), batched and sharded.

    step_denoise(params, x, sigma, step) -> x0_hat; params (a pytree, may be None) is passed as
    a jit argument, replicated. Each batch (rounded up to a multiple of the device count) is
    split over the mesh's data axis. Deterministic per seed, independent of batch_size. `name`
    labels the progress lines.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"edm_generate needs num_samples >= 1 and batch_size >= 1; got {num_samples} and {batch_size}")
    mesh = parallel.make_mesh() if mesh is None else mesh
    batch = -(-batch_size // mesh.size) * mesh.size
    grid = tuple(_check_edm_grid(sigmas).tolist())
    params = jax.device_put(params, parallel.replicated(mesh))
    sample_batch, make_noise = _generate_programs(step_denoise, grid, solver, seed, batch, tuple(shape), mesh)
    out = np.empty((num_samples, *shape), np.float32)
    progress = Progress(name, total=num_samples, unit="sample")
    for first in range(0, num_samples, batch):
        count = min(batch, num_samples - first)
        out[first:first + count] = parallel.to_host(sample_batch(params, make_noise(first)))[:count]
        progress.update(count)
    return out

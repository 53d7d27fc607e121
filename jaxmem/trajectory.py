"""How memorization shows along a sampling trajectory ("How Diffusion Models Memorize", VE/EDM form).

For a trajectory that starts from x_{sigma_0} = sigma_0 n (n the unit initial noise) and ends on
the training image x*, each intermediate latent is split by least squares onto span{x*, n}:
    x_sigma = a_sigma x* + b_sigma n + r_sigma,     r_sigma orthogonal to x* and n.
An ideal memorizer (D == x*) under the EDM probability-flow ODE dx/dsigma = (x - D)/sigma gives
    x_sigma = (1 - sigma / sigma_max) x* + sigma n,
so a_sigma grows linearly as sigma falls. Memorized samples deviate early: excess x* content
(a above the ideal) and early loss of the noise component (b below sigma). The clean estimate's
overestimation coefficient along the target's offset from the data mean mu is
    c_sigma = <D(x_sigma; sigma) - mu, x* - mu> / |x* - mu|^2      (1 = exact, > 1 overshoot).
Classifier-free guidance with scale g: D_g = D(x, c) + (g - 1) (D(x, c) - D(x, none)); at high
noise the guided estimate overshoots by about g.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from jaxmem.validation import require


def _flat(array, lead: int) -> jnp.ndarray:
    array = jnp.asarray(array, jnp.float32)
    return array.reshape(*array.shape[:lead], -1)


def decompose(latents, target, noise) -> dict:
    """Least-squares coefficients of latents on span{target, noise} and the residual's norm.

    latents: [T, S, ...] intermediate latents of S trajectories at T noise levels; target: [S, ...]
    the training image x* each trajectory ends on; noise: [S, ...] its unit initial noise n.
    Returns {"target_coef" a: [T, S], "noise_coef" b: [T, S], "residual_norm" |r|: [T, S]}
    (solved by the 2 x 2 normal equations per trajectory).
    """
    latents, target, noise = _flat(latents, 2), _flat(target, 1), _flat(noise, 1)
    require(latents.ndim == 3 and target.shape == noise.shape == latents.shape[1:], "latents, target, noise shapes",
            (latents.shape, target.shape, noise.shape), "[T, S, ...], [S, ...], [S, ...] with matching S and ...")
    tt, nn, tn = (jnp.sum(u * v, axis=-1) for u, v in ((target, target), (noise, noise), (target, noise)))
    det = tt * nn - tn * tn
    require(bool(np.all(np.asarray(det) > 1e-6 * np.asarray(tt * nn))), "target, noise", "collinear pair",
            "target and noise directions that span a plane (not parallel, not zero)")
    px, pn = jnp.sum(latents * target, axis=-1), jnp.sum(latents * noise, axis=-1)
    a = (nn * px - tn * pn) / det
    b = (tt * pn - tn * px) / det
    residual = latents - a[..., None] * target - b[..., None] * noise
    return {"target_coef": a, "noise_coef": b, "residual_norm": jnp.linalg.norm(residual, axis=-1)}


def ideal_schedule(sigmas, sigma_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of the ideal memorizer, a = 1 - sigma / sigma_max and b = sigma, each [T].

    sigmas: the levels [T] of the latents (>= 0); sigma_max: the starting level (default sigmas[0]).
    """
    sigmas = np.asarray(sigmas, np.float64)
    sigma_max = float(sigmas[0]) if sigma_max is None else sigma_max
    require(sigmas.ndim == 1 and bool(np.all((sigmas >= 0) & (sigmas <= sigma_max))) and sigma_max > 0, "sigmas",
            sigmas, "a 1-D grid of levels in [0, sigma_max] with sigma_max > 0")
    return 1.0 - sigmas / sigma_max, sigmas


def schedule_deviation(decomposition: dict, sigmas, sigma_max: float | None = None) -> dict:
    """Deviation from the ideal memorizer, [T, S] each: positive means memorization-like.

    "target_excess" = a - (1 - sigma / sigma_max) (x* content ahead of schedule), "noise_deficit"
    = sigma - b (noise lost faster than the schedule), from `decompose` on the levels sigmas [T].
    """
    ideal_a, ideal_b = ideal_schedule(sigmas, sigma_max)
    return {"target_excess": decomposition["target_coef"] - jnp.asarray(ideal_a, jnp.float32)[:, None],
            "noise_deficit": jnp.asarray(ideal_b, jnp.float32)[:, None] - decomposition["noise_coef"]}


def overestimation(clean_estimates, target, data_mean) -> jnp.ndarray:
    """c = <D - mu, x* - mu> / |x* - mu|^2 for clean estimates D [T, S, ...]; returns [T, S].

    target: [S, ...] the training images x*; data_mean: [...] the training-set mean mu.
    """
    estimates, target = _flat(clean_estimates, 2), _flat(target, 1)
    mean = jnp.asarray(data_mean, jnp.float32).reshape(-1)
    require(estimates.ndim == 3 and estimates.shape[1:] == target.shape and mean.shape == target.shape[1:],
            "clean_estimates, target, data_mean shapes", (estimates.shape, target.shape, mean.shape),
            "[T, S, ...], [S, ...], [...] with matching S and ...")
    offset = target - mean
    return jnp.sum((estimates - mean) * offset, axis=-1) / jnp.sum(offset * offset, axis=-1)


def guided_denoiser(conditional: Callable, unconditional: Callable | None, scale: float) -> Callable:
    """Classifier-free guidance D_g(x, sigma) = D(x, c) + (g - 1) (D(x, c) - D(x, none)).

    conditional, unconditional: denoise(x, sigma) -> x0_hat with the class label bound in or
    dropped (the branch a model trained with label dropout learns). scale g: finite, g = 1 is
    the conditional denoiser alone and needs no unconditional branch.
    """
    require(bool(np.isfinite(scale)), "guidance scale g", scale, "a finite number (1 = no guidance)")
    if scale == 1:
        return conditional
    if unconditional is None:
        raise ValueError(f"guidance scale g = {scale!r} needs an unconditional branch D(x, none): pass the "
                         "denoiser with the label dropped (a model trained with label dropout), or use g = 1")

    def denoise(x, sigma):
        cond = conditional(x, sigma)
        return cond + (scale - 1.0) * (cond - unconditional(x, sigma))

    return denoise

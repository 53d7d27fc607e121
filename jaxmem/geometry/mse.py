"""Denoising error curves over the noise grid, for any denoiser apply(params, x, sigma).

    MSE(sigma) = E |D(x + sigma z, sigma) - x|^2        (sum over dimensions; docs/formulas.md)

on training points and on held-out points (the generalization gap is their difference), and the
distance between two denoisers on the same noisy inputs, E |D_a(y, sigma) - D_b(y, sigma)|^2
(e.g. Wiener versus the empirical optimum, which agree at large sigma).
Levels run through lax.map inside one jit (compiled loop; one level's temporaries at a time).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.denoisers.empirical import check_sigma
from jaxmem.geometry.queries import map_query_chunks

Denoiser = Callable  # apply(params, x [B, d], sigma [B]) -> [B, d]


def per_level(measure: Callable, clean, noise, sigmas) -> jax.Array:
    """measure(y [Q, ...], sigma [Q]) -> [Q, ...] at each level of y = clean + s noise (one noise
    draw shared by the levels); returns [Q, L, ...]."""
    def level(sigma):
        return measure(clean + sigma * noise, jnp.full(clean.shape[:1], sigma))

    return jnp.moveaxis(jax.lax.map(level, sigmas.astype(jnp.float32)), 0, 1)


@functools.partial(jax.jit, static_argnums=0)
def squared_error_kernel(denoise: Denoiser, clean, noise, params, sigmas) -> jax.Array:
    """|D(x_q + s z_q, s) - x_q|^2 for clean, noise [Q, d] and sigmas [L]; returns [Q, L]."""
    def error(y, sigma):
        return jnp.sum(jnp.square(denoise(params, y, sigma) - clean), axis=-1)

    return per_level(error, clean, noise, sigmas)


@functools.partial(jax.jit, static_argnums=(0, 1))
def denoiser_distance_kernel(denoise_a: Denoiser, denoise_b: Denoiser, clean, noise, params, sigmas) -> jax.Array:
    """|D_a(y, s) - D_b(y, s)|^2 with y = x_q + s z_q and params = (params_a, params_b); [Q, L]."""
    def distance(y, sigma):
        return jnp.sum(jnp.square(denoise_a(params[0], y, sigma) - denoise_b(params[1], y, sigma)), axis=-1)

    return per_level(distance, clean, noise, sigmas)


def mse_curve(denoise: Denoiser, params, clean: np.ndarray, noise: np.ndarray, sigmas: np.ndarray,
              chunk_size: int = 256, mesh=None) -> np.ndarray:
    """Per-query squared denoising error |D(x_q + s z_q, s) - x_q|^2, [Q, L] (sum over d).

    clean, noise: [Q, d] float32 (z shared by all levels); sigmas [L] > 0. Queries sharded.
    """
    check_sigma(sigmas, "sigmas")
    return map_query_chunks(functools.partial(squared_error_kernel, denoise),
                            (np.asarray(clean, np.float32), np.asarray(noise, np.float32)),
                            (params, np.asarray(sigmas, np.float32)), chunk_size, mesh, name="mse")


def denoiser_distance_curve(denoise_a: Denoiser, params_a, denoise_b: Denoiser, params_b, clean: np.ndarray,
                            noise: np.ndarray, sigmas: np.ndarray, chunk_size: int = 256, mesh=None) -> np.ndarray:
    """Per-query |D_a(y, s) - D_b(y, s)|^2 with y = x_q + s z_q, [Q, L]."""
    check_sigma(sigmas, "sigmas")
    return map_query_chunks(functools.partial(denoiser_distance_kernel, denoise_a, denoise_b),
                            (np.asarray(clean, np.float32), np.asarray(noise, np.float32)),
                            ((params_a, params_b), np.asarray(sigmas, np.float32)), chunk_size, mesh,
                            name="denoiser distance")

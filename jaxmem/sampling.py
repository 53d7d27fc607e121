"""Samplers: deterministic integrators of the reverse process for any denoiser.

A sampler takes the denoiser as a function of (x, noise level) and the starting noise, so one
sampler serves every model family; vmapping it over model parameters samples a whole grid.

DDIM (VP, eta = 0; Song et al. 2021, eq. 12 with sigma = 0) on a time grid
t_K > ... > t_0 of the VP process x_t = alpha_t x0 + sigma_t eps:
    x0_hat = (x - sigma_{t_k} eps_hat) / alpha_{t_k}
    x      <- alpha_{t_{k-1}} x0_hat + sigma_{t_{k-1}} eps_hat,
starting from x ~ N(0, I) at t_K and returning the clean estimate x0_hat at t_0.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import require, require_choice
from jaxmem.noise import vp_alpha, vp_sigma

PREDICTIONS = ("eps", "x0")


def ddim_sample(denoiser: Callable, x_start, times, prediction: str = "eps"):
    """Deterministic DDIM from x_start [S, d] at times[-1] down to times[0]; returns x0 [S, d].

    denoiser(x [S, d], t scalar) -> [S, d]: the eps-prediction (prediction="eps") or the
    clean estimate (prediction="x0"). times: increasing VP times in (0, 1), shape [K + 1];
    the sampler makes K DDIM steps (K + 1 denoiser calls, the last one gives x0).
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
    return predict(x, descending[-1])[0]

"""EDM preconditioning, noise-level sampling and the weighted denoising loss (Karras et al. 2022).

With sigma_data = sd (0.5 for pixels in [-1, 1]) and noise level s (EDM Table 1):

    D(x; s) = c_skip(s) x + c_out(s) F(c_in(s) x, c_noise(s))
    c_skip = sd^2 / (s^2 + sd^2),   c_out = s sd / sqrt(s^2 + sd^2),
    c_in   = 1 / sqrt(s^2 + sd^2),  c_noise = ln(s) / 4.

Training draws ln(s) ~ N(P_mean, P_std^2) (P_mean = -1.2, P_std = 1.2), noises a clean batch
y = x + s eps and minimises  E[ lambda(s) w(s) |D(y; s) - x|^2 ]  with the EDM weighting
lambda(s) = (s^2 + sd^2) / (s sd)^2 = 1 / c_out(s)^2 (so the raw network sees a unit-variance
target) and an optional extra weight w(s) (e.g. `window_weight`, to undertrain a sigma window).
The loss is summed over pixels and averaged over the batch.

Everything here is a pure function of arrays; `precondition` turns any raw network apply
`net_apply(params, x_in, c_noise, labels, **kwargs)` into a denoiser
`denoise(params, x, sigma, labels=None, **kwargs) -> x0_hat` (every image denoiser's calling convention: docs/formulas.md).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

SIGMA_DATA = 0.5
P_MEAN = -1.2
P_STD = 1.2


def c_skip(sigma, sigma_data: float = SIGMA_DATA):
    """sd^2 / (s^2 + sd^2)."""
    return sigma_data**2 / (sigma**2 + sigma_data**2)


def c_out(sigma, sigma_data: float = SIGMA_DATA):
    """s sd / sqrt(s^2 + sd^2)."""
    return sigma * sigma_data / jnp.sqrt(sigma**2 + sigma_data**2)


def c_in(sigma, sigma_data: float = SIGMA_DATA):
    """1 / sqrt(s^2 + sd^2)."""
    return 1.0 / jnp.sqrt(sigma**2 + sigma_data**2)


def c_noise(sigma):
    """ln(s) / 4."""
    return jnp.log(sigma) / 4.0


def edm_weight(sigma, sigma_data: float = SIGMA_DATA):
    """lambda(s) = (s^2 + sd^2) / (s sd)^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def precondition(net_apply: Callable, sigma_data: float = SIGMA_DATA) -> Callable:
    """Wraps a raw network into the EDM denoiser D(x; sigma) = c_skip x + c_out F(c_in x, c_noise).

    net_apply(params, x_in [B, ...], c_noise [B], labels, **kwargs) -> F [B, ...].
    Returns denoise(params, x [B, ...], sigma (scalar or [B], > 0), labels=None, **kwargs) -> [B, ...]
    (float32).
    """

    def denoise(params, x, sigma, labels=None, **kwargs):
        x = x.astype(jnp.float32)
        sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x.shape[0],))
        per_sample = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
        raw = net_apply(params, c_in(per_sample, sigma_data) * x, c_noise(sigma), labels, **kwargs)
        return c_skip(per_sample, sigma_data) * x + c_out(per_sample, sigma_data) * raw.astype(jnp.float32)

    return denoise


def sample_sigmas(rng, batch: int, p_mean: float = P_MEAN, p_std: float = P_STD) -> jax.Array:
    """Training noise levels s = exp(P_mean + P_std n), n ~ N(0, 1); shape [batch]."""
    return jnp.exp(p_mean + p_std * jax.random.normal(rng, (batch,)))


def window_weight(sigma_lo: float, sigma_hi: float, inside: float) -> Callable:
    """w(s) = inside for sigma_lo <= s <= sigma_hi, else 1 (a per-sigma loss-weight function)."""

    def weight(sigma):
        return jnp.where((sigma >= sigma_lo) & (sigma <= sigma_hi), inside, 1.0)

    return weight


def make_loss(denoise: Callable, sigma_data: float = SIGMA_DATA, p_mean: float = P_MEAN,
              p_std: float = P_STD, sigma_weight: Callable | None = None) -> Callable:
    """EDM training loss for jaxmem.train.loop.make_train_step.

    denoise: from `precondition`; called as denoise(params, y, s, labels, train=True, rng=...).
    batch: {"images": [B, H, W, C] in [-1, 1], "labels": [B, label_dim] one-hot (optional)}.
    Returns loss_fn(params, batch, rng) -> (mean_b lambda(s_b) w(s_b) sum_pixels (D - x)^2,
    {"sigma_mean": mean s}); randomness: sigmas, noise and dropout from `rng`.
    """

    def loss_fn(params, batch, rng):
        images = batch["images"].astype(jnp.float32)
        sigma_rng, noise_rng, net_rng = jax.random.split(rng, 3)
        sigma = sample_sigmas(sigma_rng, images.shape[0], p_mean, p_std)
        noisy = images + sigma[:, None, None, None] * jax.random.normal(noise_rng, images.shape)
        denoised = denoise(params, noisy, sigma, batch.get("labels"), train=True, rng=net_rng)
        weight = edm_weight(sigma, sigma_data)
        if sigma_weight is not None:
            weight = weight * sigma_weight(sigma)
        per_sample = weight * jnp.sum(jnp.square(denoised - images), axis=(1, 2, 3))
        return jnp.mean(per_sample), {"sigma_mean": jnp.mean(sigma)}

    return loss_fn


def flax_net_apply(network) -> Callable:
    """net_apply for a flax module with __call__(x, c_noise, labels, train) (e.g. SongUNet).

    The returned net_apply(params, x_in, c_noise, labels, train=False, rng=None) feeds `rng` to
    the 'dropout' stream (dropout and label dropout) when train is True.
    """

    def net_apply(params, x_in, noise_cond, labels, train: bool = False, rng=None):
        rngs = {"dropout": rng} if train else None
        return network.apply({"params": params}, x_in, noise_cond, labels, train=train, rngs=rngs)

    return net_apply

"""The linear Gaussian (Wiener) denoiser: the posterior mean if the data were N(mu, Sigma).

    D_sigma(y) = mu + Sigma (Sigma + sigma^2 I)^-1 (y - mu)                     (docs/formulas.md)

With Sigma = V diag(lambda) V^T from the SVD of the centred data X - mu = A S V^T
(lambda = S^2 / N, the covariance of the empirical distribution, rank r <= min(N, d)), the gain
is V diag(lambda / (lambda + sigma^2)) V^T: no d x d inverse, and it works when N < d (the gain
is zero off the data span). Using the 1/N covariance makes this the large-sigma limit of the
empirical optimal denoiser built on the same points.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxmem.validation import require
from jaxmem.denoisers.empirical import HIGHEST, check_sigma, per_example_sigma


def make_params(data: np.ndarray) -> dict:
    """Mean and covariance eigen-decomposition of data [N, ...] (flattened to d).

    Returns {"mean": [d], "basis": [r, d] orthonormal rows, "variances": [r]} (float32,
    r = min(N, d); variances in squared pixel units).
    """
    data = np.asarray(data, np.float64)
    require(data.ndim >= 2 and data.shape[0] > 0, "data.shape", tuple(data.shape),
            "[N, ...] with N >= 1 (the data set is empty)")
    flat = data.reshape(data.shape[0], -1)
    require(bool(np.all(np.isfinite(flat))), "data", "non-finite values", "finite values only")
    mean = flat.mean(axis=0)
    _, singular, basis = np.linalg.svd(flat - mean, full_matrices=False)
    return {"mean": jnp.asarray(mean, jnp.float32), "basis": jnp.asarray(basis, jnp.float32),
            "variances": jnp.asarray(singular**2 / flat.shape[0], jnp.float32)}


def apply(params: dict, x, sigma):
    """Wiener estimate of the clean input; x: [B, ...] flattening to d, sigma: scalar or B values > 0.

    Returns an array of x's shape.
    """
    d = params["mean"].shape[0]
    require(x.ndim >= 2 and int(np.prod(x.shape[1:])) == d, "x.shape", tuple(x.shape),
            f"[B, ...] with trailing dims flattening to d = {d} (the data's dimension)")
    check_sigma(sigma)
    flat = x.reshape(x.shape[0], d).astype(jnp.float32) - params["mean"]
    variance = jnp.square(per_example_sigma(sigma, x.shape[0]))[:, None]
    gain = params["variances"][None, :] / (params["variances"][None, :] + variance)
    coords = jnp.matmul(flat, params["basis"].T, precision=HIGHEST)
    shrunk = jnp.matmul(coords * gain, params["basis"], precision=HIGHEST)
    return (params["mean"] + shrunk).reshape(x.shape).astype(x.dtype)

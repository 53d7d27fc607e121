"""Gradient variance of the laboratory's loss estimators at fixed parameters
(launch/gmm_estimator_variance.py; results/gmm_estimators/variance.md).

At the anchor's data set (d = 50, K = 12, N = 200, seed 0) and M = 150 means set to the first
150 training points, for two shared variances (the memorising start s^2 = 1e-6 and s^2 = 0.1),
the gradient of gmm_grid.make_gmm_loss (uniform weights on the VP time grid) is drawn under
REPEATS independent keys per estimator and draw count; the row reports the summed per-parameter
variance of those gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import noise
from jaxmem.validation import require
from jaxmem.data.gmm import isotropic_gmm
from jaxmem.train import gmm_grid

DIM, COMPONENTS, TRAIN_SIZE, CAPACITY = 50, 12, 200, 150
REPEATS = 64  # gradient draws per estimator and draw count
DATA_SEED, PARAMS_KEY, DRAWS_KEY = 0, 0, 1
VARIANCES = [("init (s^2 = 1e-6)", 1e-6), ("s^2 = 0.1", 0.1)]


def measure(estimators: Sequence[str], draws: Sequence[int]) -> list[dict]:
    """Rows {params, estimator, noise_draws, grad_variance, variance_x_draws,
    variance_reduction_vs_iid} per shared variance, estimator and draw count; the reduction is
    the iid estimator's variance over this one's at the same draws (`estimators` must hold
    'iid')."""
    require("iid" in estimators, "estimators", list(estimators), "a list that holds 'iid' (the reference)")
    times = noise.vp_times()
    data = isotropic_gmm(DIM, COMPONENTS, TRAIN_SIZE, 1, seed=DATA_SEED)
    rows = []
    for label, variance in VARIANCES:
        params = {"means": jnp.asarray(data.train[None, :CAPACITY]),
                  "log_var": jnp.full((1,), np.log(variance), jnp.float32)}
        batch = {"train": jnp.asarray(data.train), "point_mask": jnp.ones(TRAIN_SIZE),
                 "component_mask": jnp.ones((1, CAPACITY), bool), "step": jnp.int32(0),
                 "set_key": jax.random.PRNGKey(PARAMS_KEY)}
        for estimator in estimators:
            for count in draws:
                loss_fn = gmm_grid.make_gmm_loss(times, np.ones_like(times), count, estimator=estimator)
                grad = jax.jit(jax.vmap(lambda k: jax.grad(lambda p: loss_fn(p, batch, k)[0])(params)))
                g = grad(jax.random.split(jax.random.PRNGKey(DRAWS_KEY), REPEATS))
                flat = np.concatenate([np.asarray(g["means"]).reshape(REPEATS, -1),
                                       np.asarray(g["log_var"]).reshape(REPEATS, -1)], 1)
                total = float(flat.var(axis=0, ddof=1).sum())
                rows.append(dict(params=label, estimator=estimator, noise_draws=count, grad_variance=total,
                                 variance_x_draws=total * count))
    for row in rows:
        base = next(q for q in rows if q["params"] == row["params"] and q["estimator"] == "iid"
                    and q["noise_draws"] == row["noise_draws"])
        row["variance_reduction_vs_iid"] = base["grad_variance"] / row["grad_variance"]
    return rows

"""Gradient variance per estimator at fixed parameters (anchor: d=50, K=12, N=200, M=150)."""
import json, sys, time, jax, jax.numpy as jnp, numpy as np
from jaxmem import noise
from jaxmem.data.gmm import isotropic_gmm
from jaxmem.train import gmm_grid
times = noise.vp_times()
data = isotropic_gmm(50, 12, 200, 1, seed=0)
M = 150
ESTS = sys.argv[2].split(',')
DRAWS = [int(x) for x in sys.argv[3].split(',')]
rows = []
for label, variance in [("init (s^2 = 1e-6)", 1e-6), ("s^2 = 0.1", 0.1)]:
    params = {"means": jnp.asarray(data.train[None, :M]), "log_var": jnp.full((1,), np.log(variance), jnp.float32)}
    batch = {"train": jnp.asarray(data.train), "point_mask": jnp.ones(200), "component_mask": jnp.ones((1, M), bool),
             "step": jnp.int32(0), "set_key": jax.random.PRNGKey(0)}
    for estimator in ESTS:
        for draws in DRAWS:
            loss_fn = gmm_grid.make_gmm_loss(times, np.ones_like(times), draws, estimator=estimator)
            grad = jax.jit(jax.vmap(lambda k: jax.grad(lambda p: loss_fn(p, batch, k)[0])(params)))
            g = grad(jax.random.split(jax.random.PRNGKey(1), 64))
            flat = np.concatenate([np.asarray(g["means"]).reshape(64, -1), np.asarray(g["log_var"]).reshape(64, -1)], 1)
            total_var = float(flat.var(axis=0, ddof=1).sum())
            rows.append(dict(params=label, estimator=estimator, noise_draws=draws, grad_variance=total_var,
                             variance_x_draws=total_var * draws))
            print(rows[-1], flush=True)
for r in rows:
    base = [q for q in rows if q["params"] == r["params"] and q["estimator"] == "iid" and q["noise_draws"] == r["noise_draws"]][0]
    r["variance_reduction_vs_iid"] = base["grad_variance"] / r["grad_variance"]
json.dump(rows, open(sys.argv[1], "w"), indent=1)

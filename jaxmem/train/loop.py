"""The one training step of the project: optax update, EMA, fold_in randomness, NaN guard.

`make_train_step(loss_fn, optimizer, ema_decay)` returns a pure `step(state, batch) ->
(state, metrics)` that can be jit-compiled, vmapped over models (the GMM grid trainer) or
jit-compiled with sharded batches (data-parallel U-Net training). The randomness of step k is
`fold_in(state.rng, k)`, so a resumed run draws exactly what an uninterrupted one draws.

A step whose loss or gradients hold NaN/inf is skipped: params, optimizer state and EMA
are kept, `skipped` counts it and `step` still advances (so the next step draws fresh
randomness).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """params, opt_state, ema_params: pytrees; step, skipped: int32 scalars; rng: a PRNG key."""

    params: object
    opt_state: object
    ema_params: object
    step: jax.Array
    rng: jax.Array
    skipped: jax.Array


def init_state(params, optimizer: optax.GradientTransformation, rng) -> TrainState:
    """A fresh state at step 0 with EMA = params."""
    return TrainState(params=params, opt_state=optimizer.init(params), ema_params=params,
                      step=jnp.zeros((), jnp.int32), rng=rng, skipped=jnp.zeros((), jnp.int32))


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation,
                    ema_decay: float | Callable = 0.0) -> Callable:
    """Builds step(state, batch) -> (state, metrics).

    loss_fn(params, batch, rng) -> (scalar loss, dict of scalar metrics).
    ema_decay: a float in [0, 1) or a function of the step (for ramped EMA schedules);
    ema <- decay * ema + (1 - decay) * params after the update.
    metrics: the loss_fn metrics plus "loss", "grad_norm" and "finite" (1.0 / 0.0).
    """

    def step(state: TrainState, batch) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
        finite = jnp.isfinite(loss) & _all_finite(grads)

        def update(_):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            decay = ema_decay(state.step) if callable(ema_decay) else ema_decay
            ema_params = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p,
                                                state.ema_params, params)
            return params, opt_state, ema_params

        def skip(_):
            return state.params, state.opt_state, state.ema_params

        # lax.cond, not a tree-wide jnp.where: compiles ~3x faster for a U-Net (hundreds of
        # leaves) and does no update work on a skipped step; under vmap it becomes a select.
        params, opt_state, ema_params = jax.lax.cond(finite, update, skip, None)
        new_state = state.replace(params=params, opt_state=opt_state, ema_params=ema_params,
                                  step=state.step + 1,
                                  skipped=state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32))
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                       finite=finite.astype(jnp.float32))
        return new_state, metrics

    return step

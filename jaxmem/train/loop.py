"""The one training step of the project: optax update, EMA, fold_in randomness, NaN guard.

`make_train_step(loss_fn, optimizer, ema_decay)` returns a pure `step(state, batch) ->
(state, metrics)` that can be jit-compiled, vmapped over models (the GMM grid trainer) or
jit-compiled with sharded batches (data-parallel U-Net training). The randomness of step k is
`fold_in(state.rng, k)`, so a resumed run draws exactly what an uninterrupted one draws.

A step whose loss or gradients hold NaN/inf is skipped: params, optimizer state and EMA
are kept, `skipped` counts it and `step` still advances (so the next step draws fresh
randomness). Power-function EMAs (PowerEmaState, jaxmem.train.posthoc_ema) average the
parameters after every step, a skipped one too (its parameters are the previous step's), so
their averaging profiles stay exact in steps.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxmem.train.posthoc_ema import power_ema_decay


@flax.struct.dataclass
class TrainState:
    """params, opt_state, ema_params: pytrees; step, skipped: int32 scalars; rng: a PRNG key."""

    params: object
    opt_state: object
    ema_params: object
    step: jax.Array
    rng: jax.Array
    skipped: jax.Array


@flax.struct.dataclass
class PowerEmaState(TrainState):
    """TrainState plus power_ema: a tuple of parameter pytrees, the power-function EMAs (one per
    exponent given to make_train_step, in that order)."""

    power_ema: tuple


def init_state(params, optimizer: optax.GradientTransformation, rng, num_power_emas: int = 0) -> TrainState:
    """A fresh state at step 0 with EMA = params (a PowerEmaState with num_power_emas copies of
    params as its power EMAs when num_power_emas > 0; step 1 overwrites them)."""
    fields = dict(params=params, opt_state=optimizer.init(params), ema_params=params,
                  step=jnp.zeros((), jnp.int32), rng=rng, skipped=jnp.zeros((), jnp.int32))
    if num_power_emas:
        return PowerEmaState(**fields, power_ema=(params,) * num_power_emas)
    return TrainState(**fields)


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation,
                    ema_decay: float | Callable = 0.0, power_gammas: tuple[float, ...] = ()) -> Callable:
    """Builds step(state, batch) -> (state, metrics).

    loss_fn(params, batch, rng) -> (scalar loss, dict of scalar metrics).
    ema_decay: a float in [0, 1) or a function of the step (for ramped EMA schedules);
    ema <- decay * ema + (1 - decay) * params after the update.
    power_gammas: exponents of the power EMAs of a PowerEmaState (state.power_ema[i] has
    power_gammas[i]); after step t = state.step + 1, avg <- beta(t) avg + (1 - beta(t)) params
    with beta(t) = (1 - 1/t)^(gamma + 1).
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
        if power_gammas:
            t = state.step + 1
            new_state = new_state.replace(power_ema=tuple(
                jax.tree_util.tree_map(lambda a, p, b=power_ema_decay(t, g): b * a + (1.0 - b) * p, average, params)
                for g, average in zip(power_gammas, state.power_ema, strict=True)))
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                       finite=finite.astype(jnp.float32))
        return new_state, metrics

    return step

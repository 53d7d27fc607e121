"""The grid trainer: one jit-compiled program trains a whole grid of GMM denoisers at once.

A grid is S training sets of one data dimension d, each with C member models (the
capacities trained on that set). Each set has its own training points (padded to the largest
N with `point_mask`) and its own seed; each member has its own components (padded to the
largest M with `component_mask`; a masked component has softmax weight exactly 0, so it
receives a zero gradient and Adam leaves it where it is) and its own parameters.

The members of a set share the noise draws of every step (common random numbers): the noise
and the noisy points x_t are drawn once per set and step, not once per model, and the members'
fused losses run one after another over them (lax.map: each member's [P, M] logits stay
small). The members' losses are summed into the set's loss: their parameters are disjoint, so each
member receives exactly its own gradient, and Adam (elementwise) updates each member as if it
were trained alone. The non-finite guard of jaxmem.train.loop acts per set.

The step of jaxmem.train.loop is vmapped over the set axis, `lax.scan` runs a chunk of steps
inside the compiled program, and the set axis is sharded over all devices (NamedSharding on a
1-D mesh). Between chunks the grid state is checkpointed (jaxmem.train.checkpoint: the last two
chunks kept, an unreadable one moved aside for the one before), so a killed run resumes where
the last readable chunk ended and ends with the same parameters.

Loss (the paper's, per model): eps-prediction MSE summed over dimensions,
    L = mean_{i, r} lambda(t_ir) |eps_hat(alpha x_i + sigma eps_ir, t_ir) - eps_ir|^2,
over the N training points i (full batch) and R noise draws r. The draws of point i come from
fold_in(step key, i), so they do not depend on how the training set is padded. Estimators of
the expectation over (t, eps) (all unbiased; `noise_draws` is R):
  iid                    t_ir uniform on the time grid, eps_ir ~ N(0, I)
  iid_shared_t           one t_i uniform on the time grid per point and step, shared by the
                         point's R draws eps_ir ~ N(0, I) (the authors' code)
  stratified             systematic times t_ir = grid[floor(T (u_i + r) / R)], u_i ~ U[0, 1):
                         one draw in each of R equal slices of the grid, so a point sees every
                         grid time R/T times per step when T divides R (each once for R = T) and
                         R evenly spread times otherwise; eps i.i.d. Unbiased for the mean over r
                         (draw r is uniform on its slice)
  antithetic             draws in pairs (t, eps), (t, -eps) (R even)
  stratified_antithetic  both: the R/2 pairs' times are systematic over the grid
The loss and its gradient are the fused jaxmem.denoisers.gmm.weighted_eps_loss (matmul-form
distances, hand-written backward, points in cache-sized blocks).

Optimizers (`make_optimizer`, training.optimizer):
  jaxmem  the trainable s^2 is `log_var` = log s^2; optax.adam(adam_schedule, b2=adam_b2)
  paper   the authors' code: the trainable parameter is the standard deviation `std` = s (the
          model sees s^2 only); optax.chain(clip_by_global_norm(1e9), adam(adam_schedule, 0.9,
          adam_b2, 1e-8), ema(0.99, debias=True)): the ema smooths the *updates* (extra
          momentum), it is not a parameter EMA. The clip acts on a training set's gradient (its
          members' together); at 1e9 it never acts, as in the authors' code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmem import parallel
from jaxmem.denoisers import gmm as gmm_denoiser
from jaxmem.noise import vp_alpha, vp_sigma
from jaxmem.progress import Progress
from jaxmem.train.checkpoint import Checkpointer
from jaxmem.train.loop import TrainState, init_state, make_train_step

ESTIMATORS = ("iid", "stratified", "antithetic", "stratified_antithetic", "iid_shared_t")
OPTIMIZERS = ("jaxmem", "paper")
PAPER_CLIP_NORM = 1e9       # the authors' clip_by_global_norm threshold (never reached)
PAPER_UPDATE_EMA = 0.99     # the authors' optax.ema decay on the updates (debiased)
PAPER_ADAM_EPS = 1e-8
CHECKPOINTS_KEPT = 2  # the latest chunk and the one before (the fallback when the latest is unreadable)


def adam_schedule(steps: int, peak_lr: float = 1e-3, final_lr: float = 1e-6,
                  warmup_fraction: float = 0.1) -> optax.Schedule:
    """Linear warm-up from 0 to `peak_lr` over warmup_fraction * steps, then linear decay to final_lr."""
    warmup = max(1, int(round(warmup_fraction * steps)))
    decay = max(1, steps - warmup)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak_lr, warmup), optax.linear_schedule(peak_lr, final_lr, decay)],
        boundaries=[warmup])


def make_optimizer(name: str, steps: int, peak_lr: float = 1e-3, final_lr: float = 1e-6,
                   warmup_fraction: float = 0.1, adam_b2: float = 0.999) -> optax.GradientTransformation:
    """The optimizer `name` (one of OPTIMIZERS, see the module docstring) on adam_schedule."""
    _check_optimizer(name)
    schedule = adam_schedule(steps, peak_lr, final_lr, warmup_fraction)
    if name == "jaxmem":
        return optax.adam(schedule, b2=adam_b2)
    return optax.chain(optax.clip_by_global_norm(PAPER_CLIP_NORM),
                       optax.adam(schedule, b1=0.9, b2=adam_b2, eps=PAPER_ADAM_EPS),
                       optax.ema(PAPER_UPDATE_EMA, debias=True))


def variance_parameter(optimizer: str) -> str:
    """The trainable form of s^2 under `optimizer`: 'log_var' (jaxmem) or 'std' (paper)."""
    _check_optimizer(optimizer)
    return "std" if optimizer == "paper" else "log_var"


def _check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is not one of {OPTIMIZERS}")


def estimator_draws_allowed(estimator: str, noise_draws: int) -> bool:
    """Whether `estimator` draws R = noise_draws: R >= 1, even for the antithetic estimators
    (their draws come in pairs)."""
    return noise_draws >= 1 and ("antithetic" not in estimator or noise_draws % 2 == 0)


def draw_point(key, dim: int, noise_draws: int, num_times: int, estimator: str = "iid"):
    """One training point's draws of one step: eps [R, d] float32 and time indices [R] int32.

    key: fold_in(step key, point index), so the draws do not depend on padding or batching;
    see the module docstring for the estimators.
    """
    antithetic = "antithetic" in estimator
    base = noise_draws // 2 if antithetic else noise_draws
    eps = jax.random.normal(jax.random.fold_in(key, 0), (base, dim), jnp.float32)
    if estimator.startswith("stratified"):  # systematic: one draw in each of R equal slices of the grid
        shift = jax.random.uniform(jax.random.fold_in(key, 1), ())
        time_index = jnp.minimum(jnp.floor(num_times * (shift + jnp.arange(base)) / base), num_times - 1)
    elif estimator == "iid_shared_t":  # one time per point and step for all its draws
        time_index = jnp.broadcast_to(jax.random.randint(jax.random.fold_in(key, 1), (), 0, num_times), (base,))
    else:
        time_index = jax.random.randint(jax.random.fold_in(key, 1), (base,), 0, num_times)
    if antithetic:
        eps, time_index = jnp.concatenate([eps, -eps]), jnp.concatenate([time_index, time_index])
    return eps, time_index.astype(jnp.int32)


def minibatch_indices(key, step, num_points, padded: int, batch_size: int):
    """Row indices [B] int32 and validity [B] float32 of step `step`'s minibatch of one training set.

    key: the set's PRNG key; step: int32 scalar; num_points: n real points (traced scalar) among
    `padded` rows. Epoch e = step // ceil(n / B) visits the n real points in the order of a
    permutation drawn from fold_in(key, e), B at a time without replacement (seeded and
    resumable: a function of the step); the epoch's last batch is partly invalid when B does
    not divide n.
    """
    per_epoch = (num_points + batch_size - 1) // batch_size
    epoch, position = step // per_epoch, step % per_epoch
    scores = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, 1 << 20), epoch), (padded,))
    order = jnp.argsort(jnp.where(jnp.arange(padded) < num_points, scores, 2.0))   # real points first
    slots = position * batch_size + jnp.arange(batch_size)
    return order[jnp.minimum(slots, padded - 1)].astype(jnp.int32), (slots < num_points).astype(jnp.float32)


def make_gmm_loss(times, time_weights, noise_draws: int, point_block: int = 0,
                  estimator: str = "iid", batch_size: int = 0) -> Callable:
    """loss_fn(params, batch, rng) -> (loss, metrics) for the C member models of one training set.

    times: [T] VP time grid; time_weights: [T] lambda(t) on the eps-unit loss (ones: the
    paper's unweighted loss); noise_draws: R draws per training point and step; point_block:
    points per block of the fused loss (0 = all at once; same loss and gradient, memory bounded
    by one block's [block, M] logits); estimator: one of ESTIMATORS; batch_size: B > 0
    trains on minibatches of B training points (minibatch_indices; each point keeps the draws
    it would have in full batch, so B = N gives the full-batch loss), 0 = full batch.
    params: {"means": [C, M, d], "log_var" or "std": [C]} (variance_parameter); batch: {"train": [N, d], "point_mask": [N]
    float (1 real, 0 padding), "component_mask": [C, M] bool, "step": the state's step and
    "set_key": its rng (grid_chunk adds both)}.
    loss: the sum of the members' losses (each member's gradient is its own loss's gradient);
    metrics: "model_loss" [C] and "variance" [C] (s^2).
    """
    times = jnp.asarray(times, jnp.float32)
    time_weights = jnp.asarray(time_weights, jnp.float32)
    if estimator not in ESTIMATORS or not estimator_draws_allowed(estimator, noise_draws) or batch_size < 0:
        raise ValueError(f"make_gmm_loss needs an estimator of {ESTIMATORS} with noise_draws >= 1 (even for the "
                         f"antithetic ones) and batch_size >= 0; got {estimator!r}, {noise_draws}, {batch_size}")

    def loss_fn(params, batch, rng):
        train, point_mask = batch["train"], batch["point_mask"]
        num_points, dim = train.shape
        rows = jnp.arange(num_points)
        if batch_size > 0:  # the step's minibatch; its points keep their full-batch draws
            rows, valid = minibatch_indices(batch["set_key"], batch["step"], jnp.sum(point_mask).astype(jnp.int32),
                                            num_points, batch_size)
            train, point_mask = train[rows], point_mask[rows] * valid
        keys = jax.vmap(jax.random.fold_in, (None, 0))(rng, rows)
        eps, time_index = jax.vmap(lambda k: draw_point(k, dim, noise_draws, times.shape[0], estimator))(keys)
        t = times[time_index]                                                       # [N, R]
        x_t = vp_alpha(t)[..., None] * train[:, None, :] + vp_sigma(t)[..., None] * eps
        point_weights = (time_weights[time_index] * point_mask[:, None]) / (jnp.sum(point_mask) * noise_draws)
        flat = (x_t.reshape(-1, dim), t.reshape(-1), eps.reshape(-1, dim), point_weights.reshape(-1))

        def member_loss(member_params, component_mask):
            return gmm_denoiser.weighted_eps_loss(member_params, *flat, component_mask.astype(jnp.float32),
                                                  point_block)

        # lax.map, not vmap: vmapped members batch the products with transposes of every
        # [P, M] array and measured 2x slower on CPU (BENCHMARKS.md, GMM laboratory).
        losses = jax.lax.map(lambda member: member_loss(*member), (params, batch["component_mask"]))
        return jnp.sum(losses), {"model_loss": losses, "variance": gmm_denoiser.variance(params)}

    return loss_fn


def _pad_sets(tree, multiple: int):
    """Pads the leading (set) axis of every leaf to a multiple of the device count."""
    return jax.tree_util.tree_map(lambda x: parallel.pad_to_multiple(np.asarray(x), multiple)[0], tree)


def init_grid(params, rngs, optimizer: optax.GradientTransformation) -> TrainState:
    """Fresh states of S training sets (every leaf with a leading set axis S)."""
    return jax.vmap(lambda p, r: init_state(p, optimizer, r))(params, rngs)


def grid_chunk(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """run_chunk(state, batch, length) -> (state, metrics of the last step): `length` steps of
    the vmapped train step under lax.scan (jit it with `length` static). Each step sees the
    batch plus the state's "step" and "set_key" (the minibatch schedule is a function of them)."""
    grid_step = jax.vmap(make_train_step(loss_fn, optimizer))

    def run_chunk(state, batch, length):
        state, metrics = jax.lax.scan(lambda s, _: grid_step(s, {**batch, "step": s.step, "set_key": s.rng}),
                                      state, None, length=length)
        return state, jax.tree_util.tree_map(lambda m: m[-1], metrics)

    return run_chunk


@dataclasses.dataclass(frozen=True)
class GridProgram:
    """The jitted run_chunk(state, batch, length) (length static, state donated) of a grid on a
    mesh, with the shapes and shardings of its state and batch (set axis split over the mesh)."""

    run_chunk: Callable
    state_shapes: TrainState
    state_sharding: TrainState
    batch_sharding: dict


def grid_program(loss_fn: Callable, optimizer: optax.GradientTransformation, params, batch, rngs,
                 mesh) -> GridProgram:
    """The grid's chunk program on `mesh`. params, batch, rngs: arrays or jax.ShapeDtypeStructs
    (see train_grid) whose set axis is already a multiple of the mesh size."""
    shard = lambda tree: jax.tree_util.tree_map(  # noqa: E731
        lambda x: parallel.sharding_along(mesh, len(np.shape(x))), tree)
    state_shapes = jax.eval_shape(lambda p, r: init_grid(p, r, optimizer), params, rngs)
    state_sharding = shard(state_shapes)
    run_chunk = jax.jit(grid_chunk(loss_fn, optimizer), static_argnums=2, donate_argnums=0,
                        out_shardings=(state_sharding, None))
    return GridProgram(run_chunk, state_shapes, state_sharding, shard(batch))


def train_grid(params, batch, rngs, *, loss_fn: Callable, optimizer: optax.GradientTransformation,
               steps: int, chunk_steps: int, checkpoint_dir: str | None = None, mesh=None,
               on_chunk: Callable[[TrainState, int], None] | None = None, name: str = "grid") -> TrainState:
    """Trains S sets of C models for `steps` steps in one compiled program; returns the final TrainState.

    params, batch: pytrees whose leaves have a leading set axis S (see make_gmm_loss: params
    and component_mask [S, C, ...]); rngs: [S, 2] uint32 PRNG keys, one per set. Every leaf of
    the returned state has the leading axis S.
    checkpoint_dir: orbax checkpoints after each chunk; the latest readable one is resumed.
    mesh: 1-D device mesh (default: all devices); S is padded to a multiple of its size.
    on_chunk(state, step): called after each chunk (logging; tests interrupt runs here).
    """
    num_sets = int(np.asarray(rngs).shape[0])
    mesh = parallel.make_mesh() if mesh is None else mesh
    params, batch, rngs = _pad_sets((params, batch, rngs), mesh.size)
    program = grid_program(loss_fn, optimizer, params, batch, rngs, mesh)
    state_shapes, state_sharding, compiled = program.state_shapes, program.state_sharding, program.run_chunk
    grid_init = lambda p, r: init_grid(p, r, optimizer)  # noqa: E731
    batch = jax.device_put(batch, program.batch_sharding)

    checkpointer, state = None, None
    if checkpoint_dir is not None:
        # Synchronous saves: a grid's state is small next to a chunk's compute, and a failed save
        # (full disk) stops the run at that chunk with one line (async orbax saves report it one
        # chunk later, after tracebacks from their closed event loops).
        checkpointer = Checkpointer(checkpoint_dir, keep=CHECKPOINTS_KEPT, with_position=False, async_save=False)
        abstract = jax.tree_util.tree_map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes, state_sharding)
        restored = checkpointer.restore_latest(abstract, steps)
        state = None if restored is None else restored.state
    if state is None:  # nothing to resume: initialise (skipped on resume)
        state = jax.jit(grid_init, out_shardings=state_sharding)(params, rngs)

    done = int(np.asarray(state.step)[0])
    progress = Progress(name, total=steps, unit="step", start=done)
    try:
        while done < steps:
            length = min(chunk_steps, steps - done)
            state, metrics = compiled(state, batch, length)
            done += length
            if checkpointer is not None:
                checkpointer.save(done, state)
            progress.update(length, loss=float(jnp.mean(metrics["model_loss"][:num_sets])),
                            sets=num_sets)
            if on_chunk is not None:
                on_chunk(state, done)
    finally:
        if checkpointer is not None:
            checkpointer.close()
    return jax.tree_util.tree_map(lambda x: x[:num_sets], state)

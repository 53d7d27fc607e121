"""The grid trainer: one jit-compiled program trains a whole grid of GMM denoisers at once.

A grid is G models that share the data dimension d. Each model g has its own training set
(padded to the largest N with `point_mask`), its own components (padded to the largest M
with `component_mask`; a masked component has softmax weight exactly 0, so it receives a
zero gradient and Adam leaves it where it is), its own initial parameters and its own seed.
The step of jaxmem.train.loop is vmapped over the model axis, `lax.scan` runs a chunk of
steps inside the compiled program, and the model axis is sharded over all devices
(NamedSharding on a 1-D mesh). Between chunks the grid state is checkpointed with orbax, so a
killed run resumes where the last chunk ended and ends with the same parameters.

Loss (the paper's, per model): eps-prediction MSE summed over dimensions,
    L = mean_{i, r} lambda(t_ir) |eps_hat(alpha x_i + sigma eps_ir, t_ir) - eps_ir|^2,
over the N training points i (full batch) and R noise draws r, t_ir uniform on the time grid.
The draws of point i come from fold_in(step key, i), so they do not depend on how the
training set is padded. The loss and its gradient are the fused
jaxmem.denoisers.gmm.weighted_eps_loss (matmul-form distances, hand-written backward).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxmem import parallel
from jaxmem.denoisers import gmm as gmm_denoiser
from jaxmem.noise import vp_alpha, vp_sigma
from jaxmem.progress import Progress
from jaxmem.train.loop import TrainState, init_state, make_train_step


def adam_schedule(steps: int, peak_lr: float = 1e-3, final_lr: float = 1e-6,
                  warmup_fraction: float = 0.1) -> optax.Schedule:
    """Linear warm-up from 0 to `peak_lr` over warmup_fraction * steps, then linear decay to final_lr."""
    warmup = max(1, int(round(warmup_fraction * steps)))
    decay = max(1, steps - warmup)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak_lr, warmup), optax.linear_schedule(peak_lr, final_lr, decay)],
        boundaries=[warmup])


def make_gmm_loss(times, time_weights, noise_draws: int, point_block: int = 0) -> Callable:
    """loss_fn(params, batch, rng) -> (loss, metrics) for one GMM denoiser (full batch).

    times: [T] VP time grid; time_weights: [T] lambda(t) on the eps-unit loss (ones: the
    paper's unweighted loss); noise_draws: R draws per training point and step;
    point_block: when > 0, the N R noisy points are processed in blocks of this many under
    jax.checkpoint (the same loss and gradient, memory bounded by one block's [block, M]
    logits, about a third more compute); 0 processes the whole batch at once.
    batch: {"train": [N, d], "point_mask": [N] float (1 real, 0 padding),
            "component_mask": [M] bool}.
    """
    times = jnp.asarray(times, jnp.float32)
    time_weights = jnp.asarray(time_weights, jnp.float32)

    def draws_for_point(key, dim):
        eps = jax.random.normal(jax.random.fold_in(key, 0), (noise_draws, dim), jnp.float32)
        time_index = jax.random.randint(jax.random.fold_in(key, 1), (noise_draws,), 0, times.shape[0])
        return eps, time_index

    def loss_fn(params, batch, rng):
        train, point_mask = batch["train"], batch["point_mask"]
        num_points, dim = train.shape
        keys = jax.vmap(jax.random.fold_in, (None, 0))(rng, jnp.arange(num_points))
        eps, time_index = jax.vmap(draws_for_point, (0, None))(keys, dim)       # [N,R,d], [N,R]
        t = times[time_index]
        x_t = vp_alpha(t)[..., None] * train[:, None, :] + vp_sigma(t)[..., None] * eps
        point_weights = (time_weights[time_index] * point_mask[:, None]) / (jnp.sum(point_mask) * noise_draws)
        flat = (x_t.reshape(-1, dim), t.reshape(-1), eps.reshape(-1, dim), point_weights.reshape(-1))
        component_mask = batch["component_mask"].astype(jnp.float32)
        if point_block <= 0 or flat[1].shape[0] <= point_block:
            return gmm_denoiser.weighted_eps_loss(params, *flat, component_mask), metrics(params)
        # Whole blocks: pad with zero-weight copies of the last point, then sum rematerialised blocks.
        extra = -flat[1].shape[0] % point_block
        padded = [jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1), mode="edge") for a in flat[:3]]
        padded.append(jnp.pad(flat[3], (0, extra)))
        blocked = [a.reshape((-1, point_block) + a.shape[1:]) for a in padded]
        block_loss = jax.checkpoint(lambda xs: gmm_denoiser.weighted_eps_loss(params, *xs, component_mask))
        return jnp.sum(jax.lax.map(block_loss, blocked)), metrics(params)

    def metrics(params):
        return {"variance": jnp.exp(params["log_var"])}

    return loss_fn


def _pad_models(tree, multiple: int):
    """Pads the leading (model) axis of every leaf to a multiple of the device count."""
    return jax.tree_util.tree_map(lambda x: parallel.pad_to_multiple(np.asarray(x), multiple)[0], tree)


def init_grid(params, rngs, optimizer: optax.GradientTransformation) -> TrainState:
    """Fresh states of G models (every leaf with a leading model axis G)."""
    return jax.vmap(lambda p, r: init_state(p, optimizer, r))(params, rngs)


def grid_chunk(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """run_chunk(state, batch, length) -> (state, metrics of the last step): `length` steps of
    the vmapped train step under lax.scan (jit it with `length` static)."""
    grid_step = jax.vmap(make_train_step(loss_fn, optimizer))

    def run_chunk(state, batch, length):
        state, metrics = jax.lax.scan(lambda s, _: grid_step(s, batch), state, None, length=length)
        return state, jax.tree_util.tree_map(lambda m: m[-1], metrics)

    return run_chunk


def train_grid(params, batch, rngs, *, loss_fn: Callable, optimizer: optax.GradientTransformation,
               steps: int, chunk_steps: int, checkpoint_dir: str | None = None, mesh=None,
               on_chunk: Callable[[TrainState, int], None] | None = None, name: str = "grid") -> TrainState:
    """Trains G models for `steps` steps in one compiled program; returns the final TrainState.

    params, batch: pytrees whose leaves have a leading model axis G (see make_gmm_loss);
    rngs: [G, 2] uint32 PRNG keys. Every leaf of the returned state has the leading axis G.
    checkpoint_dir: orbax checkpoints after each chunk; an existing checkpoint is resumed.
    mesh: 1-D device mesh (default: all devices); G is padded to a multiple of its size.
    on_chunk(state, step): called after each chunk (logging; tests interrupt runs here).
    """
    num_models = int(np.asarray(rngs).shape[0])
    mesh = parallel.make_mesh() if mesh is None else mesh
    params, batch, rngs = _pad_models((params, batch, rngs), mesh.size)
    shard = lambda tree: jax.tree_util.tree_map(  # noqa: E731
        lambda x: parallel.sharding_along(mesh, np.ndim(x)), tree)

    grid_init = lambda p, r: init_grid(p, r, optimizer)  # noqa: E731
    state_shapes = jax.eval_shape(grid_init, params, rngs)
    state_sharding = shard(state_shapes)
    batch_sharding = shard(batch)
    batch = jax.device_put(batch, batch_sharding)

    compiled = jax.jit(grid_chunk(loss_fn, optimizer), static_argnums=2, donate_argnums=0,
                       out_shardings=(state_sharding, None))

    manager, state = None, None
    if checkpoint_dir is not None:
        manager = ocp.CheckpointManager(os.path.abspath(checkpoint_dir),
                                        options=ocp.CheckpointManagerOptions(max_to_keep=1))
        latest = manager.latest_step()
        if latest is not None:
            abstract = jax.tree_util.tree_map(
                lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes, state_sharding)
            state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
    if state is None:  # nothing to resume: initialise (skipped on resume)
        state = jax.jit(grid_init, out_shardings=state_sharding)(params, rngs)

    done = int(np.asarray(state.step)[0])
    progress = Progress(name, total=steps, unit="step", start=done)
    try:
        while done < steps:
            length = min(chunk_steps, steps - done)
            state, metrics = compiled(state, batch, length)
            done += length
            if manager is not None:
                manager.save(done, args=ocp.args.StandardSave(state))
            progress.update(length, loss=float(jnp.mean(metrics["loss"][:num_models])),
                            models=num_models)
            if on_chunk is not None:
                on_chunk(state, done)
    finally:
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    return jax.tree_util.tree_map(lambda x: x[:num_models], state)

"""The sharded data-parallel EDM training loop around `jaxmem.train.loop.make_train_step`.

Sections (big_vision style):
  mesh       a 1-D `data` mesh over all devices of all hosts; the global batch is split along
             it (batch_size must be a multiple of the device count)
  model      SongUNet (unet.py) behind EDM preconditioning and loss (edm.py)
  optimiser  Adam (adam_b1, adam_b2, adam_eps) with a linear learning-rate warm-up measured in images
  EMA        half-life in images with ramp-up (EDM, Karras et al. 2022, training setup):
               half_life = min(H, r * images_seen), beta = 0.5 ** (batch / half_life)
  power EMA  with training.snapshot_every_steps > 0, one power-function EMA per
             training.power_ema_sigma_rels (jaxmem.train.posthoc_ema), saved every that many steps and at the last step
             as a snapshot (workdir/snapshots/<step>) for post-hoc EMA reconstruction
  shapes     jax.eval_shape of the initialiser; parameters, optimiser state and EMA replicated
  step       jax.jit(make_train_step(...)) with NamedSharding in/out shardings, state donated;
             non-finite steps are skipped and counted by the step itself
  resume     orbax checkpoints (checkpoint.py) restored into the abstract sharded state, plus
             the input position; the randomness of step k is fold_in(rng, k), so a resumed run
             reproduces an uninterrupted one
  loop       metrics as JSON lines (loss, grad norm, images/s, ETA, ...) and a progress line;
             SIGTERM (preemption) finishes the current step, saves and returns
Workdir: checkpoints/ (orbax), snapshots/ (orbax, every step kept), metrics.jsonl (a resume drops the
records and snapshots past the restored step: the resumed run writes them again, identically).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxmem import io, parallel, xla_options
from jaxmem.validation import require
from jaxmem.data.images import ImageSet
from jaxmem.data.pipeline import Position, ShuffledBatches
from jaxmem.denoisers import edm, unet
from jaxmem.progress import Progress
from jaxmem.train import posthoc_ema
from jaxmem.train.checkpoint import Checkpointer, agree_any
from jaxmem.train.loop import TrainState, init_state, make_train_step

SNAPSHOT_FOLDER = "snapshots"


@dataclasses.dataclass
class TrainResult:
    """Final state (sharded), input position, whether SIGTERM stopped the run early, the step a
    resume started from (None for a fresh run) and the checkpoints rejected as unreadable."""

    state: TrainState
    position: Position
    preempted: bool
    resumed_from: int | None
    rejected: list


def fetch_replicated(tree):
    """Host (numpy) copy of a pytree of replicated arrays, also when they span several hosts."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), tree)


def ema_decay(batch_size: int, half_life_images: float, rampup_ratio: float | None) -> Callable:
    """EMA decay as a function of the step (images_seen = (step + 1) * batch after the update).

    half_life = min(half_life_images, rampup_ratio * images_seen) (no ramp-up when rampup_ratio
    is None or 0); beta = 0.5 ** (batch / half_life).
    """

    def decay(step):
        images_seen = (step + 1).astype(jnp.float32) * batch_size
        half_life = jnp.float32(half_life_images)
        if rampup_ratio:
            half_life = jnp.minimum(half_life, rampup_ratio * images_seen)
        return 0.5 ** (batch_size / jnp.maximum(half_life, 1e-8))

    return decay


def learning_rate(peak: float, warmup_images: float, batch_size: int) -> Callable:
    """lr(step) = peak * min(1, images after the step / warmup_images) (constant without warm-up)."""

    def schedule(step):
        if not warmup_images:
            return jnp.float32(peak)
        return peak * jnp.minimum(1.0, (step + 1) * batch_size / warmup_images)

    return schedule


def total_steps(training: ml_collections.ConfigDict) -> int:
    """ceil(training.total_images / training.batch_size)."""
    return math.ceil(training.total_images / training.batch_size)


def validate_training_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Checks the training and optim groups against the device count (names the field on error)."""
    training, optim = config.training, config.optim
    require(training.batch_size >= 1 and training.batch_size % num_devices == 0, "training.batch_size",
            training.batch_size, f"a positive multiple of the device count {num_devices} (the global "
            "batch is split evenly over devices and hosts)")
    require(training.total_images >= training.batch_size, "training.total_images", training.total_images,
            f">= training.batch_size ({training.batch_size})")
    require(training.ema_half_life_images > 0, "training.ema_half_life_images",
            training.ema_half_life_images, "images > 0")
    require(training.p_std > 0, "training.p_std", training.p_std, "> 0")
    require(len(training.loss_window) in (0, 2), "training.loss_window", tuple(training.loss_window),
            "() or (sigma_lo, sigma_hi)")
    if training.loss_window:
        lo, hi = training.loss_window
        require(0 <= lo < hi, "training.loss_window", (lo, hi), "0 <= sigma_lo < sigma_hi")
    require(optim.peak_lr > 0, "optim.peak_lr", optim.peak_lr, "> 0")
    require(optim.warmup_images >= 0, "optim.warmup_images", optim.warmup_images, ">= 0")
    require(training.log_every_steps >= 1, "training.log_every_steps", training.log_every_steps, ">= 1")
    require(training.snapshot_every_steps >= 0, "training.snapshot_every_steps", training.snapshot_every_steps,
            "an integer >= 0 (0 = no power EMAs, no snapshots)")
    sigma_rels = tuple(training.power_ema_sigma_rels)
    if training.snapshot_every_steps:
        require(len(sigma_rels) >= 1 and len(set(sigma_rels)) == len(sigma_rels), "training.power_ema_sigma_rels",
                sigma_rels, "one or more distinct relative EMA lengths (EDM2 tracks (0.05, 0.1))")
        for sigma_rel in sigma_rels:
            require(0 < sigma_rel < posthoc_ema.SIGMA_REL_MAX, "training.power_ema_sigma_rels", sigma_rels,
                    f"values in (0, {posthoc_ema.SIGMA_REL_MAX:.4f})")


def make_denoiser(config: ml_collections.ConfigDict) -> tuple[unet.SongUNet, Callable]:
    """(network, denoise(params, x, sigma, labels=None, train=False, rng=None)) of config.model:
    built once per model group, so the training step and the samplers share one network."""
    key = io.config_json(config.model)
    if key not in _DENOISERS:
        network = unet.network_from_config(config.model)
        _DENOISERS[key] = network, edm.precondition(edm.flax_net_apply(network), config.model.sigma_data)
    return _DENOISERS[key]


_DENOISERS: dict[str, tuple[unet.SongUNet, Callable]] = {}


def _optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    optim = config.optim
    return optax.adam(learning_rate(optim.peak_lr, optim.warmup_images, config.training.batch_size),
                      b1=optim.adam_b1, b2=optim.adam_b2, eps=optim.adam_eps)


class _StopOnSigterm:
    """Context manager: SIGTERM sets `requested` instead of killing (main thread only)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint after this step, then stopping")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


# Fields of the training group that change the compiled step (others only steer the loop).
STEP_FIELDS = ("batch_size", "ema_half_life_images", "ema_rampup_ratio", "p_mean", "p_std", "loss_window",
               "loss_window_weight", "power_ema_sigma_rels", "snapshot_every_steps")


def power_gammas(training: ml_collections.ConfigDict) -> tuple[float, ...]:
    """Exponents of the power EMAs the run tracks (none when training.snapshot_every_steps is 0)."""
    if not training.snapshot_every_steps:
        return ()
    return tuple(posthoc_ema.gamma_from_sigma_rel(s) for s in training.power_ema_sigma_rels)


@dataclasses.dataclass(frozen=True)
class Program:
    """The compiled pieces of a run: mesh, jitted init(rng) and step(state, batch), shapes, shardings."""

    mesh: object
    init: Callable
    step: Callable
    state_shapes: TrainState
    state_sharding: TrainState
    batch_sharding: dict


def build_program(config: ml_collections.ConfigDict, data_shape: tuple[int, ...], devices=None) -> Program:
    """The jitted init and train step for `config` on a data mesh over `devices` (default: all).

    Memoized on the fields that define the step (model, optim, STEP_FIELDS, image shape,
    devices; the PROGRAMS_KEPT most recently used), so re-entering `train` in one process (a
    notebook, the tests) compiles once.
    """
    step_fields = {"model": config.model.to_dict(), "optim": config.optim.to_dict(),
                   "training": {k: config.training[k] for k in STEP_FIELDS}}
    devices = tuple(jax.devices() if devices is None else devices)
    key = (json.dumps(step_fields, sort_keys=True), tuple(data_shape), devices)
    program = _PROGRAMS.pop(key, None) or _compile_program(config, tuple(data_shape), devices)
    _PROGRAMS[key] = program  # now the most recently used
    while len(_PROGRAMS) > PROGRAMS_KEPT:
        _PROGRAMS.pop(next(iter(_PROGRAMS)))
    return program


PROGRAMS_KEPT = 4
_PROGRAMS: dict[tuple, Program] = {}  # in order of use, the least recent first


def _compile_program(config: ml_collections.ConfigDict, data_shape: tuple[int, ...], devices: tuple) -> Program:
    """build_program without the memo."""
    training = config.training
    mesh = parallel.make_mesh(devices=devices)
    network, denoise = make_denoiser(config)
    sigma_weight = (edm.window_weight(*training.loss_window, training.loss_window_weight)
                    if training.loss_window else None)
    loss_fn = edm.make_loss(denoise, config.model.sigma_data, training.p_mean, training.p_std, sigma_weight)
    optimizer = _optimizer(config)
    gammas = power_gammas(training)
    step_fn = make_train_step(loss_fn, optimizer, ema_decay(training.batch_size, training.ema_half_life_images,
                                                            training.ema_rampup_ratio), gammas)
    label_dim = config.model.label_dim

    def init(rng) -> TrainState:
        param_rng, state_rng = jax.random.split(rng)
        return init_state(unet.init_params(network, param_rng, data_shape, label_dim), optimizer, state_rng,
                          len(gammas))

    state_shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    state_sharding = jax.tree_util.tree_map(lambda _: parallel.replicated(mesh), state_shapes)
    batch_sharding = {"images": parallel.sharding_along(mesh, 1 + len(data_shape))}
    if label_dim:
        batch_sharding["labels"] = parallel.sharding_along(mesh, 2)
    return Program(
        mesh=mesh,
        init=jax.jit(init, out_shardings=state_sharding, compiler_options=xla_options.initialisation(devices)),
        step=jax.jit(step_fn, in_shardings=(state_sharding, batch_sharding),
                     out_shardings=(state_sharding, parallel.replicated(mesh)), donate_argnums=0,
                     compiler_options=xla_options.convolutions(devices)),
        state_shapes=state_shapes, state_sharding=state_sharding, batch_sharding=batch_sharding)


def train(config: ml_collections.ConfigDict, workdir: str, data: ImageSet, devices=None,
          on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Trains the EDM U-Net of `config` on `data` (resuming from workdir/checkpoints if any).

    config: checked by validate_training_config (and the experiment's validate_config) at the
    door. data: the training ImageSet ([N, H, W, C] in [-1, 1], the network's input shape).
    devices: the devices of the mesh (default: all), over which the batch splits evenly.
    on_step(step, metrics) is called after every step with device metrics (tests use it to
    interrupt runs). Returns a TrainResult; the state stays sharded.
    """
    training = config.training
    batch_size = training.batch_size
    num_devices = len(jax.devices() if devices is None else devices)
    if batch_size % num_devices:
        raise ValueError(f"a batch of {batch_size} images does not split evenly over {num_devices} devices")
    if tuple(data.shape) != unet.input_shape(config.model):
        raise ValueError(f"images of shape (H, W, C) = {tuple(data.shape)} do not fit the network, which takes "
                         f"{unet.input_shape(config.model)}")
    program = build_program(config, data.shape, devices)
    batches = ShuffledBatches(data, batch_size, seed=config.seed, xflip=config.data.xflip,
                              label_dim=config.model.label_dim)

    # Resume or start.
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=training.keep_checkpoints,
                                every_steps=training.checkpoint_every_steps,
                                every_seconds=training.checkpoint_every_seconds,
                                async_save=training.async_checkpoints)
    abstract = jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                      program.state_shapes, program.state_sharding)
    snapshots = (Checkpointer(os.path.join(workdir, SNAPSHOT_FOLDER), keep=None, async_save=training.async_checkpoints,
                              with_position=False) if training.snapshot_every_steps else None)
    snapshot_record = {"sigma_rels": list(training.power_ema_sigma_rels), "gammas": list(power_gammas(training))}
    steps = total_steps(training)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    restored = checkpointer.restore_latest(abstract, steps)
    if restored is None:
        state = program.init(jax.random.PRNGKey(config.seed))
        position, resumed_from = Position(), None
    else:
        state, position, resumed_from = restored.state, Position.from_dict(restored.position), restored.step
    if jax.process_index() == 0:  # records of steps the run now redoes
        io.drop_records_after(metrics_path, resumed_from or 0)
    if snapshots is not None:
        snapshots.drop_after(resumed_from or 0)

    def global_batch(local: dict) -> dict:
        return {k: jax.make_array_from_process_local_data(program.batch_sharding[k], v,
                                                          (batch_size, *v.shape[1:]))
                for k, v in local.items()}

    # Loop.
    step = int(fetch_replicated(state.step))
    config_record = config.to_dict()
    progress = Progress(f"train {io.folder_name(workdir)}", total=steps, unit="step", start=step)
    pending, interval_start, preempted = [], time.perf_counter(), False
    try:
        with _StopOnSigterm() as stop:
            while step < steps:
                local, position = batches.local_batch(position)
                state, metrics = program.step(state, global_batch(local))
                step += 1
                pending.append(metrics)
                if on_step is not None:
                    on_step(step, metrics)
                preempted, time_due = agree_any(stop.requested, checkpointer.time_due())  # one allgather
                if step % training.log_every_steps == 0 or step == steps or preempted:
                    now = time.perf_counter()
                    record = _summarize(fetch_replicated(pending), step, steps, batch_size,
                                        now - interval_start, int(fetch_replicated(state.skipped)))
                    if jax.process_index() == 0:
                        io.append_jsonl(metrics_path, [record])
                    progress.update(len(pending), loss=record["loss"], grad_norm=record["grad_norm"],
                                    img_per_s=record["images_per_s"])
                    pending, interval_start = [], now
                if snapshots is not None and (step % training.snapshot_every_steps == 0 or step == steps):
                    snapshots.save(step, state.power_ema, config=dict(snapshot_record, step=step))
                if step == steps or preempted or checkpointer.due(step, time_due):
                    checkpointer.save(step, state, position.to_dict(), config_record)
                if preempted:
                    logging.warning("stopped at step %d after SIGTERM; rerun the same command to resume", step)
                    break
    finally:
        try:
            checkpointer.close()
        finally:
            if snapshots is not None:
                snapshots.close()
    return TrainResult(state, position, preempted, resumed_from, list(checkpointer.rejected))


@dataclasses.dataclass(frozen=True)
class Snapshots:
    """The power-EMA snapshots of a run: steps [K] (ascending), the tracked sigma_rels and
    exponents (in the order of every snapshot's tuple), and load(step) -> tuple of parameter
    pytrees (host numpy), one per tracked exponent."""

    steps: list[int]
    sigma_rels: tuple[float, ...]
    gammas: tuple[float, ...]
    load: Callable[[int], tuple]


def read_snapshots(config: ml_collections.ConfigDict, workdir: str, data_shape: tuple[int, ...],
                   devices=None) -> Snapshots:
    """The snapshots that train(config, workdir, ...) stored; ConfigError when there are none."""
    folder = os.path.join(workdir, SNAPSHOT_FOLDER)
    require(os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder)), "training snapshots",
            folder, "a folder of power-EMA snapshots: train with training.snapshot_every_steps > 0")
    program = build_program(config, data_shape, devices)
    abstract = jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                      program.state_shapes.power_ema, program.state_sharding.power_ema)
    reader = Checkpointer(folder, keep=None, with_position=False)
    steps = reader.steps()
    _, record = reader.restore(steps[0], abstract)
    gammas = tuple(power_gammas(config.training))
    require(record is not None and np.allclose(record["gammas"], gammas), f"{folder} exponents",
            record and record.get("gammas"), f"the config's {gammas} (training.power_ema_sigma_rels)")

    def load(step: int) -> tuple:
        return fetch_replicated(reader.restore(step, abstract)[0])

    return Snapshots(steps, tuple(config.training.power_ema_sigma_rels), gammas, load)


def _summarize(metrics: list[dict], step: int, steps: int, batch_size: int, seconds: float,
               skipped_total: int) -> dict:
    """One JSON-lines record for the steps in `metrics` (host values): means and rates."""
    mean = lambda key: float(np.mean([m[key] for m in metrics]))  # noqa: E731
    images_per_s = len(metrics) * batch_size / max(seconds, 1e-9)
    return {"step": step, "images_seen": step * batch_size, "loss": mean("loss"),
            "grad_norm": mean("grad_norm"), "sigma_mean": mean("sigma_mean"),
            "finite_fraction": mean("finite"), "skipped_total": skipped_total,
            "images_per_s": images_per_s, "eta_s": (steps - step) * batch_size / images_per_s}

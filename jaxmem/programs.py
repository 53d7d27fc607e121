"""The compiled programs each experiment family runs, built for any devices from shapes alone.

`programs_of(family, config, devices)` returns, for a config of configs/<experiment>.py, every
program its run compiles, as a `Program`: the jitted function, abstract arguments
(jax.ShapeDtypeStruct with the shardings the run uses) and how often the whole run calls it.
No data is loaded and no parameter is initialised (jax.eval_shape), so the same code serves 1 CPU,
8 fake CPU devices and compile-only TPU/GPU devices (launch/compile_check.py).

  edm        train_step (one optimizer step of training.batch_size images), sampler (one
             sampling batch through every solver step), knn (one query block of the 1/3
             memorization test of sampling.num_samples samples against the training set),
             fid_features (one batch of 512 images through the Inception, when eval.quality)
  geometry   concentration and coverage (one chunk of compute.chunk_size queries against the
             training set at every level of the grid)
  crossover  gmm_grid[<folder>] (one chunk of training.chunk_steps steps of one grid)
  quality    fid_features (one batch of metrics.batch_size images, 512 when 0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import neighbors, noise, parallel, sampling
from jaxmem.validation import ConfigError
from jaxmem.data.images import SPLIT_SHAPES
from jaxmem.denoisers import empirical, unet
from jaxmem.experiments import edm_training
from jaxmem.experiments.gmm_crossover import grids
from jaxmem.geometry import concentration, coverage
from jaxmem.metrics import features, inception
from jaxmem.train import gmm_grid, trainer

FAMILIES = ("edm_training", "noise_regimes", "gmm_crossover", "sample_quality")
# Images of the training split (when data.num_train is 0: all of it) and their shape.
SPLIT_SIZES = {name: splits["train"][0] for name, splits in SPLIT_SHAPES.items()}
IMAGE_SHAPES = {name: splits["train"][1:] for name, splits in SPLIT_SHAPES.items()}
FID_BATCH = 512   # images per call of the FID network when a config leaves it to the platform
FID_IMAGES = 50_000  # a standard FID
KNN_MEMORY_SHARE = 8  # the k-NN query block uses an eighth of a device's memory (as on a real device)


@dataclasses.dataclass(frozen=True)
class Program:
    """One program: fn(*args, *static) jitted; args abstract (shapes, dtypes, shardings), static
    the values of its static arguments.

    compute: the target's FLOP class that bounds it ('bf16', 'f32', 'f32_highest').
    calls: how many times the whole run calls it; unit: what one call does (for tables); items:
    the images, queries or steps of one call (global)."""

    name: str
    fn: Callable
    args: tuple
    compute: str
    calls: int
    unit: str
    items: int
    static: tuple = ()


def _abstract(shape, dtype, sharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def _with_shardings(shapes, shardings):
    return jax.tree_util.tree_map(lambda s, sh: _abstract(s.shape, s.dtype, sh), shapes, shardings)


def _round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def _dataset_size(dataset: str, requested: int) -> int:
    if requested:
        return int(requested)
    if dataset not in SPLIT_SIZES:
        raise ConfigError(f"data.num_train = 0 (the whole split) has no known size for dataset {dataset!r}; "
                          f"set it (known: {', '.join(SPLIT_SIZES)})")
    return SPLIT_SIZES[dataset]


# --- edm ----------------------------------------------------------------------------------------

def edm_programs(config, devices, hbm_bytes: int | None, chips: int) -> list[Program]:

    mesh = parallel.make_mesh(devices=devices)
    shape = unet.input_shape(config.model)
    compute = "bf16" if config.model.dtype == "bfloat16" else "f32"
    training, s = config.training, config.sampling
    trainer.validate_training_config(config, chips)
    program = trainer.build_program(config, shape, devices)
    state = _with_shardings(program.state_shapes, program.state_sharding)
    batch = {"images": _abstract((training.batch_size, *shape), jnp.float32, program.batch_sharding["images"])}
    if config.model.label_dim:
        batch["labels"] = _abstract((training.batch_size, config.model.label_dim), jnp.float32,
                                    program.batch_sharding["labels"])
    out = [Program("train_step", program.step, (state, batch), compute, trainer.total_steps(training),
                   f"step of {training.batch_size} images", training.batch_size)]

    grid = tuple(noise.edm_sigmas(s.num_steps, s.sigma_min, s.sigma_max, s.rho).tolist())
    sample_fn = sampling.sample_batch_program(sampling.without_step(edm_training.sampling_denoiser(config)),
                                              grid, s.solver, len(shape), mesh)
    batch_size = _round_up(s.batch_size, chips)
    params = _with_shardings(program.state_shapes.ema_params,
                             jax.tree_util.tree_map(lambda _: parallel.replicated(mesh), program.state_shapes.ema_params))
    noise_arg = _abstract((batch_size, *shape), jnp.float32, parallel.sharding_along(mesh, 1 + len(shape)))
    out.append(Program("sampler", sample_fn, (params, noise_arg), compute, math.ceil(s.num_samples / batch_size),
                       f"{batch_size} samples, {s.num_steps} {s.solver} steps", batch_size))

    num_train = _dataset_size(config.data.dataset, config.data.num_train)
    out.append(knn_program(s.num_samples, num_train, int(np.prod(shape)), mesh, hbm_bytes, chips))
    if config.eval.quality:
        out.append(fid_program(FID_BATCH, shape, mesh, FID_IMAGES, chips))
    return out


def knn_program(num_queries: int, num_train: int, dim: int, mesh, hbm_bytes: int | None, chips: int,
                k: int = 2) -> Program:
    """One query block of the exact k-NN (jaxmem.neighbors.knn) against num_train points of
    dimension dim; the block as knn() picks it on a device of hbm_bytes (None: the CPU blocks)."""
    candidates = min(k + neighbors.EXTRA_CANDIDATES, num_train)
    if hbm_bytes is None:
        per_device, train_block = 2048, 4096
    else:
        per_device, train_block = neighbors.blocks_for_memory(hbm_bytes // KNN_MEMORY_SHARE, dim, candidates)
    num_blocks, train_block = neighbors.train_blocking(num_train, candidates, train_block)
    block = min(per_device * chips, _round_up(num_queries, chips))
    padded = num_blocks * train_block
    replicated = parallel.replicated(mesh)
    args = (_abstract((block, dim), jnp.float32, parallel.sharding_along(mesh, 2)),
            _abstract((padded, dim), jnp.float32, replicated), _abstract((padded,), jnp.float32, replicated),
            _abstract((), jnp.float32, replicated))
    fn = jax.jit(lambda q, x, sq, norm: neighbors.knn_block(q, x, sq, norm, k=k, num_candidates=candidates,
                                                            train_block=train_block))
    return Program("knn", fn, args, "f32_highest", math.ceil(num_queries / block),
                   f"{block} queries x {num_train} points x d {dim}", block)


def fid_program(batch: int, image_shape, mesh, images: int, chips: int) -> Program:
    """One batch of uint8 images [batch, H, W, C] through the FID Inception (features [batch, 2048])."""

    batch = _round_up(batch, chips)
    params = jax.eval_shape(lambda: inception.InceptionV3().init(
        jax.random.PRNGKey(0), jnp.zeros((1, *inception.INPUT_SIZE, 3)))["params"])
    params = _with_shardings(params, jax.tree_util.tree_map(lambda _: parallel.replicated(mesh), params))
    height, width, channels = image_shape
    images_arg = _abstract((batch, height, width, channels), jnp.uint8, parallel.sharding_along(mesh, 4))
    return Program("fid_features", features.sharded_features(mesh), (params, images_arg), "f32_highest",
                   math.ceil(images / batch), f"{batch} images {height}x{width}x{channels}", batch)


# --- geometry -----------------------------------------------------------------------------------

def geometry_programs(config, devices, hbm_bytes: int | None, chips: int) -> list[Program]:
    del hbm_bytes

    mesh = parallel.make_mesh(devices=devices)
    d = config.data
    dim = int(np.prod(IMAGE_SHAPES.get(d.dataset, (0,)))) if d.dataset in IMAGE_SHAPES else 0
    if not dim:
        raise ConfigError(f"data.dataset={d.dataset!r}: the compile check knows the image shapes of "
                          f"{', '.join(IMAGE_SHAPES)}")
    num_train = _dataset_size(d.dataset, d.num_train)
    replicated, rows = parallel.replicated(mesh), parallel.sharding_along(mesh, 2)
    shapes = empirical.param_shapes(num_train, dim, config.compute.block_size)
    params = _with_shardings(shapes, jax.tree_util.tree_map(lambda _: replicated, shapes))
    sigmas = _abstract((config.grid.num_sigmas,), jnp.float32, replicated)
    chunk = _round_up(config.compute.chunk_size, chips)
    queries = _abstract((chunk, dim), jnp.float32, rows)
    source = _abstract((chunk,), jnp.int32, parallel.sharding_along(mesh, 1))
    levels = f"{config.grid.num_sigmas} levels"
    conc_queries = config.concentration.num_points * config.concentration.draws
    cov_queries = config.coverage.num_points * config.coverage.draws
    # The kernel picks its query tiles from the backend it runs on; compiled here for another
    # platform, it is told: CPU tiles for a CPU target, the whole chunk in one tile otherwise.
    query_tile = None if devices[0].platform == "cpu" else chunk
    return [
        Program("concentration", concentration.concentration_kernel, (queries, queries, source, params, sigmas),
                "f32_highest",
                math.ceil(conc_queries / chunk), f"{chunk} queries x {num_train} points x d {dim}, {levels}", chunk,
                (query_tile,)),
        Program("coverage", coverage.coverage_kernel,
                (queries, queries, params, sigmas, _abstract((2,), jnp.float32, replicated)), "f32_highest",
                math.ceil(cov_queries / chunk), f"{chunk} queries x {num_train} points x d {dim}, {levels}", chunk),
    ]


# --- crossover ----------------------------------------------------------------------------------

def crossover_programs(config, devices, hbm_bytes: int | None, chips: int) -> list[Program]:
    del hbm_bytes

    mesh = parallel.make_mesh(devices=devices)
    loss_fn, optimizer = grids.make_loss_and_optimizer(config.training, grids.times_of(config))
    training = config.training
    chunk = min(training.chunk_steps, training.steps)
    out = []
    for grid in grids.grids_of(config):
        dim, folder = grid.dim, grid.folder
        params, batch, rngs = grids.grid_shapes(config, dim, grid.train_sizes, chips)
        program = gmm_grid.grid_program(loss_fn, optimizer, params, batch, rngs, mesh)
        state = _with_shardings(program.state_shapes, program.state_sharding)
        batch = _with_shardings(batch, program.batch_sharding)
        sets, members, max_m, _ = params["means"].shape
        out.append(Program(f"gmm_grid[{folder}]", program.run_chunk, (state, batch), "f32",
                           math.ceil(training.steps / chunk),
                           f"{chunk} steps of {sets} sets x {members} models, M <= {max_m}, d {dim}", chunk, (chunk,)))
    return out


# --- quality ------------------------------------------------------------------------------------

def quality_programs(config, devices, hbm_bytes: int | None, chips: int) -> list[Program]:
    del hbm_bytes
    mesh = parallel.make_mesh(devices=devices)
    shape = IMAGE_SHAPES.get(config.data.dataset)
    if shape is None:
        raise ConfigError(f"data.dataset={config.data.dataset!r}: the compile check knows the image shapes of "
                          f"{', '.join(IMAGE_SHAPES)}")
    images = _dataset_size(config.data.dataset, config.data.num_reference)
    return [fid_program(config.metrics.batch_size or FID_BATCH, shape, mesh, images, chips)]


BUILDERS = {"edm_training": edm_programs, "noise_regimes": geometry_programs, "gmm_crossover": crossover_programs,
            "sample_quality": quality_programs}


def programs_of(family: str, config, devices, hbm_bytes: int | None = None, chips: int | None = None
                ) -> list[Program]:
    """Every program a run of `config` (configs/<experiment>.py) compiles, on `devices`.

    hbm_bytes: one device's memory, for the blocks that a run sizes from it (k-NN); None on CPU.
    chips: the device count that batches and padded axes are rounded to (default len(devices));
    the target's count when the same global program is built on one CPU for its FLOP count."""
    if family not in BUILDERS:
        raise ConfigError(f"config family {family!r} has no compile check; families: {', '.join(FAMILIES)}")
    devices = list(devices)
    return BUILDERS[family](config, devices, hbm_bytes, chips or len(devices))

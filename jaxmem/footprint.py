"""Coarse host-memory estimates of each experiment, checked at the door before any work.

A run that cannot fit in memory must be refused by jaxmem, with the numbers, not killed by the
kernel hours later (or endanger everything else on the machine). Each experiment's
validate_config calls require_fits(<experiment>(config)) last; the estimate is a dict of named
parts in bytes (float32 arrays), and the run is refused (TooLarge, a ConfigError: one `error:`
line, exit 2) when their sum exceeds the memory the host has available (MemAvailable of
/proc/meminfo). `--nomemory_check` on any launcher skips the refusal (jaxmem.cli: `checking`).

What is counted (and what is not): the arrays a run holds at once, i.e. its data (held by the
host), its parameters with the optimizer state (parameters, gradients and Adam's two moments: 4
copies; EDM adds the EMA: 5) and the largest block it evaluates (held by the devices that
compute: the host's memory on CPU, the accelerators' memory, summed over devices, on a GPU/TPU).
Not counted: the Python process, JAX and XLA themselves (a few hundred MB), compiled programs and
temporaries XLA fuses away. The estimate is meant to be within a small factor, never to pass a
run that is 100x too large.
"""

from __future__ import annotations

import contextlib
import math
import zipfile

import numpy as np

from jaxmem.validation import ConfigError
from jaxmem.data.images import SPLIT_SHAPES

FLOAT = 4  # bytes of a float32
# (N, H, W, C) of the built-in image sources per split (jaxmem.data.images.DATASETS).
INCEPTION_PARAMETERS = 23_900_000  # the FID Inception's weights
INCEPTION_ACTIVATIONS_PER_IMAGE = 299 * 299 * 3 * 12  # its input at 299^2 and the feature maps of one image

_CHECKING = [True]
_COLLECTING: list[list[dict[str, float]]] = []


class TooLarge(ConfigError):
    """The run's estimated memory exceeds what the host has available."""


@contextlib.contextmanager
def collecting():
    """Inside it, require_fits records each estimate in the yielded list instead of checking it
    (the sweep driver collects its runs' estimates to check those that run at once)."""
    found: list[dict[str, float]] = []
    _COLLECTING.append(found)
    try:
        yield found
    finally:
        _COLLECTING.pop()


@contextlib.contextmanager
def checking(enabled: bool):
    """require_fits refuses only while `enabled` (the launchers' --memory_check flag)."""
    _CHECKING.append(enabled)
    try:
        yield
    finally:
        _CHECKING.pop()


def device_bytes() -> int | None:
    """The memory of the devices that compute, summed: None on CPU (the host's memory is theirs)
    or when a device does not report its limit."""
    import jax

    if jax.default_backend() == "cpu":
        return None
    try:
        return sum(device.memory_stats()["bytes_limit"] for device in jax.local_devices())
    except (TypeError, KeyError, AttributeError):
        return None


def available_bytes() -> int | None:
    """The memory the host can give a new process without swapping (MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def size_text(n: float) -> str:
    """Bytes as GiB, or TiB / PiB when that reads better: '3.20 GiB', '1.5e+03 PiB'."""
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 2**30:.2f} GiB"


def require_fits(parts: dict[str, float]) -> None:
    """Raises TooLarge, listing the estimate's parts and the memory available, when the parts
    (bytes; the "data" parts on the host, the others on the computing devices) exceed it (unless
    checking(False) is in force; inside collecting() the parts are recorded instead)."""
    if _COLLECTING:
        _COLLECTING[-1].append(dict(parts))
        return
    if not _CHECKING[-1]:
        return
    host = available_bytes()
    devices = device_bytes()
    on_host = sum(size for name, size in parts.items() if devices is None or name.endswith("data"))
    on_devices = sum(parts.values()) - on_host
    shown = ", ".join(f"{name} {size_text(size)}" for name, size in sorted(parts.items(), key=lambda kv: -kv[1]))
    for needed, available, where in ((on_host, host, "the host has"), (on_devices, devices, "the devices have")):
        if available is not None and needed > available:
            raise TooLarge(f"this run needs about {size_text(needed)} of memory ({shown}) but {where} "
                           f"{size_text(available)} available; reduce the sizes named, or pass --nomemory_check "
                           "if you know better")


def require_together(estimates: list[dict[str, float]], at_once: int) -> None:
    """require_fits for runs of which `at_once` run at the same time (a sweep's --parallel): the
    parts of the `at_once` largest estimates, summed part by part."""
    largest = sorted(estimates, key=lambda parts: -sum(parts.values()))[:at_once]
    label = f"{len(largest)} runs' " if len(largest) > 1 else ""
    summed: dict[str, float] = {}
    for parts in largest:
        for name, size in parts.items():
            summed[label + name] = summed.get(label + name, 0) + size
    try:
        require_fits(summed)
    except TooLarge as error:
        raise TooLarge(f"{error}; or run fewer at once (--parallel={at_once} now)") from None


def npz_shape(path: str, keys: tuple[str, ...]) -> tuple[int, ...]:
    """The shape of the first of `keys` stored in the .npz `path`, read from its array header
    (the array itself is not read); () when none is there."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for key in keys:
            if key + ".npy" in names:
                with archive.open(key + ".npy") as f:
                    version = np.lib.format.read_magic(f)
                    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    return tuple(header(f)[0])
    return ()


def image_shape(data) -> tuple[int, int, int, int]:
    """(N, H, W, C) of an image source config group (data.dataset, data.split, data.path): the
    built-in sources' known shapes, an .npz file's `images` header."""
    if data.dataset == "npz":
        shape = npz_shape(data.path, ("images",)) or (0,)
    else:
        shapes = SPLIT_SHAPES.get(data.dataset, {})
        shape = shapes.get(data.get("split", "train"), shapes.get("train", (0,)))
    return tuple(shape) + (1,) * (4 - len(shape))


def crossover(config) -> dict[str, float]:
    """The largest grid of gmm_crossover: S data sets (K x N x seeds) x C capacities of M <= N
    components in d dimensions, trained at once; its training block is the responsibility
    tensor [S, C, noise draws, points per block, M]."""
    d = max(int(x) for x in config.data.dims)
    sizes = [int(n) for n in config.data.train_sizes]
    n = max(sizes)
    per_grid = 1 if config.training.grid_per_train_size else len(sizes)
    sets = len(config.data.num_components) * per_grid * config.model.num_seeds
    capacities = len(config.model.capacity_fractions) + config.model.refine_points
    m = max(1, round(max(config.model.capacity_fractions) * n))
    points = config.training.point_block or config.training.batch_size or n
    copies = max(1, config.data.copies)
    states = 5 if config.training.get("optimizer", "jaxmem") == "paper" else 4  # + the paper chain's update EMA
    return {"data": sets * (n * copies + config.data.num_val) * d * FLOAT,
            "parameters and optimizer": states * sets * capacities * m * (d + 2) * FLOAT,
            "training block": sets * capacities * config.training.noise_draws * points * m * FLOAT,
            "evaluation block": sets * capacities * config.sampling.num_samples * n * FLOAT}


def unet_parameters(model) -> int:
    """~ the U-Net's parameter count: 18 c^2 per ResNet block at width c (two 3x3 convolutions),
    3 num_blocks + 1 blocks per level (encoder num_blocks, decoder num_blocks + 1 at twice the
    input width)."""
    return sum(18 * (model.channels * int(mult)) ** 2 * (3 * model.num_blocks + 1) for mult in model.channel_mult)


def edm(config) -> dict[str, float]:
    """EDM training: the image split and the training subset, the U-Net's parameters with EMA
    and Adam state, and the activations of one training batch kept for the backward pass (per
    level 4 + 4 num_blocks feature maps of the batch at that level's size and width)."""
    n, h, w, c = image_shape(config.data)
    m = config.model
    activations = sum(config.training.batch_size * (h // 2**level) * (w // 2**level) * m.channels * int(mult)
                      * (4 + 4 * m.num_blocks) for level, mult in enumerate(m.channel_mult))
    return {"data": (n + (config.data.num_train or n)) * h * w * c * FLOAT,
            "parameters and optimizer": 5 * unet_parameters(m) * FLOAT,
            "training block": activations * FLOAT}


def geometry(config) -> dict[str, float]:
    """noise_regimes: the train and held-out images and the largest kernel block (chunk_size
    queries x block_size training points x the sigma grid, distances and weights)."""
    _, h, w, c = image_shape(config.data)
    data = config.data
    block = config.compute.chunk_size * max(config.compute.block_size, data.num_train) * config.grid.num_sigmas
    return {"data": (data.num_train + data.num_heldout) * h * w * c * FLOAT, "kernel block": 2 * block * FLOAT}


def quality(config, samples_shape: tuple[int, ...]) -> dict[str, float]:
    """sample_quality: the samples and reference images, the Inception's weights and one
    feature-extraction batch (metrics.batch_size, or 64 when automatic)."""
    n, h, w, c = image_shape(config.data)
    reference = config.data.num_reference or n
    return {"data": (math.prod(samples_shape) + reference * h * w * c) * FLOAT,
            "Inception": INCEPTION_PARAMETERS * FLOAT,
            "feature batch": (config.metrics.batch_size or 64) * INCEPTION_ACTIVATIONS_PER_IMAGE * FLOAT}


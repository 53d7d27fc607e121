"""Meshes, shardings and multi-host start-up (jax.jit + NamedSharding; no pmap).

Code written against these helpers runs unchanged on 1 CPU, on 8 fake CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8), one GPU or a pod.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxmem.validation import require_choice

DATA_AXIS = "data"


DISTRIBUTED_MODES = ("auto", "on", "off")


def initialize_distributed(mode: str | None = None) -> bool:
    """Starts JAX's multi-process runtime when this process is one of several; True if started.

    mode (default: the JAXMEM_DISTRIBUTED environment variable, else 'auto'):
      auto  jax.distributed.initialize() with JAX's own cluster detection (Cloud TPU, SLURM,
            Open MPI, Kubernetes, or JAX_COORDINATOR_ADDRESS and friends); a process in which
            JAX detects no cluster runs alone
      on    the same, but a process without a detected cluster is an error
      off   never (e.g. several independent single-process jobs inside one SLURM allocation)
    """
    mode = mode or os.environ.get("JAXMEM_DISTRIBUTED", "auto")
    require_choice("JAXMEM_DISTRIBUTED", mode, DISTRIBUTED_MODES)
    if mode == "off" or jax.distributed.is_initialized():
        return False
    try:
        jax.distributed.initialize()
    except ValueError as e:  # JAX found no cluster: it cannot name a coordinator
        if mode == "on" or "coordinator_address" not in str(e):
            raise
        return False
    return True


def make_mesh(axis_name: str = DATA_AXIS, devices=None) -> Mesh:
    """A 1-D mesh over all (global) devices."""
    devices = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devices.reshape(-1), (axis_name,))


def sharding_along(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """NamedSharding splitting array axis `axis` over the mesh's (single) axis."""
    spec = [None] * ndim
    spec[axis] = mesh.axis_names[0]
    return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def pad_to_multiple(x: np.ndarray, multiple: int, axis: int = 0) -> tuple[np.ndarray, int]:
    """Pads `axis` of x (by repeating its last entry) to a multiple; returns (padded, original length)."""
    n = x.shape[axis]
    extra = (-n) % multiple
    if extra == 0:
        return x, n
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return np.pad(x, widths, mode="edge"), n


def to_host(array: jax.Array) -> np.ndarray:
    """A (possibly multi-host sharded) global array as one numpy array on every process."""
    if jax.process_count() > 1:
        array = multihost_utils.process_allgather(array, tiled=True)
    return np.asarray(array)

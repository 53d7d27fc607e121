"""Named accelerator targets: compile-only devices and the published figures a roofline needs.

A target is a slice (TPU) or a set of GPUs that XLA can compile for on a CPU-only host:
  TPU  through libtpu: jax.experimental.topologies.get_topology_desc(topology_name=..., platform="tpu")
  GPU  through the CUDA PJRT plugin: get_topology_desc(platform="cuda", target_config=<text proto>,
       topology="<slices>x<hosts>x<devices per host>"); the GPU's description (SM count, shared
       memory, memory size and bandwidth, compute capability) is a text proto in
       jaxmem/target_configs/, written from NVIDIA's published H100 SXM5 and H200 SXM figures.
Neither needs the accelerator or its driver. The packages are heavy and optional:
`pip install -e '.[accelerators]'` (libtpu, jax-cuda12-plugin, jax-cuda12-pjrt, pinned to the
installed jax). Compile-only devices cannot report their memory, so the table carries it.

Peak figures per chip, from the vendors' published specifications (`sources`):
  flops     dense FLOP/s by compute class: 'bf16' (bfloat16 matmuls and convolutions);
            'f32' (float32 at XLA's default precision: one bfloat16 pass on a TPU MXU, TF32
            tensor cores on an H100); 'f32_highest' (Precision.HIGHEST: six bfloat16 passes on a
            TPU, non-tensor FP32 on an H100)
  hbm_bandwidth        bytes/s of the chip's memory
  link_bandwidth       bytes/s one chip sends (one direction) to its neighbours inside the slice
                       (TPU ICI; NVLink inside an H100 node)
  scaleout_bandwidth   bytes/s one chip sends across hosts when the target spans several
                       (GPU: one 400 Gb/s InfiniBand NIC per GPU; TPU slices: 0, all ICI)
These are upper bounds: a roofline from them is a lower bound on time, never a prediction.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

from jaxmem.validation import ConfigError

GIB = 2**30
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "target_configs")
INSTALL = "pip install -e '.[accelerators]' (or make accelerators)"

_V5E = dict(hbm_bytes=16 * GIB, flops={"bf16": 197e12, "f32": 197e12, "f32_highest": 197e12 / 6},
            hbm_bandwidth=819e9, link_bandwidth=1600e9 / 8 / 2, scaleout_bandwidth=0.0,
            sources="Cloud TPU v5e docs: 197 TFLOP/s bf16, 16 GiB HBM2 at 819 GB/s, ICI 1,600 Gbps per chip")
_V5P = dict(hbm_bytes=95 * GIB, flops={"bf16": 459e12, "f32": 459e12, "f32_highest": 459e12 / 6},
            hbm_bandwidth=2765e9, link_bandwidth=4800e9 / 8 / 2, scaleout_bandwidth=0.0,
            sources="Cloud TPU v5p docs: 459 TFLOP/s bf16, 95 GiB HBM2e at 2,765 GB/s, ICI 4,800 Gbps per chip")
_V6E = dict(hbm_bytes=32 * GIB, flops={"bf16": 918e12, "f32": 918e12, "f32_highest": 918e12 / 6},
            hbm_bandwidth=1640e9, link_bandwidth=3584e9 / 8 / 2, scaleout_bandwidth=0.0,
            sources="Cloud TPU v6e (Trillium) docs: 918 TFLOP/s bf16, 32 GiB HBM at 1,640 GB/s, ICI 3,584 Gbps per chip")
_H100 = dict(hbm_bytes=85_520_809_984,  # 79.6 GiB: what an H100 80GB reports
              flops={"bf16": 989.4e12, "f32": 494.7e12, "f32_highest": 66.9e12},
             hbm_bandwidth=3.35e12, link_bandwidth=900e9 / 2, scaleout_bandwidth=400e9 / 8,
             sources="NVIDIA H100 SXM5 datasheet: dense 989.4 TFLOP/s bf16, 494.7 TF32, 66.9 FP32; "
                     "80 GB HBM3 at 3.35 TB/s; NVLink 900 GB/s (both directions); ConnectX-7 400 Gb/s per GPU")

_H200 = dict(_H100, hbm_bytes=150_754_820_096, hbm_bandwidth=4.8e12,  # 140.4 GiB of HBM3e
             sources="NVIDIA H200 SXM datasheet: the H100's compute (dense 989.4 TFLOP/s bf16, 494.7 TF32, 66.9 FP32), "
                     "141 GB HBM3e at 4.8 TB/s; NVLink 900 GB/s; ConnectX-7 400 Gb/s per GPU")


@dataclasses.dataclass(frozen=True)
class Target:
    """One compile target: `chips` devices of one kind and the figures of one chip (see module doc)."""

    name: str
    platform: str          # 'tpu' or 'cuda'
    topology: str          # libtpu topology name, or the CUDA plugin's '<slices>x<hosts>x<per host>'
    chips: int
    hbm_bytes: int
    flops: dict
    hbm_bandwidth: float
    link_bandwidth: float
    scaleout_bandwidth: float
    sources: str
    target_config: str = ""  # GPU: file in jaxmem/target_configs

    @property
    def hosts(self) -> int:
        return int(self.topology.split("x")[1]) if self.platform == "cuda" else 1

    def peak_flops(self, compute: str) -> float:
        if compute not in self.flops:
            raise ValueError(f"compute class {compute!r}; known: {', '.join(self.flops)}")
        return self.flops[compute]


def _tpu(name, topology, chips, figures):
    return Target(name, "tpu", topology, chips, **figures)


def _gpu(name, hosts, per_host, figures=_H100, config="h100_sxm.txtpb"):
    return Target(name, "cuda", f"1x{hosts}x{per_host}", hosts * per_host, target_config=config, **figures)


TARGETS = {t.name: t for t in (
    _tpu("v5e-8", "v5e:2x4", 8, _V5E), _tpu("v5e-32", "v5e:4x8", 32, _V5E), _tpu("v5e-256", "v5e:16x16", 256, _V5E),
    _tpu("v5p-32", "v5:2x2x4", 16, _V5P),  # v5p-N counts TensorCores: 2 per chip, 16 chips
    _tpu("v6e-8", "v6e:2x4", 8, _V6E),
    _gpu("h100x1", 1, 1), _gpu("h100x8", 1, 8), _gpu("h100x32", 4, 8), _gpu("h100x256", 32, 8),
    _gpu("h200x1", 1, 1, _H200, "h200_sxm.txtpb"),
)}
PACKAGES = {"tpu": ("libtpu", "libtpu"), "cuda": ("jax_plugins.xla_cuda12", "jax-cuda12-plugin and jax-cuda12-pjrt")}


def get_target(name: str) -> Target:
    """The target called `name`; ConfigError listing the known names otherwise."""
    if name not in TARGETS:
        raise ConfigError(f"--target={name!r} is not a known target; known targets: {', '.join(TARGETS)}")
    return TARGETS[name]


def check_packages(target: Target) -> None:
    """ConfigError naming the install command when the target's compiler package is missing."""
    module, packages = PACKAGES[target.platform]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise ConfigError(f"--target={target.name} needs {packages}, which are not installed; run {INSTALL}")


def compile_only_devices(target: Target) -> list:
    """The target's devices as compile-only jax devices (no accelerator needed); the host's
    jax must run on CPU (jax.config jax_platforms='cpu' before any computation)."""
    from jax.experimental import topologies  # noqa: PLC0415  (imported once a target is chosen)

    check_packages(target)
    if target.platform == "tpu":
        return list(topologies.get_topology_desc(topology_name=target.topology, platform="tpu").devices)
    with open(os.path.join(CONFIG_DIR, target.target_config)) as f:
        text = f.read()
    return list(topologies.get_topology_desc(platform="cuda", target_config=text, topology=target.topology).devices)

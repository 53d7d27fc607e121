"""Per-program XLA compile options (jax.jit(..., compiler_options=...)); nothing process-wide.

`convolutions(devices)` is for programs whose work is convolutions: the U-Net's training step, the
sampler and the FID Inception (jaxmem.metrics.features). On XLA:CPU (jaxlib 0.10) the default
hands convolutions, and the dots fused with them, to YNNPACK, whose weight-gradient convolution
runs ~10x slower than XLA's own (Eigen) one: 3x3, 128 -> 128 channels, 32 x 32, batch 32 takes
0.9-1.3 s against ~0.09 s, and the forward network ~1.3x slower (BENCHMARKS.md, "EDM training
step"); the FID Inception's forward pass, batch 32, 1.6x slower (BENCHMARKS.md, "CPU, quiet").
An empty `xla_cpu_experimental_ynn_fusion_type` gives all of them back to XLA. The function
computed is the same (float32 rounding). On other platforms, or an XLA that does not know the
option, the options are empty.

`initialisation(devices)` is for a program that runs once per process and draws random numbers:
the training state's init (threefry's integer arithmetic, then a scale per tensor). XLA:CPU's
LLVM optimisation (level 2 by default) spends most of that program's compile time on code that
runs once; at level 0 the smoke U-Net's init compiles in 5 s instead of 26, the 8.8 M network's
in 8 s instead of 13 (0.7 s to run instead of 0.2), and every parameter comes out with the same
bits (tests/test_unet_speed_parts.py). Never for a program whose floating-point arithmetic matters
beyond that: other programs do not all give the same bits at level 0.
"""

from __future__ import annotations

import functools

import jax

CPU_CONVOLUTIONS = (("xla_cpu_experimental_ynn_fusion_type", ""),)
CPU_INITIALISATION = (("xla_backend_optimization_level", 0),)


def convolutions(devices) -> dict:
    """compiler_options for a convolution program on `devices` ({} off CPU)."""
    if devices[0].platform != "cpu" or not _accepted(CPU_CONVOLUTIONS):
        return {}
    return dict(CPU_CONVOLUTIONS)


def initialisation(devices) -> dict:
    """compiler_options for a run-once random initialisation on `devices` ({} off CPU)."""
    if devices[0].platform != "cpu" or not _accepted(CPU_INITIALISATION):
        return {}
    return dict(CPU_INITIALISATION)


@functools.cache
def _accepted(options: tuple) -> bool:
    """Whether this XLA accepts the compile options (one tiny CPU compile, cached)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(1.0).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True

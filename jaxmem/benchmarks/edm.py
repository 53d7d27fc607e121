"""Bench entry: EDM U-Net training throughput (images/s) and achieved FLOP/s of the train step.

quick: the `smoke` preset's tiny U-Net (CPU-sized), float32.
full:  the CIFAR-10 DDPM++ preset (55.7 M parameters, batch 512), float32 and bfloat16 compute
       (on a CPU host: float32 at batch 8, so `make bench` fits in memory)
       (meant for a GPU; the reference PyTorch EDM is not installed here, so there is no
       external baseline row).
The step's FLOPs come from XLA's cost analysis of the compiled step (per device, times the
device count); `matmul_fraction` divides the achieved rate by the measured matmul rate of the
same dtype (jaxmem.benchmarks.harness.matmul_rate).
"""

from __future__ import annotations

import os

import jax

from jaxmem.benchmarks.harness import matmul_rate, time_fn
from jaxmem.config import load_config
from jaxmem.denoisers import unet
from jaxmem.train import trainer

NAME = "edm"
CASES = {"quick": [("smoke", "float32")], "full": [("cifar10_1k", "float32"), ("cifar10_1k", "bfloat16")]}
STEPS_PER_CALL = 5


CONFIG_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "edm.py")


def step_flops(compiled) -> float:
    """FLOPs of one call of a compiled program on all devices (XLA cost analysis)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan"))) * jax.device_count()


def measure(preset: str, dtype: str, batch_size: int | None = None) -> dict:
    """Times STEPS_PER_CALL training steps of `preset` with compute dtype `dtype`; one result row."""
    config = load_config(f"{CONFIG_PATH}:{preset}")
    config.model.dtype = dtype
    if batch_size is not None:
        config.training.batch_size = batch_size
    shape = unet.input_shape(config.model)
    batch_size = config.training.batch_size
    program = trainer.build_program(config, shape, jax.devices())
    images = jax.random.uniform(jax.random.PRNGKey(0), (batch_size, *shape), minval=-1.0, maxval=1.0)
    batch = {"images": jax.device_put(images, program.batch_sharding["images"])}
    state = program.init(jax.random.PRNGKey(0))
    flops = step_flops(program.step.lower(state, batch).compile())

    def run_steps():
        nonlocal state
        for _ in range(STEPS_PER_CALL):
            state, metrics = program.step(state, batch)
        return metrics

    seconds = time_fn(run_steps, repeats=5)["median_s"] / STEPS_PER_CALL
    peak = matmul_rate(dtype=unet.DTYPES[dtype], repeats=3)
    return {"entry": NAME, "method": f"jaxmem EDM train step ({preset}, {dtype})",
            "shape": f"batch {batch_size} x {'x'.join(map(str, shape))}", "median_s": seconds,
            "ratio_vs_baseline": 1.0, "images_per_s": batch_size / seconds,
            "step_gflop": flops / 1e9, "achieved_gflops": flops / seconds / 1e9,
            "matmul_fraction": flops / seconds / peak, "matmul_peak_gflops": peak / 1e9,
            "parameters": unet.count_params(state.params)}


CPU_FULL_BATCH = 8  # batch 512 of the CIFAR-10 network asks XLA for ~135 GB on a CPU host


def run(size: str) -> list[dict]:
    on_cpu = jax.default_backend() == "cpu"
    cases = CASES[size][:1] if on_cpu and size == "full" else CASES[size]
    batch = CPU_FULL_BATCH if on_cpu and size == "full" else None
    rows = [measure(preset, dtype, batch) for preset, dtype in cases]
    float32 = rows[0]["median_s"]
    for row in rows[1:]:
        row["speedup_vs_float32"] = float32 / row["median_s"]
    return rows

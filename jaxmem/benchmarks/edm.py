"""Bench entry: EDM U-Net training throughput (images/s) and achieved FLOP/s of the train step.

Sizes:
  quick  the `smoke` preset's tiny U-Net, float32 (tests and the CPU dry run of gpu_check)
  cpu    issue 19's CPU network: cifar10_1k's DDPM++ at 64 channels, multipliers (2, 2, 2), 2
         blocks per level (8,797,187 parameters, the same as NVlabs/edm's SongUNet with these
         settings) in float32 at batch 32 (`make bench` on a CPU host: the full network at batch
         512 asks XLA for ~135 GB there)
  full   the CIFAR-10 preset `cifar10_1k` (batch 512) in float32 and bfloat16 compute on an
         accelerator; a batch the device cannot hold is halved until it fits (the row's `shape`
         names the batch measured)
The reference PyTorch EDM is not installed here, so there is no external baseline row.
The step's FLOPs come from XLA's cost analysis of the compiled step (per device, times the
device count); `matmul_fraction` divides the achieved rate by the measured matmul rate of the
same dtype (jaxmem.benchmarks.harness.matmul_rate). `extrapolated_h` is the preset's whole
training (training.total_images: EDM-1K's 40 M images for cifar10_1k) at the measured images/s.
"""

from __future__ import annotations

import os

import jax

from jaxmem.benchmarks.harness import matmul_rate, time_fn
from jaxmem.config import load_config
from jaxmem.denoisers import unet
from jaxmem.train import trainer

NAME = "edm"
# size -> (preset, [compute dtypes], batch (None: the preset's), timed calls, model overrides)
CASES = {"quick": ("smoke", ["float32"], None, 5, {}),
         "cpu": ("cifar10_1k", ["float32"], 32, 3, dict(channels=64, channel_mult=(2, 2, 2), num_blocks=2)),
         "full": ("cifar10_1k", ["float32", "bfloat16"], None, 3, {})}
STEPS_PER_CALL = 5
MIN_BATCH = 64  # the smallest batch tried when the device runs out of memory

CONFIG_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "edm.py")


def step_flops(compiled) -> float:
    """FLOPs of one call of a compiled program on all devices (XLA cost analysis)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan"))) * jax.device_count()


def measure(preset: str, dtype: str, batch_size: int | None = None, repeats: int = 5, model=None) -> dict:
    """Times STEPS_PER_CALL training steps of `preset` with compute dtype `dtype` (and the
    config.model `model` overrides); one result row."""
    config = load_config(f"{CONFIG_PATH}:{preset}")
    config.model.update(dtype=dtype, **(model or {}))
    if batch_size is not None:
        config.training.batch_size = batch_size
    shape = unet.input_shape(config.model)
    batch_size = config.training.batch_size
    program = trainer.build_program(config, shape, jax.devices())
    images = jax.random.uniform(jax.random.PRNGKey(0), (batch_size, *shape), minval=-1.0, maxval=1.0)
    batch = {"images": jax.device_put(images, program.batch_sharding["images"])}
    state = program.init(jax.random.PRNGKey(0))
    compiled = program.step.lower(state, batch).compile()
    flops = step_flops(compiled)

    def run_steps():
        nonlocal state
        for _ in range(STEPS_PER_CALL):
            state, metrics = compiled(state, batch)
        return metrics

    seconds = time_fn(run_steps, repeats=repeats)["median_s"] / STEPS_PER_CALL
    peak = matmul_rate(dtype=unet.DTYPES[dtype], repeats=3)
    images_per_s = batch_size / seconds
    changed = "".join(f", {k}={v}" for k, v in (model or {}).items())
    return {"entry": NAME, "method": f"jaxmem EDM train step ({preset}{changed}, {dtype})",
            "shape": f"batch {batch_size} x {'x'.join(map(str, shape))}", "median_s": seconds,
            "ratio_vs_baseline": 1.0, "images_per_s": images_per_s,
            "step_gflop": flops / 1e9, "achieved_gflops": flops / seconds / 1e9,
            "matmul_fraction": flops / seconds / peak, "matmul_peak_gflops": peak / 1e9,
            "parameters": unet.count_params(state.params),
            "extrapolated_h": config.training.total_images / images_per_s / 3600,
            "extrapolates": f"{preset}: {config.training.total_images:,} training images"}


def measure_fitting(preset: str, dtype: str, batch_size: int | None, repeats: int, model) -> dict:
    """measure(), halving the batch while the device reports RESOURCE_EXHAUSTED (down to MIN_BATCH)."""
    while True:
        try:
            return measure(preset, dtype, batch_size, repeats, model)
        except jax.errors.JaxRuntimeError as error:
            batch_size = batch_size or load_config(f"{CONFIG_PATH}:{preset}").training.batch_size
            if "RESOURCE_EXHAUSTED" not in str(error) or batch_size // 2 < MIN_BATCH:
                raise
            batch_size //= 2


def run(size: str) -> list[dict]:
    preset, dtypes, batch_size, repeats, model = CASES[size]
    rows = [measure_fitting(preset, dtype, batch_size, repeats, model) for dtype in dtypes]
    for row in rows[1:]:  # images/s, since the batches measured may differ
        row["speedup_vs_float32"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows

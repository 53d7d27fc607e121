"""Bench entry: EDM U-Net training throughput (images/s), forward time and achieved FLOP/s of the
train step, against the same network and step in PyTorch (jaxmem.benchmarks.torch_unet).

Sizes:
  quick  the `smoke` preset's tiny U-Net, float32 (tests and the CPU dry run of gpu_check)
  cpu    issue 19's CPU network: the DDPM++ U-Net at 64 channels, multipliers (2, 2, 2), 2 blocks
         per level, attention at 16x16, noise features 64, embedding 256, no dropout (8,797,187
         parameters, as NVlabs/edm's SongUNet with these settings) in float32 at batch 32
         (`make bench` on a CPU host: the full network at batch 512 asks XLA for ~135 GB there)
  full   the CIFAR-10 preset `cifar10_1k` (batch 512) in float32 and bfloat16 compute on an
         accelerator; a batch the device cannot hold is halved until it fits (the row's `shape`
         names the batch measured); no PyTorch row
The PyTorch rows (quick and cpu, when torch is installed: the `bench` and `test` extras) time
the same network, with jaxmem's initial weights ported, and the same step (EDM loss, backward,
Adam, EMA) with torch's default thread count; the jaxmem row's `ratio_vs_baseline` is then
torch's step time over jaxmem's (above 1: jaxmem faster) and `forward_ratio` the same for one
forward pass of the batch (eval mode). `compile_s` is the step's compile time (no persistent
cache here). The step's FLOPs come from XLA's cost analysis of the compiled step (per device,
times the device count); `matmul_fraction` divides the achieved rate by the measured matmul rate
of the same dtype (jaxmem.benchmarks.harness.matmul_rate). `extrapolated_h` is the preset's
whole training (training.total_images: EDM-1K's 40 M images for cifar10_1k) at the measured
images/s.
"""

from __future__ import annotations

import importlib.util
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxmem import xla_options
from jaxmem.benchmarks.harness import matmul_rate, time_fn
from jaxmem.config import load_config
from jaxmem.denoisers import unet
from jaxmem.train import trainer

NAME = "edm"
ISSUE_19_NETWORK = dict(channels=64, channel_mult=(2, 2, 2), num_blocks=2, noise_features=64, embed_dim=256,
                        dropout=0.0)
# size -> (preset, [compute dtypes], batch (None: the preset's), timed calls, steps per call,
#          model overrides, PyTorch baseline)
CASES = {"quick": ("smoke", ["float32"], None, 5, 5, {}, True),
         "cpu": ("cifar10_1k", ["float32"], 32, 3, 1, ISSUE_19_NETWORK, True),
         "full": ("cifar10_1k", ["float32", "bfloat16"], None, 3, 5, {}, False)}
MIN_BATCH = 64  # the smallest batch tried when the device runs out of memory

CONFIG_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "edm.py")


def step_flops(compiled) -> float:
    """FLOPs of one call of a compiled program on all devices (XLA cost analysis)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan"))) * jax.device_count()


def bench_config(preset: str, dtype: str, batch_size: int | None, model):
    """The preset with compute dtype `dtype`, the config.model overrides and the batch."""
    config = load_config(f"{CONFIG_PATH}:{preset}")
    config.model.update(dtype=dtype, **(model or {}))
    if batch_size is not None:
        config.training.batch_size = batch_size
    return config


def measure(preset: str, dtype: str, batch_size: int | None = None, repeats: int = 5, steps_per_call: int = 5,
            model=None) -> tuple[dict, dict]:
    """Times `steps_per_call` training steps and one forward pass of `preset` (compute dtype
    `dtype`, config.model overrides `model`); (result row, what the PyTorch baseline needs)."""
    config = bench_config(preset, dtype, batch_size, model)
    shape = unet.input_shape(config.model)
    batch_size = config.training.batch_size
    program = trainer.build_program(config, shape, jax.devices())
    images = jax.random.uniform(jax.random.PRNGKey(0), (batch_size, *shape), minval=-1.0, maxval=1.0)
    batch = {"images": jax.device_put(images, program.batch_sharding["images"])}
    state = program.init(jax.random.PRNGKey(0))
    initial = jax.tree_util.tree_map(np.asarray, state.params)
    started = time.perf_counter()
    compiled = program.step.lower(state, batch).compile()
    compile_s = time.perf_counter() - started
    flops = step_flops(compiled)

    def run_steps():
        nonlocal state
        for _ in range(steps_per_call):
            state, metrics = compiled(state, batch)
        return metrics

    seconds = time_fn(run_steps, repeats=repeats)["median_s"] / steps_per_call
    network = unet.network_from_config(config.model)
    forward = jax.jit(lambda p, x: network.apply({"params": p}, x, jnp.zeros((x.shape[0],))),
                      compiler_options=xla_options.convolutions(jax.devices()))
    forward_s = time_fn(forward, state.params, batch["images"], repeats=repeats)["median_s"]
    peak = matmul_rate(dtype=unet.DTYPES[dtype], repeats=3)
    images_per_s = batch_size / seconds
    changed = "".join(f", {k}={v}" for k, v in (model or {}).items())
    row = {"entry": NAME, "method": f"jaxmem EDM train step ({preset}{changed}, {dtype})",
           "shape": f"batch {batch_size} x {'x'.join(map(str, shape))}", "median_s": seconds,
           "ratio_vs_baseline": None, "images_per_s": images_per_s, "forward_s": forward_s,
           "compile_s": compile_s, "step_gflop": flops / 1e9, "achieved_gflops": flops / seconds / 1e9,
           "matmul_fraction": flops / seconds / peak, "matmul_peak_gflops": peak / 1e9,
           "parameters": unet.count_params(state.params),
           "extrapolated_h": config.training.total_images / images_per_s / 3600,
           "extrapolates": f"{preset}: {config.training.total_images:,} training images"}
    return row, {"config": config, "params": initial, "images": np.asarray(images), "flops": flops, "peak": peak}


def torch_baseline(config, params, images: np.ndarray, repeats: int, steps_per_call: int) -> dict | None:
    """Step and forward times of the same network and step in PyTorch (None without torch or for a
    class-conditional network, which the torch twin does not build)."""
    if importlib.util.find_spec("torch") is None or config.model.label_dim:
        return None
    import torch

    from jaxmem.benchmarks import torch_unet

    network = torch_unet.network_from_config(config.model)
    torch_unet.load_flax_params(network, traverse_util.flatten_dict(params, sep="/"))
    step = torch_unet.make_train_step(network, config.optim)
    inputs = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

    def run_steps():
        for _ in range(steps_per_call):
            loss = step(inputs)
        return loss

    seconds = time_fn(run_steps, repeats=repeats)["median_s"] / steps_per_call
    network.eval()
    with torch.no_grad():
        forward_s = time_fn(lambda: network(inputs, torch.zeros(len(inputs))), repeats=repeats)["median_s"]
    return {"median_s": seconds, "forward_s": forward_s, "version": torch.__version__,
            "threads": torch.get_num_threads()}


def measure_fitting(preset: str, dtype: str, batch_size: int | None, repeats: int, steps_per_call: int,
                    model) -> tuple[dict, dict]:
    """measure(), halving the batch while the device reports RESOURCE_EXHAUSTED (down to MIN_BATCH)."""
    while True:
        try:
            return measure(preset, dtype, batch_size, repeats, steps_per_call, model)
        except jax.errors.JaxRuntimeError as error:
            batch_size = batch_size or load_config(f"{CONFIG_PATH}:{preset}").training.batch_size
            if "RESOURCE_EXHAUSTED" not in str(error) or batch_size // 2 < MIN_BATCH:
                raise
            batch_size //= 2


def run(size: str) -> list[dict]:
    preset, dtypes, batch_size, repeats, steps_per_call, model, with_torch = CASES[size]
    measured = [measure_fitting(preset, dtype, batch_size, repeats, steps_per_call, model) for dtype in dtypes]
    rows = [row for row, _ in measured]
    for row in rows[1:]:  # images/s, since the batches measured may differ
        row["speedup_vs_float32"] = row["images_per_s"] / rows[0]["images_per_s"]
    ours, inputs = measured[0]
    baseline = torch_baseline(inputs["config"], inputs["params"], inputs["images"], repeats,
                              steps_per_call) if with_torch else None
    if baseline is not None:
        ours["ratio_vs_baseline"] = baseline["median_s"] / ours["median_s"]
        ours["forward_ratio"] = baseline["forward_s"] / ours["forward_s"]
        rows.append({"entry": NAME, "method": f"PyTorch {baseline['version']} ({baseline['threads']} threads), "
                     "same network and step (baseline)", "shape": ours["shape"], "median_s": baseline["median_s"],
                     "ratio_vs_baseline": 1.0, "forward_ratio": 1.0, "forward_s": baseline["forward_s"],
                     "images_per_s": len(inputs["images"]) / baseline["median_s"],
                     "achieved_gflops": inputs["flops"] / baseline["median_s"] / 1e9,
                     "matmul_fraction": inputs["flops"] / baseline["median_s"] / inputs["peak"],
                     "parameters": ours["parameters"]})
    return rows

"""Bench entry: EDM U-Net training throughput (images/s), forward time and achieved FLOP/s of the
train step, against the same network and step in PyTorch (jaxmem.benchmarks.torch_unet).

Sizes:
  quick  the `smoke` preset's tiny U-Net, float32 (tests and the CPU dry run of gpu_check)
  cpu    the CPU network: the DDPM++ U-Net at 64 channels, multipliers (2, 2, 2), 2 blocks per
         level, attention at 16x16, noise features 64, embedding 256, no dropout (8,797,187
         parameters, as NVlabs/edm's SongUNet with these settings) in float32 at batch 32, and the
         CIFAR-10 network (55.7 M parameters, no dropout) at batch 8 (`make bench` on a CPU host:
         the full network at batch 512 asks XLA for ~135 GB there)
  full   the CIFAR-10 preset `cifar10_1k` (batch 512) in float32 and bfloat16 compute on an
         accelerator; a batch the device cannot hold is halved until it fits (the row's `shape`
         names the batch measured); no PyTorch row
The PyTorch rows (quick and cpu, when torch is installed: the `bench` and `test` extras) time
the same network, with jaxmem's initial weights ported, and the same step (EDM loss, backward,
Adam, EMA) with torch's default thread count, alternating with jaxmem's (harness.alternate):
the twin written here (jaxmem.benchmarks.torch_unet) and, with `edm_reference` (a checkout of
NVlabs/edm), NVlabs's own network, loss and step (jaxmem.benchmarks.nvlabs_edm). The jaxmem
row's `ratio_vs_baseline` is then the reference's (else the twin's) step time over jaxmem's in
the same round (median; above 1: jaxmem faster), `forward_ratio` the same for one forward pass
of the batch (eval mode), and `ratio_vs_twin` / `forward_ratio_vs_twin` the twin's. `compile_s` is the step's compile time (no persistent
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
from jaxmem.benchmarks.harness import alternate, matmul_rate
from jaxmem.config import load_config
from jaxmem.denoisers import unet
from jaxmem.train import trainer

NAME = "edm"
CPU_NETWORK = dict(channels=64, channel_mult=(2, 2, 2), num_blocks=2, noise_features=64, embed_dim=256,
                        dropout=0.0)
# size -> cases, each (preset, [compute dtypes], batch (None: the preset's), timed rounds, steps per
#          call, model overrides, PyTorch peers): on a CPU the 8.8 M network at batch 32 and the
#          CIFAR-10 network (55.7 M parameters) at batch 8
CASES = {"quick": [("smoke", ["float32"], None, 5, 5, {}, True)],
         "cpu": [("cifar10_1k", ["float32"], 32, 5, 1, CPU_NETWORK, True),
                 ("cifar10_1k", ["float32"], 8, 5, 1, {"dropout": 0.0}, True)],
         "full": [("cifar10_1k", ["float32", "bfloat16"], None, 3, 5, {}, False)]}
MIN_BATCH = 64  # the smallest batch tried when the device runs out of memory

CONFIG_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "edm_training.py")


def step_flops(compiled) -> float:
    """FLOPs of one call of a compiled program on all devices (XLA cost analysis)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan"))) * jax.device_count()


def bench_config(preset: str, dtype: str, batch_size: int | None, model):
    """The preset with compute dtype `dtype`, the config.model overrides and the batch; without the
    power EMAs (the peers' steps update one EMA, so the bench times the same work)."""
    config = load_config(f"{CONFIG_PATH}:{preset}")
    config.model.update(dtype=dtype, **(model or {}))
    config.training.snapshot_every_steps = 0
    if batch_size is not None:
        config.training.batch_size = batch_size
    return config


def measure(preset: str, dtype: str, batch_size: int | None = None, steps_per_call: int = 5,
            model=None) -> tuple[dict, dict]:
    """Compiles `steps_per_call` training steps and one forward pass of `preset` (compute dtype
    `dtype`, config.model overrides `model`) and calls each once (a batch the device cannot hold
    fails here); (the row without timings, {config, params, images, flops, peak, step, forward,
    step_hlo, forward_hlo}: step and forward are the zero-argument callables to time, the _hlo
    entries zero-argument callables giving the compiled programs' HLO text)."""
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

    network = unet.network_from_config(config.model)
    forward = jax.jit(lambda p, x: network.apply({"params": p}, x, jnp.zeros((x.shape[0],))),
                      compiler_options=xla_options.convolutions(jax.devices()))
    forward = forward.lower(state.params, batch["images"]).compile()
    jax.block_until_ready((run_steps(), forward(state.params, batch["images"])))
    peak = matmul_rate(dtype=unet.DTYPES[dtype], repeats=3)
    changed = "".join(f", {k}={v}" for k, v in (model or {}).items())
    row = {"entry": NAME, "method": f"jaxmem EDM train step ({preset}{changed}, {dtype})",
           "shape": f"batch {batch_size} x {'x'.join(map(str, shape))}", "ratio_vs_baseline": None,
           "compile_s": compile_s, "step_gflop": flops / 1e9, "matmul_peak_gflops": peak / 1e9,
           "parameters": unet.count_params(state.params),
           "extrapolates": f"{preset}: {config.training.total_images:,} training images"}
    return row, {"config": config, "params": initial, "images": np.asarray(images), "flops": flops, "peak": peak,
                 "step": run_steps, "forward": lambda: forward(state.params, batch["images"]),
                 "steps_per_call": steps_per_call, "step_hlo": compiled.as_text, "forward_hlo": forward.as_text}


def add_timings(row: dict, inputs: dict, step: dict, forward: dict) -> dict:
    """Fills a row's rates from its alternate() timings of the step call and the forward pass."""
    seconds = step["median_s"] / inputs["steps_per_call"]
    images_per_s = len(inputs["images"]) / seconds
    others = (c for c in (step["other_cores_max"], forward["other_cores_max"]) if c is not None)
    row.update(median_s=seconds, spread=step["spread"], load_max=max(step["load_max"], forward["load_max"]),
               other_cores_max=max(others, default=None), quiet=step["quiet"] and forward["quiet"],
               images_per_s=images_per_s, forward_s=forward["median_s"],
               achieved_gflops=inputs["flops"] / seconds / 1e9,
               matmul_fraction=inputs["flops"] / seconds / inputs["peak"],
               extrapolated_h=inputs["config"].training.total_images / images_per_s / 3600)
    return row


def torch_baseline(config, params, images: np.ndarray, steps_per_call: int) -> dict | None:
    """The same network and step in PyTorch: {step, forward} callables to time, version, threads
    (None without torch or for a class-conditional network, which the torch twin does not build)."""
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

    def forward():
        network.eval()
        with torch.no_grad():
            out = network(inputs, torch.zeros(len(inputs)))
        network.train()
        return out

    return {"step": run_steps, "forward": forward, "version": torch.__version__, "threads": torch.get_num_threads()}


def measure_fitting(preset: str, dtype: str, batch_size: int | None, steps_per_call: int,
                    model) -> tuple[dict, dict]:
    """measure(), halving the batch while the device reports RESOURCE_EXHAUSTED (down to MIN_BATCH)."""
    while True:
        try:
            return measure(preset, dtype, batch_size, steps_per_call, model)
        except jax.errors.JaxRuntimeError as error:
            batch_size = batch_size or load_config(f"{CONFIG_PATH}:{preset}").training.batch_size
            if "RESOURCE_EXHAUSTED" not in str(error) or batch_size // 2 < MIN_BATCH:
                raise
            batch_size //= 2


def run(size: str, edm_reference: str | None = None) -> list[dict]:
    """Rows per case and compute dtype; the PyTorch peers (the twin, and NVlabs's code with
    `edm_reference`) alternate with jaxmem's step and forward (see the module docstring)."""
    from jaxmem.benchmarks import nvlabs_edm

    rows = []
    for preset, dtypes, batch_size, rounds, steps_per_call, model, with_torch in CASES[size]:
        first = len(rows)
        for index, dtype in enumerate(dtypes):
            row, inputs = measure_fitting(preset, dtype, batch_size, steps_per_call, model)
            peers = {}
            if with_torch and index == 0:
                twin = torch_baseline(inputs["config"], inputs["params"], inputs["images"], steps_per_call)
                peers.update({"twin": twin} if twin else {})
                if edm_reference:
                    peers["reference"] = nvlabs_edm.build(edm_reference, inputs["config"], inputs["params"],
                                                          inputs["images"], steps_per_call)
            steps = {"jaxmem": inputs["step"], **{name: peer["step"] for name, peer in peers.items()}}
            forwards = {"jaxmem": inputs["forward"], **{name: peer["forward"] for name, peer in peers.items()}}
            step_t = alternate(steps, rounds=rounds, reference="jaxmem")
            forward_t = alternate(forwards, rounds=rounds, reference="jaxmem")
            rows.append(add_timings(row, inputs, step_t["jaxmem"], forward_t["jaxmem"]))
            primary = "reference" if "reference" in peers else "twin"
            for name, peer in peers.items():
                step_ratio, forward_ratio = step_t[name]["ratio_median"], forward_t[name]["ratio_median"]
                if name == primary:
                    row.update(ratio_vs_baseline=step_ratio, forward_ratio=forward_ratio,
                               ratio_min=step_t[name]["ratio_min"], ratio_max=step_t[name]["ratio_max"])
                else:
                    row.update(ratio_vs_twin=step_ratio, forward_ratio_vs_twin=forward_ratio)
                label = ("NVlabs/edm EDMPrecond + EDMLoss (its own code)" if name == "reference"
                         else "jaxmem's PyTorch twin of the same network and step")
                peer_row = {"entry": NAME, "method": f"{label}, PyTorch {peer['version']} ({peer['threads']} "
                            "threads) (baseline)", "shape": row["shape"], "ratio_vs_baseline": 1.0,
                            "forward_ratio": 1.0, "parameters": row["parameters"]}
                rows.append(add_timings(peer_row, inputs, step_t[name], forward_t[name]))
        for row in rows[first + 1:]:
            if row["method"].startswith("jaxmem"):  # images/s, since the batches measured may differ
                row["speedup_vs_float32"] = row["images_per_s"] / rows[first]["images_per_s"]
    return rows

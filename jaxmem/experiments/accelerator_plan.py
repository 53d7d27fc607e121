"""The accelerator plan: every paper-scale job compiled for TPU and GPU targets and costed
(launch/accelerator_plan.py; results/accelerator_plan/).

Each job is one launch/compile_check.py command (`JOBS`: config preset, overrides, targets,
programs); its workdir's compile_check.json holds per-device, per-call records (jaxmem.roofline).
From them:
  jobs table      per job and target: whether every program fits, the roofline device-hours of
                  the whole run (sum over programs of calls x bound x chips, times the job's
                  `runs`), and the wall-clock hours on that target (device-hours / chips)
  scaling table   the EDM step and the GMM `scale` grid at 8, 32 and 256 chips with the batch per
                  chip fixed: memory, compute bound, all-reduce bytes and their time at the
                  target's link bandwidth, and where data parallelism stops paying
  anchors         the published figure each job can be compared with (NVlabs EDM's CIFAR-10
                  training, 8 V100s for about 2 days) as a ratio of device-hours
Every figure is a compiler estimate or a roofline bound derived from one; none is measured.
"""

from __future__ import annotations

import dataclasses
import json
import os

GIB = 2**30
EDM_BATCH_PER_CHIP = 64  # the CIFAR-10 recipe's 512 images over 8 chips
EDM_1K = ("edm_1k_f32", "edm_1k_f32_h100x8")  # the jobs that compile EDM-1K's float32 programs


@dataclasses.dataclass(frozen=True)
class Job:
    """One compile-check command: `name` is its workdir under the plan's workdir; `runs` how many
    runs of that shape the job trains (a sweep's runs of one width)."""

    name: str
    config: str
    targets: tuple
    programs: tuple = ()
    overrides: tuple = ()
    runs: int = 1
    what: str = ""
    reuse: tuple = ()  # (jobs, program, calls): a program this job runs as compiled by other jobs

    def command(self, python: str, launcher: str, workdir: str) -> list[str]:
        return [python, launcher, f"--config={self.config}", *(f"--config.{k}={v}" for k, v in self.overrides),
                f"--target={','.join(self.targets)}", *([f"--programs={','.join(self.programs)}"] if self.programs else []),
                f"--workdir={os.path.join(workdir, self.name)}"]


PAPER_TARGETS = ("v5e-8", "h100x8")
JOBS = (
    # One job per target: a TPU compile of the CIFAR-10 network takes about an hour on this host.
    *(Job(name, "configs/edm_training.py:cifar10_1k", (target,), ("train_step", "sampler", "knn"),
          what="EDM-1K (paper A): 40 M images at batch 512, 1,000 Heun samples, their 1/3 test; float32")
      for name, target in (("edm_1k_f32", "v5e-8"), ("edm_1k_f32_h100x8", "h100x8"))),
    Job("edm_1k_v5p", "configs/edm_training.py:cifar10_1k", ("v5p-32",), ("train_step",),
        what="EDM-1K's train step on a v5p slice (16 chips, 32 images each)"),
    # bfloat16 on the GPU target only: one TPU compile of the CIFAR-10 network takes ~1 h on this 2-core host
    Job("edm_1k_bf16", "configs/edm_training.py:cifar10_1k", ("h100x8",), ("train_step", "sampler"),
        (("model.dtype", "bfloat16"),), what="EDM-1K in bfloat16 compute (parameters float32)"),
    # EDM-50K trains and samples the same programs as EDM-1K (same network, batch and sampler):
    # 200 M / 512 = 390,625 steps and ceil(50,000 / 256) = 196 sampling batches of those programs.
    Job("edm_50k_f32", "configs/edm_training.py:cifar10_50k", PAPER_TARGETS, ("knn", "fid_features"),
        (("sampling.num_samples", 50_000),),
        what="EDM-50K (paper A): 200 M images, 50,000 samples, the 1/3 test of 50,000 x 50,000 x 3,072, "
             "FID features of the 50,000 samples at batch 512",
        reuse=((EDM_1K, "train_step", 390_625), (EDM_1K, "sampler", 196))),
    Job("geometry_50k", "configs/noise_regimes.py:cifar10_50k", PAPER_TARGETS, (),
        (("concentration.num_points", 1_250), ("coverage.num_points", 1_250)),
        what="geometry kernels: Q 10,000 (1,250 points x 8 draws) x N 50,000 x d 3,072, 40 levels"),
    Job("crossover_paper", "configs/gmm_crossover.py:paper", PAPER_TARGETS,
        what="GMM laboratory, the paper's 64 configurations at its schedule (16 grids of 40 models)"),
    Job("crossover_scale", "configs/gmm_crossover.py:scale", PAPER_TARGETS,
        what="GMM laboratory at scale: N up to 10^4, d up to 3,072 (6 grids)"),
    *(Job(f"sweep_width{w}", "configs/edm_training.py:crossover_cifar10", ("h100x8",), ("train_step",),
          (("model.channels", w), ("model.embed_dim", 4 * w)), runs=5,
          what=f"U-Net capacity sweep, width {w}: 5 training-set sizes x 40 M images")
      for w in (32, 64, 96, 128)),
    *(Job(f"gpu_check_{d}", "configs/edm_training.py:cifar10_1k", ("h100x1", "h200x1"), ("train_step",), (("model.dtype", d),),
          what=f"bench:edm's step (batch 512, {d}) on one H100 / H200: what launch/gpu_check.py measures against")
      for d in ("float32", "bfloat16")),
    *(Job(f"scaling_edm_{t}", "configs/edm_training.py:cifar10_1k", (t,), ("train_step",),
          (("training.batch_size", EDM_BATCH_PER_CHIP * n),), what=f"EDM step, {EDM_BATCH_PER_CHIP} images per chip")
      for t, n in (("h100x32", 32), ("h100x256", 256))),
    *(Job(f"scaling_scale_{t}", "configs/gmm_crossover.py:scale", (t,), (), (("data.train_sizes", "(10000,)"),),
          what="GMM scale grid at N = 10^4 (3 sets per grid: chips beyond the set count idle)")
      for t in ("v5e-32", "v5e-256")),
)
JOBS_BY_NAME = {job.name: job for job in JOBS}
# Published anchors: (job, device-hours on their hardware, what).
ANCHORS = {"edm_50k_f32": (8 * 48, "NVlabs EDM README: CIFAR-10 DDPM++ (200 M images, batch 512) on 8 V100s, "
                                   "about 2 days = 384 V100-hours")}


def load(workdir: str, job: Job) -> dict | None:
    """The job's compile_check.json, or None when it has not run to its end."""
    path = os.path.join(workdir, job.name, "compile_check.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        report = json.load(f)
    return report if report.get("complete", True) else None


def gpu_check_predictions(workdir: str) -> list[dict]:
    """The gpu_check_* jobs' train-step records as launch/gpu_check.py reads them."""
    out = []
    for job in JOBS:
        report = load(workdir, job) if job.name.startswith("gpu_check_") else None
        for r in (report or {"records": []})["records"]:
            out.append({"dtype": dict(job.overrides)["model.dtype"], "batch": r["items"], "target": r["target"],
                        "bound_s": r["roofline"]["bound_s"], "peak_gib": r["memory"]["peak"] / GIB,
                        "gflop": r["flops"] / 1e9})
    return out


def job_rows(workdir: str) -> list[dict]:
    """Per job and target: fit, roofline device-hours and wall hours of the whole job."""
    rows = []
    for job in JOBS:
        report = load(workdir, job)
        if report is None:
            continue
        for target in job.targets:
            records = [r for r in report["records"] if r["target"] == target]
            borrowed = [(r, calls) for names, program, calls in job.reuse for name in names
                        for r in (load(workdir, JOBS_BY_NAME[name]) or {"records": []})["records"]
                        if r["target"] == target and r["program"] == program]
            if not records or len(borrowed) < len(job.reuse):
                continue
            hours = (sum(r["run_device_hours"] or 0.0 for r in records)
                     + sum(r["roofline"]["bound_s"] * calls * r["chips"] / 3600 for r, calls in borrowed)) * job.runs
            records += [r for r, _ in borrowed]
            anchor = ANCHORS.get(job.name)
            rows.append({
                "job": job.name, "target": target, "programs": len(records),
                "fits": all(r["fits"] for r in records),
                "peak_gib": max(r["memory"]["peak"] for r in records) / GIB,
                "hbm_gib": records[0]["hbm_bytes"] / GIB, "device_hours": hours,
                "wall_hours": hours / records[0]["chips"],
                "anchor_ratio": hours / anchor[0] if anchor else None,
                "failures": len([f for f in report["failures"] if f" on {target}:" in f])})
    return rows


def program_rows(workdir: str) -> list[dict]:
    """Every compiled record of every job, flattened for a table."""
    rows = []
    for job in JOBS:
        report = load(workdir, job) or {"records": []}
        for r in [r for r in report["records"] if r["target"] in job.targets]:
            line = r["roofline"] or {}
            rows.append({"job": job.name, "target": r["target"], "program": r["program"], "one_call": r["unit"],
                         "peak_gib": r["memory"]["peak"] / GIB, "hbm_gib": r["hbm_bytes"] / GIB, "fits": r["fits"],
                         "gflop": (r["flops"] or 0.0) / 1e9, "gb_accessed": (r["bytes_accessed"] or 0.0) / 1e9,
                         "xla_gflop": (r["xla_flops"] or 0.0) / 1e9,
                         "all_reduce_mb": r["collectives"].get("all-reduce", {}).get("result_bytes", 0) / 1e6,
                         "other_collectives": ",".join(k for k in r["collectives"] if k != "all-reduce") or "none",
                         "bound_ms": line.get("bound_s", 0.0) * 1e3, "limit": line.get("limit"),
                         "network_ms": line.get("network_s", 0.0) * 1e3, "compile_s": r["compile_s"],
                         "calls": r["calls"],
                         "run_device_hours": r["run_device_hours"]})
    return rows


def scaling_rows(workdir: str) -> list[dict]:
    """The train step (and scale grid) at 8, 32, 256 chips: compute and network bounds per call.

    For the EDM step the batch per chip is fixed, so compute per chip is fixed and the ring
    all-reduce of the gradients costs 2 (n-1)/n x their bytes per chip. With the global batch
    fixed instead (512), compute per chip falls as 1/n: `strong_scaling_chips` is the chip count
    at which the compute bound of 512 images falls to the all-reduce time, past which pure data
    parallelism stops paying (the next sharding: parameters and optimizer state split over the
    chips, which turns the all-reduce into a reduce-scatter plus an all-gather of the same bytes
    but divides the state's memory by n)."""
    rows = []
    for job in JOBS:
        report = load(workdir, job)
        if report is None or not (job.name.startswith("scaling_") or job.name in (*EDM_1K, "edm_1k_v5p",
                                                                                 "crossover_scale")):
            continue
        for r in [r for r in report["records"] if r["target"] in job.targets]:
            if r["program"] not in ("train_step",) and not r["program"].startswith("gmm_grid[d3072_n10000"):
                continue
            line = r["roofline"]
            compute_s = max(line["compute_s"], line["memory_s"])
            row = {"job": job.name, "target": r["target"], "chips": r["chips"], "program": r["program"],
                   "peak_gib": r["memory"]["peak"] / GIB, "compute_ms": compute_s * 1e3,
                   "all_reduce_mb": r["collectives"].get("all-reduce", {}).get("result_bytes", 0) / 1e6,
                   "network_ms": line["network_s"] * 1e3, "network_share": line["network_s"] / line["bound_s"]}
            if r["program"] == "train_step" and line["network_s"] > 0:
                per_image_s = compute_s * r["chips"] / r["items"]  # one chip's time per image
                row["strong_scaling_chips"] = 512 * per_image_s / line["network_s"]
            rows.append(row)
    return rows

"""Compiling for accelerator targets without a device: the HLO readers, the target table, the
programs built from shapes alone, and launch/compile_check.py end to end on a TPU and a GPU target.

The end-to-end tests run the launcher with .venv-accelerators/bin/python (`make accelerators`:
libtpu and the CUDA plugin, kept out of the test environment because the CUDA plugin prints driver
warnings in every jax process of a machine without a GPU).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem import programs, roofline, targets
from jaxmem.config import load_config
from jaxmem.validation import ConfigError
from jaxmem.denoisers import empirical
from jaxmem.experiments.gmm_crossover import grids

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCELERATORS_PYTHON = os.path.join(REPO, ".venv-accelerators", "bin", "python")
LAUNCHER = os.path.join(REPO, "launch", "compile_check.py")


# --- HLO readers and the roofline ----------------------------------------------------------------

def test_shape_bytes_of_arrays_and_tuples():
    assert roofline.shape_bytes("f32[3,3,128,128]{3,2,1,0}") == 4 * 3 * 3 * 128 * 128
    assert roofline.shape_bytes("(bf16[8,2]{1,0}, s32[4]{0})") == 2 * 16 + 4 * 4
    assert roofline.shape_bytes("f32[]") == 4


HLO = """HloModule jit_step

%body.1 (p: (s32[], f32[64])) -> (s32[], f32[64]) {
  %ar.2 = f32[64]{0} all-reduce(%x), channel_id=2, replica_groups=[1,8]<=[8], to_apply=%add
}

ENTRY %main (a: f32[1024], b: f32[8,16]) -> f32[1024] {
  %all-reduce-start = (f32[1024]{0}, f32[1024]{0}) all-reduce-start(%a), replica_groups=mesh['axis_0'=8,'axis_1'=1] {'axis_0'}, to_apply=%add
  %all-reduce-done = f32[1024]{0} all-reduce-done(%all-reduce-start)
  %ag = f32[8,16]{1,0} all-gather(%b), replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}
  ROOT %rs = f32[128]{0} reduce-scatter(%all-reduce-done), replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}
}
"""


def test_collectives_read_kind_bytes_group_and_loops():
    ops = roofline.collectives(HLO, num_devices=8)
    assert [op["kind"] for op in ops] == ["all-reduce", "all-reduce", "all-gather", "reduce-scatter"]
    loop, start, gather, scatter = ops
    assert loop["in_loop"] and loop["group"] == 8 and loop["result_bytes"] == 256
    assert not start["in_loop"] and start["result_bytes"] == 4096 and start["group"] == 8  # async pair halved
    assert start["bytes_sent"] == pytest.approx(2 * 7 / 8 * 4096)
    assert gather["group"] == 4 and gather["bytes_sent"] == pytest.approx(3 / 4 * 512)
    assert scatter["bytes_sent"] == pytest.approx(7 * 512)
    summary = roofline.summarize_collectives(ops)
    assert summary["all-reduce"]["count"] == 2 and summary["all-reduce"]["in_loop"] == 1


LOOP_HLO = """HloModule loop

%fused_dot (p0: f32[64,256], p1: f32[256,128]) -> f32[64,128] {
  %p0 = f32[64,256]{1,0} parameter(0)
  %p1 = f32[256,128]{1,0} parameter(1)
  ROOT %dot.1 = f32[64,128]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%body (state: (s32[], f32[64,256], f32[256,128])) -> (s32[], f32[64,256], f32[256,128]) {
  %state = (s32[], f32[64,256]{1,0}, f32[256,128]{1,0}) parameter(0)
  %a = f32[64,256]{1,0} get-tuple-element(%state), index=1
  %b = f32[256,128]{1,0} get-tuple-element(%state), index=2
  %fusion.1 = f32[64,128]{1,0} fusion(%a, %b), kind=kOutput, calls=%fused_dot
}

%cond (state.1: (s32[], f32[64,256], f32[256,128])) -> pred[] {
  %constant.7 = s32[] constant(12)
  %state.1 = (s32[], f32[64,256]{1,0}, f32[256,128]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%state.1), index=0
  ROOT %lt = pred[] compare(%i, %constant.7), direction=LT
}

ENTRY %main (x: f32[8,16,16,32], w: f32[3,3,32,64], dy: (f32[8,16,16,64]), s: (s32[], f32[64,256], f32[256,128])) -> f32[8,16,16,64] {
  %x = f32[8,16,16,32]{3,2,1,0} parameter(0)
  %w = f32[3,3,32,64]{3,2,1,0} parameter(1)
  %s = (s32[], f32[64,256]{1,0}, f32[256,128]{1,0}) parameter(3)
  %conv = f32[8,16,16,64]{3,2,1,0} convolution(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
  %cudnn = (f32[8,16,16,64]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convForward"
  %loop = (s32[], f32[64,256]{1,0}, f32[256,128]{1,0}) while(%s), condition=%cond, body=%body
  %loop.2 = (s32[], f32[64,256]{1,0}, f32[256,128]{1,0}) while(%s), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  ROOT %out = f32[8,16,16,64]{3,2,1,0} add(%conv, %conv)
}
"""


def test_matmul_flops_count_loops_fusions_convolutions_and_cudnn_calls():
    conv = 2 * (8 * 16 * 16 * 64) * (3 * 3 * 32)
    dot = 2 * 64 * 128 * 256
    assert roofline.matmul_flops(LOOP_HLO) == 2 * conv + 12 * dot + 3 * dot


def test_matmul_flops_of_a_compiled_scan_equal_the_arithmetic():
    """A scan of 10 steps, each two dots, split over 8 (fake CPU) devices: every step counted."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    def run(c, m):
        return jax.lax.scan(lambda c, mi: (jnp.tanh(c @ mi @ mi.T), None), c, m)[0]
    compiled = jax.jit(run).lower(jax.ShapeDtypeStruct((64, 256), jnp.float32, sharding=rows),
                                  jax.ShapeDtypeStruct((10, 256, 128), jnp.float32)).compile()
    per_device_rows = 64 // jax.device_count()
    assert roofline.matmul_flops(compiled.as_text()) == 10 * 2 * (2 * per_device_rows * 256 * 128)


def test_roofline_is_the_larger_bound_plus_the_network():
    target = targets.get_target("h100x8")
    bound = roofline.roofline(target, "bf16", flops=989.4e12, bytes_accessed=3.35e12 / 2, sent=450e9)
    assert bound["compute_s"] == pytest.approx(1.0) and bound["memory_s"] == pytest.approx(0.5)
    assert bound["network_s"] == pytest.approx(1.0) and bound["bound_s"] == pytest.approx(2.0)
    assert bound["limit"] == "compute"
    across = targets.get_target("h100x32")  # 4 hosts: the ring runs at the NIC's pace
    assert roofline.roofline(across, "bf16", 0.0, 0.0, 50e9)["network_s"] == pytest.approx(1.0)


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known targets: v5e-8, .*h100x8"):
        targets.get_target("v5litepod-8")


# --- programs from shapes alone ------------------------------------------------------------------

@pytest.mark.parametrize("preset, overrides", [
    ("smoke", {}),
    ("smoke", {"data.replication": "fraction", "data.replicated_fraction": 0.25, "data.copies": 3}),
])
def test_grid_shapes_equal_the_built_grid(preset, overrides):
    config = load_config(f"configs/gmm_crossover.py:{preset}")
    with config.unlocked():
        for field, value in overrides.items():
            group, name = field.split(".")
            config[group][name] = value
    for grid in grids.grids_of(config):
        _, params, batch, rngs = grids.build_grid(config, grid.dim, grid.data_sets)
        shapes = grids.grid_shapes(config, grid.dim, grid.train_sizes)
        built = jax.tree_util.tree_map(lambda x: (np.shape(x), np.asarray(x).dtype), (params, batch, rngs))
        abstract = jax.tree_util.tree_map(lambda s: (s.shape, np.dtype(s.dtype)), shapes)
        assert built == abstract


def test_empirical_param_shapes_equal_make_params():
    train = np.random.default_rng(0).standard_normal((300, 12)).astype(np.float32)
    made = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), empirical.make_params(train, 128))
    shapes = jax.tree_util.tree_map(lambda s: (s.shape, s.dtype), empirical.param_shapes(300, 12, 128))
    assert made == shapes


def test_gmm_grid_program_shards_sets_without_collectives():
    """On 8 (fake CPU) devices the grid's sets are split over the mesh: no device talks to another."""
    config = load_config("configs/gmm_crossover.py:smoke")
    (program,) = programs.programs_of("gmm_crossover", config, jax.devices())
    compiled = program.fn.lower(*program.args, *program.static).compile()
    assert program.args[0].params["means"].shape[0] % jax.device_count() == 0
    ops = roofline.collectives(compiled.as_text(), jax.device_count())
    assert [op for op in ops if op["result_bytes"] > 64] == []  # at most the scalar metrics


def test_unknown_family_is_refused():
    with pytest.raises(ConfigError, match="families: edm_training, noise_regimes, gmm_crossover, sample_quality"):
        programs.programs_of("denoiser_swaps", load_config("configs/denoiser_swaps.py:smoke"), jax.devices())


# --- launch/compile_check.py on compile-only TPU and GPU devices -------------------------------------

def _launch(tmp_path, *flags, python=ACCELERATORS_PYTHON, name="run"):
    if not os.path.exists(python):
        pytest.fail(f"{python} is missing; `make accelerators` creates it (make test does)")
    workdir = tmp_path / name
    result = subprocess.run([python, LAUNCHER, f"--workdir={workdir}", *flags], capture_output=True, text=True,
                            cwd=REPO, timeout=900, env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
    report = workdir / "compile_check.json"
    return result, (json.loads(report.read_text()) if report.exists() else None)


@pytest.mark.slow
def test_grid_compiles_for_tpu_and_gpu_targets(tmp_path):
    result, report = _launch(tmp_path, "--config=configs/gmm_crossover.py:smoke", "--target=v5e-8,h100x8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| v5e-8 | gmm_grid[d6] |" in result.stdout and "| h100x8 | gmm_grid[d6] |" in result.stdout
    tpu, gpu = report["records"]
    for record in (tpu, gpu):
        memory = record["memory"]
        assert memory["argument"] > 0 and 0 < memory["peak"] <= record["hbm_bytes"] and record["fits"]
        assert record["flops"] > 0 and record["roofline"]["bound_s"] > 0 and record["compile_s"] > 0
    assert tpu["xla_flops"] > 0 and gpu["xla_flops"] is None  # the CUDA plugin has no cost analysis without a GPU
    assert gpu["matmul_flops"] == pytest.approx(tpu["matmul_flops"], rel=1e-6)  # the same dots on both
    assert tpu["hbm_bytes"] == 16 * 2**30 and gpu["hbm_bytes"] == 85_520_809_984  # an H100 80GB reports 79.6 GiB


@pytest.mark.slow
def test_data_parallel_step_all_reduces_gradients_and_never_gathers_the_batch(tmp_path):
    result, report = _launch(tmp_path, "--config=configs/edm_training.py:smoke", "--target=v5e-8", "--programs=train_step")
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = report["records"]
    collectives = record["collectives"]
    assert set(collectives) == {"all-reduce"}, collectives  # no all-gather, reduce-scatter, all-to-all
    from jaxmem.train import trainer  # the parameter count of the same network
    from jaxmem.denoisers import unet
    config = load_config("configs/edm_training.py:smoke")
    num_params = unet.count_params(trainer.build_program(config, unet.input_shape(config.model)).state_shapes.params)
    reduced = collectives["all-reduce"]["result_bytes"]
    # float32 gradients (+ the loss metrics); XLA folds a few hundred of the 177 k gradient values
    # into other reductions, so at least 99% of the gradient bytes go through the all-reduces
    assert 0.99 * 4 * num_params <= reduced <= 4 * num_params + 1024


@pytest.mark.slow
def test_a_program_that_does_not_fit_is_one_error_line(tmp_path):
    result, report = _launch(tmp_path, "--config=configs/gmm_crossover.py:smoke", "--target=v5e-8",
                             "--config.data.dims=(60000,)", "--config.data.train_sizes=(20000,)")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gmm_grid[d60000] on v5e-8" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and report["failures"]


@pytest.mark.slow
def test_bad_targets_are_refused_before_any_work(tmp_path):
    result, _ = _launch(tmp_path, "--config=configs/gmm_crossover.py:smoke", "--target=v5litepod-8")
    assert result.returncode == 2 and "known targets: v5e-8" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error:")
    missing, _ = _launch(tmp_path, "--config=configs/gmm_crossover.py:smoke", "--target=v5e-8", python=sys.executable,
                         name="missing")
    assert missing.returncode == 2 and "make accelerators" in missing.stderr and "Traceback" not in missing.stderr
    family, _ = _launch(tmp_path, "--config=configs/denoiser_swaps.py:smoke", "--target=v5e-8", name="family")
    assert family.returncode == 2 and "'edm_training', 'noise_regimes', 'gmm_crossover', 'sample_quality'" in family.stderr


# --- the plan's tables and the GPU check's predictions -----------------------------------------------

def _record(target, chips, program, items, calls, bound_s, network_s, peak, all_reduce=0):
    return {"target": target, "chips": chips, "program": program, "unit": f"{items} things", "items": items,
            "calls": calls, "memory": {"peak": peak}, "hbm_bytes": 16 * 2**30, "fits": peak <= 16 * 2**30,
            "flops": 1e12, "xla_flops": 1e12, "bytes_accessed": 1e9, "compile_s": 1.0,
            "collectives": {"all-reduce": {"result_bytes": all_reduce}} if all_reduce else {},
            "roofline": {"compute_s": bound_s - network_s, "memory_s": 0.0, "network_s": network_s,
                         "bound_s": bound_s, "limit": "compute"},
            "run_device_hours": calls * bound_s * chips / 3600}


def test_plan_tables_sum_programs_and_find_the_strong_scaling_limit(tmp_path):
    from jaxmem.experiments import accelerator_plan as plan
    (tmp_path / "edm_1k_f32").mkdir()
    (tmp_path / "edm_1k_f32_h100x8").mkdir()
    records = [_record("v5e-8", 8, "train_step", 512, 3600, 0.5, 0.1, 2**30, all_reduce=4 * 10**8),
               _record("v5e-8", 8, "sampler", 256, 36, 1.0, 0.0, 2 * 2**30)]
    (tmp_path / "edm_1k_f32" / "compile_check.json").write_text(json.dumps({"records": records, "failures": []}))
    (tmp_path / "edm_1k_f32_h100x8" / "compile_check.json").write_text(json.dumps(
        {"records": [_record("h100x8", 8, "train_step", 512, 3600, 0.2, 0.05, 100 * 2**30)],
         "failures": ["train_step on h100x8: does not fit: ..."]}))
    jobs = {row["target"]: row for row in plan.job_rows(str(tmp_path))}
    assert jobs["v5e-8"]["device_hours"] == pytest.approx((3600 * 0.5 + 36 * 1.0) * 8 / 3600)
    assert jobs["v5e-8"]["wall_hours"] == pytest.approx(jobs["v5e-8"]["device_hours"] / 8)
    assert jobs["v5e-8"]["fits"] and not jobs["h100x8"]["fits"] and jobs["h100x8"]["failures"] == 1
    (tmp_path / "edm_50k_f32").mkdir()  # borrows EDM-1K's train step and sampler, at its own call counts
    (tmp_path / "edm_50k_f32" / "compile_check.json").write_text(json.dumps(
        {"records": [_record("v5e-8", 8, "knn", 4096, 13, 0.01, 0.0, 2**30)], "failures": []}))
    (fifty,) = [row for row in plan.job_rows(str(tmp_path)) if row["job"] == "edm_50k_f32"]
    assert fifty["device_hours"] == pytest.approx((13 * 0.01 + 390_625 * 0.5 + 196 * 1.0) * 8 / 3600)
    assert fifty["programs"] == 3
    (scaling,) = [row for row in plan.scaling_rows(str(tmp_path)) if row["target"] == "v5e-8"]
    per_image_s = 0.4 * 8 / 512  # one chip's compute per image
    assert scaling["strong_scaling_chips"] == pytest.approx(512 * per_image_s / 0.1)
    assert scaling["network_share"] == pytest.approx(0.2) and scaling["all_reduce_mb"] == pytest.approx(400)


def test_gpu_report_sets_predictions_beside_measurements():
    from jaxmem.benchmarks import gpu_report
    summary = {"stages": [{"stage": "env", "details": {"device_kind": "NVIDIA H100 80GB HBM3"}},
                          {"stage": "bench:edm", "details": {"rows": [
        {"entry": "edm", "method": "jaxmem EDM train step (cifar10_1k, float32)", "shape": "batch 512 x 32x32x3",
         "median_s": 0.25, "peak_gib": 30.0},
        {"entry": "edm", "method": "jaxmem EDM train step (cifar10_1k, bfloat16)", "shape": "batch 256 x 32x32x3",
         "median_s": 0.1}]}}],
        "predictions": [{"dtype": "float32", "batch": 512, "target": "h100x1", "bound_s": 0.1, "peak_gib": 28.0},
                        {"dtype": "float32", "batch": 512, "target": "h200x1", "bound_s": 0.09, "peak_gib": 28.0},
                        {"dtype": "bfloat16", "batch": 512, "target": "h100x1", "bound_s": 0.05, "peak_gib": 15.0}]}
    f32, bf16 = gpu_report.prediction_rows(summary)
    assert f32["bound / measured"] == "0.4" and f32["measured (ms)"] == "250" and f32["peak GiB measured"] == "30"
    assert bf16["measured (ms)"] == "n/a"  # the bf16 measurement ran at another batch: no pairing


def test_flops_are_xlas_without_loops_and_the_full_loop_count_with_them():
    assert roofline.choose_flops(100.0, 120.0, 120.0) == 100.0  # no loop: XLA's count (no padding taps)
    assert roofline.choose_flops(100.0, 1200.0, 120.0) == 1200.0  # a loop body runs 10 times
    assert roofline.choose_flops(None, 120.0, 120.0) == 120.0  # no cost analysis (CUDA without a GPU)
    assert roofline.matmul_flops(LOOP_HLO, count_loops=False) == roofline.matmul_flops(LOOP_HLO) - 13 * 2 * 64 * 128 * 256

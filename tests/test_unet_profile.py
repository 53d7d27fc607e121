"""The per-operation profiles of jaxmem.benchmarks.profile (launch/bench.py --profile): the wall
time split over overlapping operations, and a quick-size run whose tables add up to the calls'
wall time and name the convolution directions of both sides. No timing thresholds."""

import json
import os
import subprocess
import sys

import pytest

from jaxmem.benchmarks import profile


def test_split_wall_time_shares_overlaps_and_sums_to_the_window():
    # a runs 0-10 alone except 4-6 beside b; nothing runs 10-12; c runs 12-20 past the window's end
    spans = [(0, 10, "a"), (4, 6, "b"), (12, 30, "c")]
    split = profile.split_wall_time((0, 20), spans)
    assert split == {"a": 4 + 1 + 4, "b": 1, "runtime": 2, "c": 8}
    assert sum(split.values()) == 20
    assert profile.split_wall_time((0, 5), []) == {"runtime": 5}


def test_hlo_instructions_are_classified_by_direction_and_shape():
    text = """HloModule m

ENTRY %main (p0: f32[8,16,16,32], p1: f32[3,3,32,64]) -> f32[64] {
  %p0 = f32[8,16,16,32]{3,2,1,0} parameter(0)
  %p1 = f32[3,3,32,64]{3,2,1,0} parameter(1)
  %convolution.1 = f32[8,16,16,64]{3,2,1,0} convolution(%p0, %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(step)/jvp(SongUNet)/enc_16x16_block0/conv0/conv_general_dilated"}
  %convolution.2 = f32[8,16,16,32]{3,2,1,0} convolution(%convolution.1, %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
  %copy.3 = f32[8,16,16,32]{3,2,1,0} copy(%convolution.2), metadata={op_name="jit(step)/transpose(jvp(SongUNet))/enc_16x16_block0/conv0/conv_general_dilated"}
  %transpose.4 = f32[32,16,16,8]{3,2,1,0} transpose(%p0), dimensions={3,1,2,0}
  %convolution.5 = f32[32,3,3,64]{3,2,1,0} convolution(%transpose.4, %convolution.1), window={size=16x16 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(step)/transpose(jvp(SongUNet))/enc_16x16_block0/conv0/conv_general_dilated"}
  ROOT %reduce.6 = f32[64]{0} reduce(%convolution.5), metadata={op_name="jit(step)/transpose(jvp(SongUNet))/enc_16x16_block0/norm1/reduce_sum"}
}
"""
    hlo = profile.parse_hlo(text)
    classify = lambda name: profile.classify_hlo(hlo[name], hlo)  # noqa: E731
    assert classify("convolution.1") == ("convolution forward", "3x3 32->64 @16")
    assert classify("convolution.2") == ("convolution backward-data", "3x3 32->64 @16")  # op_name from its user
    assert classify("convolution.5") == ("convolution backward-filter", "3x3 32->64 @16")
    assert classify("copy.3")[0] == "copies, transposes, concatenation"
    assert classify("reduce.6") == ("group norm", "backward")


@pytest.mark.slow
def test_quick_profiles_add_up_to_the_calls_and_hold_the_convolutions(tmp_path):
    pytest.importorskip("torch")
    out = profile.run("quick", str(tmp_path), calls=1)
    assert [case["program"] for case in out["cases"]] == ["step", "forward"]
    for case in out["cases"]:
        assert set(case["sides"]) == {"jaxmem", "torch twin"}
        for name, side in case["sides"].items():
            total = sum(side["categories"].values())
            assert total == pytest.approx(side["wall_ms"], rel=0.01), (case["case"], name)
            assert side["wall_ms"] <= side["timed_ms"] * 1.001, (case["case"], name)
            assert set(side["categories"]) <= set(profile.CATEGORIES)
            assert side["categories"].get("convolution forward", 0) > 0, (case["case"], name)
        jaxmem, twin = case["sides"]["jaxmem"]["categories"], case["sides"]["torch twin"]["categories"]
        backward = ("convolution backward-data", "convolution backward-filter")
        if case["program"] == "step":
            assert all(jaxmem.get(c, 0) > 0 for c in backward)
            assert twin.get("convolution backward (data+filter)", 0) > 0
        else:
            assert not any(jaxmem.get(c) for c in backward) and not twin.get("convolution backward (data+filter)")
    with open(os.path.join(tmp_path, "profile.json")) as f:
        assert json.load(f)["size"] == "quick"
    text = open(os.path.join(tmp_path, "profile.md")).read()
    assert "| convolution forward |" in text and "| **call (wall)** |" in text


def test_bench_launcher_refuses_profile_without_only_edm(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(repo, "launch", "bench.py"), "--only=knn", "--profile",
                          f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": repo})
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == "error: --profile profiles the edm entry only; give --only=edm (got --only=knn)"

"""The geometry bench entry at a toy size: rows, keys, and agreement of the two methods."""

from jaxmem.benchmarks import geometry as bench


def test_geometry_bench_entry_rows(monkeypatch):
    monkeypatch.setitem(bench.SIZES, "quick", (16, 64, 32, 32, 1))
    monkeypatch.setattr(bench, "matmul_rate", lambda: 1e9)  # the roofline's own timing is not under test
    rows = bench.run("quick")
    assert [row["method"] for row in rows] == ["shared_matmul", "per_sigma (baseline)"]
    for row in rows:
        assert {"entry", "method", "median_s", "ratio_vs_baseline", "matmul_fraction"} <= set(row)
        assert row["entry"] == "geometry" and row["median_s"] > 0
    assert rows[1]["ratio_vs_baseline"] == 1.0 and rows[0]["ratio_vs_baseline"] > 0
    assert rows[0]["max_abs_diff_W"] < 1e-4

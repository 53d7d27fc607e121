"""The paper's grid analysis: the fitted loss weighting against closed forms, and the pooled sweep
(fits per (d, K), the homogeneity test, the three levels, the weighting's held-out error) on
synthetic run folders whose answers are known."""

import json
import os

import numpy as np
import pytest

from jaxmem import io
from jaxmem.experiments.gmm_crossover import paper_grid, weighting_fit

TIMES = np.linspace(0.001, 0.999, 6)


def _linear_baselines(rng, true_w, m_pt, n, num_j=11):
    """Baselines with pmem_t(M) = a_t - b_t M (linear: interpolation is exact) whose crossing under
    the x0 weights true_w is exactly m_pt: gen_t = a_t - b_t m_pt + r_t with r orthogonal to true_w."""
    a = rng.uniform(5.0, 10.0, TIMES.size)
    b = rng.uniform(0.5, 2.0, TIMES.size) / n
    r = rng.normal(size=TIMES.size)
    r -= true_w * (r @ true_w) / (true_w @ true_w)
    pmem_m = np.linspace(0.3 * n, n, num_j)
    return dict(times=TIMES, gen_loss=a - b * m_pt + 0.5 * r, pmem_M=pmem_m,
                pmem_loss=a[None, :] - b[None, :] * pmem_m[:, None])


def test_gap_slope_and_the_exact_crossing_match_closed_forms_on_linear_losses():
    rng = np.random.default_rng(0)
    w = rng.uniform(0.1, 1.0, TIMES.size)
    base = _linear_baselines(rng, w, m_pt=61.3, n=80)
    gap, slope = weighting_fit.gap_and_slope(base["pmem_M"], base["pmem_loss"], base["gen_loss"], 61.3)
    b = (base["pmem_loss"][0] - base["pmem_loss"][1]) / (base["pmem_M"][1] - base["pmem_M"][0])
    np.testing.assert_allclose(slope, b, rtol=1e-12)
    assert gap @ w == pytest.approx(0.0, abs=1e-12)  # the crossing under w is m_pt
    predicted = weighting_fit.predicted_capacities(w, base["pmem_M"][None], base["pmem_loss"][None],
                                                   base["gen_loss"][None])
    assert predicted[0] == pytest.approx(61.3, rel=1e-12)
    # another weighting: the closed-form crossing (a - gen) . u / (b . u)
    u = np.ones(TIMES.size)
    a = base["pmem_loss"][0] + b * base["pmem_M"][0]
    expected = (a - base["gen_loss"]) @ u / (b @ u)
    got = weighting_fit.predicted_capacities(u, base["pmem_M"][None], base["pmem_loss"][None], base["gen_loss"][None])
    assert got[0] == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="capacity"):
        weighting_fit.gap_and_slope(base["pmem_M"], base["pmem_loss"], base["gen_loss"], 200.0)


def test_the_fit_recovers_a_weighting_that_predicts_every_crossing():
    rng = np.random.default_rng(1)
    true_w = np.array([0.0, 0.05, 0.4, 0.3, 0.25, 0.0])
    sets = [(_linear_baselines(rng, true_w, 0.8 * n, n), 0.8 * n, n) for n in rng.choice([50, 100, 150, 200], 40)]
    parts = [weighting_fit.gap_and_slope(b["pmem_M"], b["pmem_loss"], b["gen_loss"], m) for b, m, _ in sets]
    gaps, slopes = np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
    sizes = np.array([n for _, _, n in sets])
    w = weighting_fit.fit_weights(gaps[:20], slopes[:20], sizes[:20])
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    held_out = weighting_fit.first_order_errors(w, gaps[20:], slopes[20:], sizes[20:])
    uniform = weighting_fit.first_order_errors(np.ones(TIMES.size), gaps[20:], slopes[20:], sizes[20:])
    assert np.max(np.abs(held_out)) < 1e-5 < np.max(np.abs(uniform))


def _fake_sweep(root, slope_of, rng):
    """Run folders as the paper-grid sweep leaves them: per d a crossover.csv and per (d, N) the first
    grid's result.npz; M_pt = slope_of(d, K) N + noise, baselines crossing at M_pt under true_w."""
    true_w = np.array([0.1, 0.3, 0.3, 0.2, 0.1, 0.0])
    for d in (30, 40):
        run = os.path.join(root, f"data.dims={d}")
        rows = []
        for n in (50, 100, 150, 200):
            grid = dict(set_K=[], set_N=[], set_seed=[], gen_loss=[], pmem_M=[], pmem_loss=[])
            for k in (3, 6):
                for seed in (0, 1):
                    m_pt = slope_of(d, k) * n + rng.normal(0.0, 0.5)
                    base = _linear_baselines(rng, true_w, m_pt, n)
                    for key, value in (("set_K", k), ("set_N", n), ("set_seed", seed)):
                        grid[key].append(value)
                    for key in ("gen_loss", "pmem_M", "pmem_loss"):
                        grid[key].append(base[key])
                    rows.append(dict(d=d, K=k, N=n, seed=seed, M_pt=m_pt, window_start=0.65 * n, window_end=0.95 * n,
                                     Mstar_measured_x0=0.8 * n, Mstar_measured_eps=n, models=6))
            os.makedirs(os.path.join(run, f"d{d}_n{n}"))
            io.save_npz(os.path.join(run, f"d{d}_n{n}", "result.npz"), times=TIMES,
                        **{key: np.array(value) for key, value in grid.items()})
        io.write_csv(os.path.join(run, "crossover.csv"), rows)


def test_the_sweep_hook_pools_fits_tests_and_fits_the_weighting(tmp_path):
    _fake_sweep(str(tmp_path), lambda d, k: 0.8, np.random.default_rng(2))
    lines = paper_grid.analyze([], str(tmp_path))
    summary = json.loads((tmp_path / "paper_grid.json").read_text())
    assert summary["fit"]["slope"] == pytest.approx(0.8, abs=0.01) and summary["fit"]["points"] == 32
    assert len(summary["fits_by_dk"]) == 4 and summary["homogeneity"]["dof"] == 3
    assert summary["homogeneity"]["p_value"] > 0.001 and summary["homogeneity"]["f_p_value"] > 0.001  # one slope
    levels = {lv["level"]: lv for lv in summary["levels"]}
    assert levels["window_start"]["slope"] == pytest.approx(0.65) and levels["window_end"]["slope"] == pytest.approx(0.95)
    errors = {(e["weighting"], e["split"]): e for e in summary["weighting_errors"]}
    assert errors[("fitted", "held_out")]["max_abs"] < 1e-4 < errors[("x0", "held_out")]["max_abs"]
    assert errors[("fitted", "held_out")]["data_sets"] == 16
    for name in ("data_sets.csv", "configurations.csv", "fits_by_dk.csv", "levels.csv", "weighting.csv",
                 "weighting_errors.csv", "paper_grid.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert summary["files"]["levels"] == "levels.csv" and summary["files"]["figure"] == "paper_grid.png"  # movable
    assert len((tmp_path / "configurations.csv").read_text().splitlines()) == 1 + 16
    assert any("chi^2" in line for line in lines)


def test_a_slope_that_depends_on_k_fails_the_homogeneity_test(tmp_path):
    _fake_sweep(str(tmp_path), lambda d, k: 0.7 if k == 3 else 0.9, np.random.default_rng(3))
    paper_grid.analyze([], str(tmp_path))
    test = json.loads((tmp_path / "paper_grid.json").read_text())["homogeneity"]
    assert test["p_value"] < 1e-6 and test["f_p_value"] < 1e-6
    groups = json.loads((tmp_path / "paper_grid.json").read_text())["fits_by_dk"]
    assert sum(g["z"] ** 2 for g in groups) == pytest.approx(test["chi2"])
    assert test["per_K"] == pytest.approx(0.2 / 3, rel=0.1)  # (0.9 - 0.7) / (6 - 3)


def test_an_empty_root_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no crossover.csv"):
        paper_grid.analyze([], str(tmp_path))


def test_the_common_slope_f_test_equals_two_nested_least_squares_fits():
    """F from the closed form against the residuals of the two models fitted with dummy columns."""
    rng = np.random.default_rng(5)
    rows = [dict(d=d, K=k, N=n, M_pt=(0.78 + 0.01 * k / 3) * n + d / 30 + rng.normal(0, 1.5), seed=s)
            for d in (30, 40) for k in (3, 6) for n in (50, 100, 150, 200) for s in (0, 1)]
    test = paper_grid.common_slope_test(rows)
    keys = sorted({(r["d"], r["K"]) for r in rows})
    group = np.array([keys.index((r["d"], r["K"])) for r in rows])
    n_col, y = np.array([r["N"] for r in rows], np.float64), np.array([r["M_pt"] for r in rows])
    dummies = np.eye(len(keys))[group]
    common = np.column_stack([dummies, n_col])
    separate = np.column_stack([dummies, dummies * n_col[:, None]])
    rss = [np.sum((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2) for x in (common, separate)]
    f = ((rss[0] - rss[1]) / (len(keys) - 1)) / (rss[1] / (len(rows) - 2 * len(keys)))
    assert test["f"] == pytest.approx(f, rel=1e-9) and test["f_dof"] == [3, 24]
    assert test["common_slope"] == pytest.approx(np.linalg.lstsq(common, y, rcond=None)[0][-1], rel=1e-9)

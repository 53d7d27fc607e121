"""Adaptive capacity search: planted transitions (and both ends of a planted window) are found
to the tolerance; the adaptive crossover, search and window rounds, resumes after a kill in the
middle of a round to the same answer."""

import json
import os

import numpy as np
import pytest

from jaxmem import theory
from jaxmem.experiments import gmm_crossover as crossover
from jaxmem.experiments.gmm_crossover import search as capacity_search
from jaxmem.config import load_config


def _search(ratio_of, num_train, predicted, points=3, span=0.25, tolerance=0.02, rounds=10):
    """Runs the search against a synthetic ratio(M); returns (M tried, ratios, rounds used)."""
    tried = capacity_search.first_round(num_train, predicted, points, span)
    ratios = ratio_of(tried)
    for used in range(1, rounds + 1):
        new = capacity_search.next_round(tried, ratios, num_train, points, tolerance * num_train)
        if new.size == 0:
            return tried, ratios, used
        tried, ratios = np.append(tried, new), np.append(ratios, ratio_of(new))
    return tried, ratios, rounds + 1


@pytest.mark.parametrize("num_train, m_true, predicted", [
    (200, 153.6, 158.8),   # the anchor: prediction close to the transition
    (400, 250.0, 330.0),   # transition below the first round
    (100, 97.5, 60.0),     # transition above the first round
    (50, 12.3, 40.0),      # far below
])
def test_search_brackets_a_planted_transition_to_the_tolerance(num_train, m_true, predicted):
    def ratio_of(m):  # a steep logistic transition at m_true
        return 1.0 / (1.0 + np.exp(-(np.asarray(m, np.float64) - m_true) / (0.01 * num_train)))

    tried, ratios, rounds = _search(ratio_of, num_train, predicted)
    lo, hi, hi_tried = capacity_search.bracket(tried, ratios, num_train)
    assert hi_tried and lo < m_true <= hi and hi - lo <= 0.02 * num_train
    m_pt = theory.first_crossing(np.sort(tried), ratios[np.argsort(tried)], 0.5)
    assert abs(m_pt - m_true) <= 0.02 * num_train
    assert len(tried) <= 15 < 50  # a fixed grid needs 50 points for the same 0.02 N resolution
    assert len(np.unique(tried)) == len(tried) and tried.min() >= 1 and tried.max() <= num_train


def test_search_without_a_transition_stops_at_n():
    tried, ratios, _ = _search(lambda m: np.zeros(len(m)), 100, 80.0)
    assert tried.max() == 100 and np.isnan(theory.first_crossing(np.sort(tried), ratios, 0.5))
    assert capacity_search.next_round(tried, ratios, 100, 3, 2.0).size == 0


def test_search_bad_input_names_the_field():
    with pytest.raises(ValueError, match="model.search_tolerance"):
        capacity_search.next_round([10], [0.0], 100, 3, 0.0)
    with pytest.raises(ValueError, match="model.search_points"):
        capacity_search.first_round(100, 50.0, 0, 0.25)


def test_window_rounds_bracket_both_ends_of_a_planted_window():
    """A wide logistic transition the 0.5 search leaves without a window end: the window rounds
    find both first crossings (0.1 and 0.9) to the window tolerance, with N trained."""
    from jaxmem.experiments.gmm_crossover.analysis import transition_window
    from jaxmem.experiments.gmm_crossover.rounds import window_capacities

    num_train, center, width = 200, 120.0, 12.0
    true_start, true_end = center - width * np.log(9.0), center + width * np.log(9.0)  # 93.6, 146.4

    def ratio_of(m):
        return 1.0 / (1.0 + np.exp(-(np.asarray(m, np.float64) - center) / width))

    tried, ratios, _ = _search(ratio_of, num_train, 100.0)
    assert np.isnan(transition_window(np.sort(tried), ratios[np.argsort(tried)], 0.1)[1])  # the search stops short
    config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs/gmm_crossover.py") + ":curve")
    with config.unlocked():
        config.model.update(window_rounds=6, window_tolerance=0.03)
    for _ in range(config.model.window_rounds):
        result = dict(set_K=np.array([12]), set_N=np.array([num_train]), set_seed=np.array([0]),
                      K=np.full(len(tried), 12), N=np.full(len(tried), num_train), seed=np.zeros(len(tried), int),
                      M=tried, ratio=ratios)
        (new,) = window_capacities(result, config.eval.delta, config.model.search_points,
                                   config.model.window_tolerance)
        if new.size == 0:
            break
        assert not np.isin(new, tried).any() and new.min() >= 1 and new.max() <= num_train
        tried, ratios = np.append(tried, new), np.append(ratios, ratio_of(new))
    else:
        pytest.fail("the window rounds did not end")
    order = np.argsort(tried)
    start, end = transition_window(tried[order], ratios[order], 0.1)
    assert num_train in tried
    assert abs(start - true_start) <= 0.03 * num_train and abs(end - true_end) <= 0.03 * num_train


@pytest.fixture
def adaptive(request):
    from tests.conftest import REPO

    config = load_config(os.path.join(REPO, "configs/gmm_crossover.py") + ":smoke")
    with config.unlocked():
        config.data.train_sizes = (12,)
        config.model.update(search="adaptive", search_points=2, search_tolerance=0.1, search_rounds=1,
                            window_rounds=1, window_tolerance=0.01)
        config.training.update(steps=20, chunk_steps=10, peak_lr=0.1, estimator="stratified")
        config.sampling.num_samples = 16
    return config


@pytest.mark.slow
def test_adaptive_crossover_resumes_after_a_kill_mid_round(adaptive, tmp_path, monkeypatch):
    whole = crossover.run(adaptive, str(tmp_path / "whole"))
    rounds = sorted(n for n in os.listdir(tmp_path / "whole" / "d6") if n.startswith("round"))
    assert rounds, "the smoke transition needs at least one search round"
    assert os.path.exists(tmp_path / "whole" / "d6" / "window1" / "result.npz")  # then the window's ends
    row = whole["rows"][0]
    assert row["models"] >= 3 and row["bracket_lo"] < row["M_pt"] <= row["bracket_hi"]

    class Killed(Exception):
        pass

    train_grid = crossover.gmm_grid.train_grid

    def killed_in_round1(*args, name="", **kwargs):
        def kill(state, step):
            if name.startswith("round1"):
                raise Killed(step)
        return train_grid(*args, name=name, on_chunk=kill, **kwargs)

    monkeypatch.setattr(crossover.gmm_grid, "train_grid", killed_in_round1)
    with pytest.raises(Killed):
        crossover.run(adaptive, str(tmp_path / "killed"))
    monkeypatch.setattr(crossover.gmm_grid, "train_grid", train_grid)
    resumed = crossover.run(adaptive, str(tmp_path / "killed"))
    assert json.dumps(resumed["rows"]) == json.dumps(whole["rows"])


def test_compare_runs_flags_ratio_gaps_and_windows():
    from jaxmem.experiments.gmm_crossover.report import compare_runs

    base = dict(d=50, K=12, N=200, seed=0)
    reference = [dict(base, M=m, ratio=r) for m, r in [(100, 0.0), (150, 0.5), (200, 1.0)]]
    candidate = [dict(base, M=m, ratio=r) for m, r in [(100, 0.05), (150, 0.7), (180, 0.9)]]
    per_capacity, per_set = compare_runs(reference, candidate, [dict(base, M_pt=150, window_start=120, window_end=180)],
                                         [dict(base, M_pt=190)])
    assert [(r["M"], r["within"]) for r in per_capacity] == [(100, True), (150, False)]
    assert per_capacity[1]["abs_difference"] == pytest.approx(0.2)
    assert per_set[0]["inside_window"] is False and per_set[0]["M_pt_candidate"] == 190


def test_adaptive_config_rejects_a_non_positive_tolerance(adaptive):
    with adaptive.unlocked():
        adaptive.model.update(search_tolerance=0.1, window_rounds=-1)
    with pytest.raises(ValueError, match=r"model.window_rounds = -1 is invalid"):
        crossover.validate_config(adaptive)
    with adaptive.unlocked():
        adaptive.model.search_tolerance = 0.0
    with pytest.raises(ValueError, match=r"model.search_tolerance = 0.0 is invalid.*positive"):
        crossover.validate_config(adaptive)

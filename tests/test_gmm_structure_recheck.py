"""launch/gmm_structure_recheck.py (jaxmem.experiments.gmm_crossover.structure_recheck): the
committed results/gmm_structure folder gives the committed recheck.md byte for byte; the
Clopper-Pearson interval against closed forms; a missing table is one error line naming it."""

import os
import shutil

import pytest
from scipy import stats

from jaxmem.cli import user_errors
from jaxmem.experiments.gmm_crossover import structure_recheck

from conftest import REPO
from test_reliability_workdirs import launch

RESULTS = os.path.join(REPO, "results", "gmm_structure")


def test_the_committed_folder_gives_the_committed_recheck_md(tmp_path):
    out = launch("gmm_structure_recheck", f"--results={RESULTS}", f"--out={tmp_path / 'recheck.md'}")
    assert out.returncode == 0, out.stderr[-3000:]
    with open(os.path.join(RESULTS, "recheck.md"), "rb") as committed:
        assert (tmp_path / "recheck.md").read_bytes() == committed.read()


@pytest.mark.parametrize("n", [1, 7, 200])
def test_clopper_pearson_at_no_and_at_every_success_is_the_closed_form(n):
    alpha = 1 - structure_recheck.LEVEL
    lower, upper = structure_recheck.clopper_pearson(0, n)
    assert lower == 0.0 and upper == pytest.approx(1 - (alpha / 2) ** (1 / n), rel=1e-12)
    lower, upper = structure_recheck.clopper_pearson(n, n)
    assert lower == pytest.approx((alpha / 2) ** (1 / n), rel=1e-12) and upper == 1.0


@pytest.mark.parametrize("k, n", [(1, 10), (4, 15), (16, 200), (45, 400), (199, 200)])
def test_clopper_pearson_ends_leave_alpha_over_2_in_each_binomial_tail(k, n):
    alpha = 1 - structure_recheck.LEVEL
    lower, upper = structure_recheck.clopper_pearson(k, n)
    assert 0 < lower < k / n < upper < 1
    assert stats.binom.sf(k - 1, n, lower) == pytest.approx(alpha / 2, rel=1e-9)  # P(X >= k | lower)
    assert stats.binom.cdf(k, n, upper) == pytest.approx(alpha / 2, rel=1e-9)  # P(X <= k | upper)


def test_a_missing_table_is_one_error_line_naming_it(tmp_path, capsys):
    folder = tmp_path / "gmm_structure"
    shutil.copytree(RESULTS, folder, ignore=shutil.ignore_patterns("*.md", "*.png", "five_seeds"))
    os.remove(folder / "rank" / "structure.csv")
    with pytest.raises(SystemExit) as stopped, user_errors():  # as the launcher runs it
        structure_recheck.recheck(str(folder))
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"error: {folder / 'rank' / 'structure.csv'} does not exist: the GMM structure recheck reads it "
                     "(a results folder laid out as results/gmm_structure)"]

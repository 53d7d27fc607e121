"""Equivalence of two crossover runs on the same data sets (a cheap protocol against a reference).

    python launch/compare_crossover.py --reference=runs/anchor_full --candidate=runs/anchor_cheap \
        --out=results/gmm_crossover/anchor.md

Per capacity: both memorisation ratios and whether they agree within --tolerance; per data
set: whether the candidate's M_pt lies inside the reference's delta window. Writes Markdown.
"""

import math

from absl import flags

from jaxmem import io
from jaxmem.cli import WRITE_ERROR_EXIT_CODE, fail, run_app, user_errors
from jaxmem.validation import require
from jaxmem.experiments.gmm_crossover.report import compare_runs, read_table

_REFERENCE = flags.DEFINE_string("reference", None, "Workdir of the reference run.", required=True)
_CANDIDATE = flags.DEFINE_string("candidate", None, "Workdir of the candidate run.", required=True)
_OUT = flags.DEFINE_string("out", None, "Markdown file to write.", required=True)
_TOLERANCE = flags.DEFINE_float("tolerance", 0.1, "Largest accepted ratio difference per capacity.")


def main(argv):
    del argv
    with user_errors():
        require(math.isfinite(_TOLERANCE.value) and _TOLERANCE.value >= 0, "--tolerance", _TOLERANCE.value,
                "a finite ratio difference >= 0")
        tables = {name: [read_table(run, name) for run in (_REFERENCE.value, _CANDIDATE.value)]
                  for name in ("models.csv", "crossover.csv")}
    try:
        per_capacity, per_set = compare_runs(*tables["models.csv"], *tables["crossover.csv"], _TOLERANCE.value)
    except KeyError as column:
        fail(f"a models.csv or crossover.csv of --reference or --candidate has no column {column}: not a table "
             "the crossover experiment wrote")
    text = [f"# {_CANDIDATE.value} against {_REFERENCE.value}", "",
            f"Per capacity (|ratio difference| <= {_TOLERANCE.value}: "
            f"{sum(r['within'] for r in per_capacity)} of {len(per_capacity)}):", "", io.markdown_table(per_capacity), "",
            f"Per data set (candidate M_pt inside the reference's delta window: "
            f"{sum(r['inside_window'] for r in per_set)} of {len(per_set)}):", "", io.markdown_table(per_set), ""]
    with user_errors(io.WriteError, code=WRITE_ERROR_EXIT_CODE):
        print(io.write_text(_OUT.value, "\n".join(text)))


if __name__ == "__main__":
    run_app(main)

"""The numbers behind the corrections of results/gmm_structure/README.md, recomputed from that
folder's committed CSVs (no training; jaxmem.experiments.gmm_crossover.structure_recheck).

    .venv/bin/python launch/gmm_structure_recheck.py     # writes results/gmm_structure/recheck.md

A few seconds, nearly all of them imports (the recheck itself: 0.1 s).

--results names another folder laid out the same way; --out another Markdown file.
"""

import os

from absl import flags

from jaxmem import io
from jaxmem.cli import WRITE_ERROR_EXIT_CODE, fail, run_app, user_errors
from jaxmem.experiments.gmm_crossover import structure_recheck

_RESULTS = flags.DEFINE_string("results", "results/gmm_structure", "Folder of the GMM structure results (its CSVs).")
_OUT = flags.DEFINE_string("out", None, "Markdown file to write (default: <results>/recheck.md).")


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
    with user_errors():
        try:
            text = structure_recheck.recheck(_RESULTS.value)
        except KeyError as column:
            fail(f"a table under {_RESULTS.value} has no column {column}: not a table the GMM structure runs wrote")
    with user_errors(io.WriteError, code=WRITE_ERROR_EXIT_CODE):
        print(io.write_text(_OUT.value or os.path.join(_RESULTS.value, "recheck.md"), text))


if __name__ == "__main__":
    run_app(main)

"""Why the cheap schedule failed and what fixes it: s^2 over training at the anchor, per optimizer
setting (jaxmem.experiments.gmm_crossover.escape).

    python launch/gmm_escape_probe.py --out=results/gmm_crossover     # ~10 min on one core

Writes escape.csv, escape.md and escape.png into --out.
"""

import os

from absl import flags

from jaxmem import io
from jaxmem.cli import WRITE_ERROR_EXIT_CODE, fail, run_app, user_errors
from jaxmem.config import load_config
from jaxmem.experiments.gmm_crossover import escape

ANCHOR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "gmm_crossover.py") + ":anchor_full"
_OUT = flags.DEFINE_string("out", "runs/gmm_escape_probe", "Folder that receives escape.csv, .md and .png.")


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
    with user_errors(io.WriteError, code=WRITE_ERROR_EXIT_CODE):
        escape.run(load_config(ANCHOR), _OUT.value)


if __name__ == "__main__":
    run_app(main)

"""Gradient variance per loss estimator of the GMM laboratory at fixed parameters (anchor: d = 50,
K = 12, N = 200, M = 150; jaxmem.experiments.gmm_crossover.estimator_variance).

    python launch/gmm_estimator_variance.py --estimators=iid,stratified --draws=8,26 \
        --out=runs/estimator_variance.json

Prints each row as it is measured; writes the rows as a JSON list to --out.
"""

import json

from absl import flags

from jaxmem import io
from jaxmem.cli import WRITE_ERROR_EXIT_CODE, fail, run_app, user_errors
from jaxmem.validation import require
from jaxmem.experiments.gmm_crossover import estimator_variance
from jaxmem.train import gmm_grid

_ESTIMATORS = flags.DEFINE_list("estimators", ["iid", "stratified"], "Estimators to measure (iid among them).")
_DRAWS = flags.DEFINE_list("draws", ["8", "26"], "Noise draws per point and step, each measured.")
_OUT = flags.DEFINE_string("out", "runs/estimator_variance.json", "JSON file to write.")


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
    with user_errors():
        for name in _ESTIMATORS.value:
            require(name in gmm_grid.ESTIMATORS, "--estimators", name, f"one of {', '.join(gmm_grid.ESTIMATORS)}")
        require(all(d.isdigit() and int(d) >= 1 for d in _DRAWS.value), "--draws", _DRAWS.value, "integers >= 1")
        rows = estimator_variance.measure(_ESTIMATORS.value, [int(d) for d in _DRAWS.value])
    for row in rows:
        print(row, flush=True)
    with user_errors(io.WriteError, code=WRITE_ERROR_EXIT_CODE):
        io.write_text(_OUT.value, json.dumps(rows, indent=1))


if __name__ == "__main__":
    run_app(main)

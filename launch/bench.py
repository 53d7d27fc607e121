"""Benchmarks: every entry in jaxmem/benchmarks, timed properly, as a table and JSON.

    python launch/bench.py [--only=knn,gmm,geometry] [--size=quick|full] [--workdir=runs/bench]

`ratio_vs_baseline` is (baseline time) / (this method's time) for baselines and 1.0 for the
jaxmem method each entry measures: above 1 means jaxmem is faster. On a GPU the
`matmul_fraction` column is the share of the device's measured matmul rate.
"""

import datetime
import importlib
import os
import pkgutil

import jax
from absl import app, flags, logging

import jaxmem.benchmarks
from jaxmem import io

_ONLY = flags.DEFINE_list("only", [], "Entries to run (default: all).")
_SIZE = flags.DEFINE_enum("size", "full", ["quick", "full"], "Problem sizes.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/bench", "Where results.json and results.md go.")


def entries() -> dict:
    """NAME -> module for every benchmark module in jaxmem/benchmarks."""
    found = {}
    for info in pkgutil.iter_modules(jaxmem.benchmarks.__path__):
        if info.name != "harness":
            module = importlib.import_module(f"jaxmem.benchmarks.{info.name}")
            found[module.NAME] = module
    return found


def main(argv):
    del argv
    available = entries()
    unknown = sorted(set(_ONLY.value) - set(available))
    if unknown:
        raise app.UsageError(f"unknown bench entries {unknown}; valid: {sorted(available)}")
    rows = []
    for name in _ONLY.value or sorted(available):
        logging.info("bench entry %s (%s)", name, _SIZE.value)
        rows += available[name].run(_SIZE.value)
    device = f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})"
    header = f"{datetime.date.today()} on {device}, jax {jax.__version__}"
    table = io.markdown_table(rows, sorted({k for r in rows for k in r},
                                           key=lambda k: (k not in ("entry", "method", "shape"), k)))
    print(header + "\n\n" + table)
    io.write_json(os.path.join(_WORKDIR.value, "results.json"), {"device": device, "rows": rows})
    io.write_text(os.path.join(_WORKDIR.value, "results.md"), header + "\n\n" + table)


if __name__ == "__main__":
    app.run(main)

"""Benchmarks: every entry in jaxmem/benchmarks, timed properly, as a table and JSON.

    python launch/bench.py [--only=knn,gmm,geometry] [--size=auto|quick|cpu|full] [--workdir=runs/bench]
    python launch/bench.py --only=edm --size=cpu --edm_reference=../edm   # NVlabs's own code as the peer
    python launch/bench.py --only=edm --size=cpu --profile --edm_reference=../edm   # per-op profiles

Sizes: quick (seconds; tests), cpu (a CPU host: `make bench`, BENCHMARKS.md's CPU section),
full (an accelerator: the sizes launch/gpu_check.py records; refused on a CPU backend, where it
would need ~135 GB); auto (default) is full on an accelerator and cpu otherwise.
Entries with a peer time the sides in alternating rounds and record how many cores other
processes kept busy meanwhile (per call of >= 0.5 s, over a side's shorter calls together;
jaxmem.benchmarks.harness.alternate: `spread`,
`other_cores_max`, `quiet` when that stayed <= 0.25, and the load average `load_max`). `ratio_vs_baseline`
is the median over rounds of (baseline time) / (jaxmem's time in the same round), with its range
in `ratio_min` / `ratio_max`: above 1 means jaxmem is faster. `--edm_reference` points at a
checkout of github.com/NVlabs/edm (get one for your own runs); the edm entry then times
NVlabs's network, loss and step beside jaxmem's and the PyTorch twin's. `matmul_fraction` is the
share of the device's matmul rate measured in the same run. `peak_gib` is the device memory
peak of this process after the entry (cumulative over the entries of one run; n/a on CPU).
`--profile` (with --only=edm) times nothing: it writes per-operation profiles of the EDM train step
and forward pass of each side, by category, as profile.md / profile.json into the workdir
(jaxmem.benchmarks.profile).
"""

import datetime
import importlib
import os

import jax
from absl import flags, logging

import jaxmem.benchmarks
from jaxmem import io
from jaxmem.benchmarks import nvlabs_edm
from jaxmem.cli import fail, run_app, user_errors
from jaxmem.benchmarks.harness import peak_gib, tables_by_entry

_ONLY = flags.DEFINE_list("only", [], "Entries to run (default: all).")
_SIZE = flags.DEFINE_enum("size", "auto", ["auto", *jaxmem.benchmarks.SIZES], "Problem sizes.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/bench", "Where results.json and results.md go.")
_EDM_REFERENCE = flags.DEFINE_string("edm_reference", None, "A checkout of NVlabs/edm: the edm entry's peer.")
_PROFILE = flags.DEFINE_bool("profile", False, "With --only=edm: per-op profiles of both sides instead of timings.")


def entries() -> dict:
    """NAME -> module for every benchmark entry in jaxmem/benchmarks."""
    return {name: importlib.import_module(f"jaxmem.benchmarks.{name}") for name in jaxmem.benchmarks.entry_names()}


def resolve_size(size: str, backend: str) -> str:
    """The size to run: auto -> full on an accelerator, cpu on a CPU; full on a CPU is refused."""
    if size == "auto":
        return "cpu" if backend == "cpu" else "full"
    if size == "full" and backend == "cpu":
        fail("--size=full is sized for an accelerator (k-NN 50,000 x 50,000 x 3,072, "
                             "EDM batch 512: ~135 GB on a CPU host); use --size=cpu here")
    return size


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
    available = entries()
    unknown = sorted(set(_ONLY.value) - set(available))
    if unknown:
        fail(f"unknown bench entries {unknown}; valid: {sorted(available)}")
    size = resolve_size(_SIZE.value, jax.default_backend())
    options = {}
    if _EDM_REFERENCE.value:
        with user_errors():
            nvlabs_edm.load_reference(_EDM_REFERENCE.value)
        options["edm"] = {"edm_reference": _EDM_REFERENCE.value}
    if _PROFILE.value:
        if _ONLY.value != ["edm"]:
            fail(f"--profile profiles the edm entry only; give --only=edm (got --only={','.join(_ONLY.value)})")
        from jaxmem.benchmarks import profile

        out = profile.run(size, _WORKDIR.value, _EDM_REFERENCE.value)
        print(f"{len(out['cases'])} profiles in {os.path.join(_WORKDIR.value, 'profile.md')}")
        return
    rows = []
    for name in _ONLY.value or sorted(available):
        logging.info("bench entry %s (%s)", name, size)
        entry_rows = available[name].run(size, **options.get(name, {}))
        peak = peak_gib()
        rows += [{**row, "peak_gib": peak} for row in entry_rows]
    device = f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})"
    header = f"{datetime.date.today()} on {device}, jax {jax.__version__}, size {size}"
    table = tables_by_entry(rows)
    print(header + "\n\n" + table)
    io.write_json(os.path.join(_WORKDIR.value, "results.json"), {"device": device, "size": size, "rows": rows})
    io.write_text(os.path.join(_WORKDIR.value, "results.md"), header + "\n\n" + table)


if __name__ == "__main__":
    run_app(main)

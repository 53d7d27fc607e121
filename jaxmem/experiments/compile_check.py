"""Compile a preset's programs for accelerator targets without a device (launch/compile_check.py).

run(family, config, workdir, target_names, program_names):
  1. for each target: its compile-only devices (jaxmem.targets), the preset's programs built on
     them from shapes alone (jaxmem.programs)
  2. each program lowered and compiled for the target; its memory, FLOPs, bytes, collectives
     and roofline bound read from the compiled module (jaxmem.roofline: FLOPs include every
     iteration of the programs' loops, which XLA's own cost analysis counts once)
  3. a record per (target, program): compile_check.json and compile_check.md in the workdir,
     and the table on the screen. Whole-run device-hours = calls x bound x chips / 3600
A program that fails to compile or does not fit the target's memory is reported as one line
and makes the run fail (CompileFailure, exit 1) after every other program has been checked.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

import jax
from absl import logging

from jaxmem import compile_cache, io, programs, roofline, targets

GIB = 2**30


class CompileFailure(RuntimeError):
    """Programs that did not compile or do not fit; the message has one line per program."""


@contextlib.contextmanager
def quiet_stderr():
    """Silences what C++ libraries print on file descriptor 2 (libtpu's start-up warnings about
    cloud metadata it cannot find); re-emits it if the block raises."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def compile_program(program: programs.Program):
    """(compiled, seconds) of one program's lower + compile."""
    start = time.perf_counter()
    compiled = program.fn.lower(*program.args, *program.static).compile()
    return compiled, time.perf_counter() - start


def check_target(family: str, config, target: targets.Target, wanted: list[str]) -> tuple[list[dict], list[str]]:
    """Records of the wanted programs (all when empty) on one target, and the failure lines."""
    with quiet_stderr():
        devices = targets.compile_only_devices(target)
    built = programs.programs_of(family, config, devices, target.hbm_bytes)
    records, failures = [], []
    for program in built:
        if wanted and program.name not in wanted:
            continue
        logging.info("compiling %s for %s (%d chips)", program.name, target.name, target.chips)
        try:
            compiled, seconds = compile_program(program)
        except Exception as e:  # noqa: BLE001  (XLA's errors: RESOURCE_EXHAUSTED, unsupported ops, ...)
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            failures.append(f"{program.name} on {target.name}: did not compile: {first[:300]}")
            continue
        record = roofline.analyze(compiled, target, program.compute, seconds)
        bound = record["roofline"]["bound_s"] if record["roofline"] else None
        record.update(program=program.name, unit=program.unit, items=program.items, calls=program.calls,
                      run_device_hours=bound * program.calls * target.chips / 3600 if bound else None)
        records.append(record)
        if not record["fits"]:
            failures.append(f"{program.name} on {target.name}: does not fit: peak {record['memory']['peak'] / GIB:.2f} "
                            f"GiB per device > {target.hbm_bytes / GIB:.2f} GiB of HBM")
    missing = sorted(set(wanted) - {p.name for p in built})
    if missing:
        failures.append(f"--programs: {', '.join(missing)} not run by this preset; its programs: "
                        f"{', '.join(p.name for p in built)}")
    return records, failures


def _collective_text(collectives: dict) -> str:
    if not collectives:
        return "none"
    return "; ".join(f"{kind} x{c['count']} {c['result_bytes'] / 1e6:.1f} MB" + (" (in loop)" if c["in_loop"] else "")
                     for kind, c in sorted(collectives.items()))


def table(records: list[dict]) -> str:
    """The Markdown table of records (per device, per call)."""
    head = ("| target | program | one call | peak GiB / HBM | args / out / temp GiB | GFLOP | GB accessed | "
            "FLOP/byte | collectives | roofline ms (bound) | compile s | calls | run device-h |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        m, line = r["memory"], r["roofline"]
        fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
        lines.append(
            f"| {r['target']} | {r['program']} | {r['unit']} | {m['peak'] / GIB:.2f} / {r['hbm_bytes'] / GIB:.0f}"
            f"{'' if r['fits'] else ' **over**'} | {m['argument'] / GIB:.2f} / {m['output'] / GIB:.2f} / "
            f"{m['temp'] / GIB:.2f} | {fmt(r['flops'] and r['flops'] / 1e9, '.1f')} | "
            f"{fmt(r['bytes_accessed'] and r['bytes_accessed'] / 1e9, '.2f')} | {fmt(r['intensity'], '.0f')} | "
            f"{_collective_text(r['collectives'])} | "
            f"{fmt(line and line['bound_s'] * 1e3, '.2f')}{' (' + line['limit'] + ')' if line else ''} | "
            f"{r['compile_s']:.1f} | {r['calls']:,} | {fmt(r['run_device_hours'], '.3g')} |")
    return "\n".join(lines)


def write_report(workdir: str, family: str, config, chosen: list, records: list[dict], failures: list[str],
                 complete: bool) -> None:
    """compile_check.json and compile_check.md of the records so far (process 0 only)."""
    if jax.process_index() != 0:
        return
    io.write_json(os.path.join(workdir, "compile_check.json"),
                  {"family": family, "preset": config.get("preset"), "jax": jax.__version__,
                   "complete": complete, "records": records, "failures": failures})
    notes = "\n".join(f"- {t.name}: {t.chips} x {t.platform} ({t.topology}); {t.sources}" for t in chosen)
    io.write_text(os.path.join(workdir, "compile_check.md"),
                  f"# Compile check: {family}:{config.get('preset')}\n\nPer device, per call; compiler "
                  f"estimates, not measurements.\n\n{table(records)}\n\nTargets:\n{notes}\n")


def run(family: str, config, workdir: str, target_names: list[str], program_names: list[str]) -> list[dict]:
    """Compiles and reports every wanted program on every target; raises CompileFailure at the end
    when any did not compile or fit. The report is rewritten after each target, so a long check
    that is stopped keeps what it finished; it is complete when its `complete` field is true."""
    # JAX's persistent cache stores executables for compile-only devices but cannot load them
    # (deserializing needs a client of the target's platform): off, so nothing large is written.
    compile_cache.enable(None)
    chosen = [targets.get_target(name) for name in target_names]
    for target in chosen:
        targets.check_packages(target)
    records, failures = [], []
    for i, target in enumerate(chosen):
        got, failed = check_target(family, config, target, program_names)
        records += got
        failures += failed
        write_report(workdir, family, config, chosen, records, failures, complete=i == len(chosen) - 1)
    print(table(records))
    if failures:
        raise CompileFailure("\n".join(failures))
    return records

"""The GPU check's report (launch/gpu_check.py): summary.json, summary.md, logs.txt, and the
GPU section of BENCHMARKS.md, all rendered from the summary dict the check builds.

summary: {"date": ISO time, "command", "quick": bool, "budget_s", "elapsed_s", "stages": [record]},
a record {"stage", "status" (ok / failed / timeout / skipped), "estimate_s", and "reason" when
skipped, else "wall_s", "timeout_s", "details" (the stage's own: env device info, pytest
counts, bench rows, slice times) and "error_tail" unless ok}.
"""

from __future__ import annotations

import math
import os

from jaxmem import io
from jaxmem.benchmarks import stages

BENCH_COLUMNS = ("entry", "method", "shape", "median (s)", "vs baseline", "matmul fraction", "throughput",
                 "extrapolated", "peak GiB")


def _num(value, fmt: str = ".3g") -> str:
    """A number as text; 'n/a' for a missing or non-finite one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, fmt)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _details(summary: dict, stage: str) -> dict:
    return next((r.get("details") or {} for r in summary["stages"] if r["stage"] == stage), {})


def bench_rows(summary: dict) -> list[dict]:
    """Every bench row of the check, in stage order."""
    return [row for r in summary["stages"] if r["stage"].startswith("bench:")
            for row in (r.get("details") or {}).get("rows", [])]


def _throughput(row: dict) -> str:
    if row.get("images_per_s") is not None:
        return f"{_num(row['images_per_s'], '.4g')} images/s"
    if row.get("model_steps_per_s") is not None:
        return f"{_num(row['model_steps_per_s'], '.4g')} model-steps/s"
    return ""


def _stage_note(record: dict) -> str:
    """One line on a stage: why it was skipped, the last line of its error, or what it measured."""
    if record["status"] == "skipped":
        return record["reason"]
    if record["status"] != "ok":
        lines = [line for line in record.get("error_tail", "").splitlines() if line.strip()]
        return (lines[-1] if lines else record["status"])[-160:]
    details, stage = record.get("details") or {}, record["stage"]
    if stage == "setup":
        unused = f" (not needed: {', '.join(details['not_needed'])})" if details.get("not_needed") else ""
        if not details["installed"]:
            return "nothing to install" + unused
        return f"installed {', '.join(details['installed'])} from {details['source']}{unused}"
    if stage == "env":
        limit = (details.get("bytes_limit") or math.nan) / 2**30
        return f"{details.get('device_kind')} x{details.get('device_count')}, memory limit {_num(limit)} GiB"
    if stage == "pytest":
        return f"{details['passed']} passed, {details['failed']} failed, {details['skipped']} skipped"
    if stage == "slice":
        return (f"{details.get('models', '?')} models, "
                f"{details.get('steps_done', '?')}/{details.get('steps', '?')} steps at "
                f"{_num(details.get('step_rate'))} step/s, eval {_num(details.get('eval_s'), '.0f')} s")
    return f"{len(details.get('rows', []))} rows"


def _stage_peak(record: dict) -> str:
    rows = (record.get("details") or {}).get("rows", [])
    peaks = [row["peak_gib"] for row in rows if row.get("peak_gib") is not None]
    return _num(max(peaks)) if peaks else "n/a"


def section_markdown(summary: dict) -> str:
    """The GPU section of BENCHMARKS.md: device, date, versions, the stage table, the bench table,
    the slice and the gpu-marked tests."""
    env = _details(summary, "env")
    gpu, versions = env.get("gpu") or {}, env.get("versions") or {}
    device = f"{env.get('device_kind', 'unknown device')} x{env.get('device_count', '?')} ({env.get('backend', '?')})"
    lines = [f"### {device}, {summary['date'][:10]}", ""]
    if summary["quick"]:
        lines += ["CPU dry run (`--quick` sizes and estimates): these are not accelerator figures.", ""]
    facts = [f"{gpu['name']}, driver {gpu['driver']}, {gpu['memory']}" if gpu else "no nvidia-smi"]
    facts += [f"{name} {version}" for name, version in sorted(versions.items())]
    lines += ["; ".join(facts) + f". `{summary['command']}`: {_num(summary.get('elapsed_s'), '.0f')} s of a "
              f"{_num(summary['budget_s'], '.0f')} s budget.", ""]
    stage_rows = [{"stage": r["stage"], "status": r["status"], "wall (s)": _num(r.get("wall_s"), ".0f"),
                   "estimate (s)": _num(r["estimate_s"], ".0f"), "peak GiB": _stage_peak(r),
                   "note": _cell(_stage_note(r))} for r in summary["stages"]]
    lines.append(io.markdown_table(stage_rows))
    rows = bench_rows(summary)
    if rows:
        table = [dict(zip(BENCH_COLUMNS, (
            row["entry"], _cell(row["method"]), _cell(row.get("shape", "")), _num(row.get("median_s")),
            _num(row.get("ratio_vs_baseline")), _num(row.get("matmul_fraction")), _throughput(row),
            (f"{_num(row['extrapolated_h'])} h ({_cell(row.get('extrapolates', ''))})"
             if row.get("extrapolated_h") is not None else ""), _num(row.get("peak_gib"))))) for row in rows]
        lines += ["`vs baseline` = baseline time / jaxmem time in the same run; `matmul fraction` = achieved "
                  "FLOP/s over the device's measured matmul rate (launch/bench.py); peak GiB per entry.", "",
                  io.markdown_table(table)]
    predictions = prediction_rows(summary)
    if predictions:
        lines += ["Compile-check predictions (compile-only, from this repository's results/accelerator_plan/) beside "
                  "the measurements: `bound / measured` is the fraction of the roofline bound the step reached.", "",
                  io.markdown_table(predictions)]
    piece = _details(summary, "slice")
    if piece:
        lines.append(f"Slice of the `paper` preset ({' '.join(piece['overrides'])}): exit {piece['returncode']}, "
                     f"{_num(piece['wall_s'], '.0f')} s in all; first training progress after "
                     f"{_num(piece.get('first_progress_s'), '.0f')} s (data, compile, first chunk), "
                     f"{_num(piece.get('step_rate'))} step/s, evaluation {_num(piece.get('eval_s'), '.0f')} s; "
                     f"wrote {', '.join(piece['outputs']) or 'nothing'}.\n")
    tests = _details(summary, "pytest")
    if tests:
        failing = f" (failing: {', '.join(tests['failing'])})" if tests["failing"] else ""
        lines.append(f"Tests marked gpu: {tests['passed']} passed, {tests['failed']} failed, "
                     f"{tests['skipped']} skipped{failing}.\n")
    return "\n".join(lines)


def prediction_rows(summary: dict) -> list[dict]:
    """The compile check's predictions for the EDM train step (summary["predictions"]: records of
    launch/compile_check.py for one GPU, as results/accelerator_plan/gpu_check_predictions.json
    holds them) beside what bench:edm measured for the same dtype and batch: the roofline bound
    against the measured step time (their ratio is the fraction of the bound reached) and the
    compiled peak memory against the measured peak. Only the predictions for the device the
    check ran on (h100x1 or h200x1, from the env stage's device kind) when it is one of them."""
    kind = _details(summary, "env").get("device_kind", "")
    target = "h200x1" if "H200" in kind else "h100x1" if "H100" in kind else None
    rows = []
    for predicted in summary.get("predictions", []):
        if target and predicted["target"] != target:
            continue
        dtype, batch = predicted["dtype"], predicted["batch"]
        measured = next((row for row in bench_rows(summary) if row["entry"] == "edm"
                         and row["method"].endswith(f", {dtype})") and row.get("shape", "").startswith(f"batch {batch} ")),
                        None)
        step_s = measured["median_s"] if measured else None
        rows.append({"program": f"edm train step, {dtype}, batch {batch}", "target": predicted["target"],
                     "bound (ms)": _num(predicted["bound_s"] * 1e3), "measured (ms)": _num(step_s and step_s * 1e3),
                     "bound / measured": _num(step_s and predicted["bound_s"] / step_s),
                     "peak GiB compiled": _num(predicted["peak_gib"]),
                     "peak GiB measured": _num(measured.get("peak_gib") if measured else None)})
    return rows


def summary_markdown(summary: dict) -> str:
    """summary.md: the section, then the error tail of every stage that did not finish ok."""
    parts = ["## jaxmem GPU check", "", section_markdown(summary)]
    for record in summary["stages"]:
        if record["status"] not in ("ok", "skipped"):
            parts += [f"#### {record['stage']}: {record['status']}", "", "```", record.get("error_tail", ""), "```", ""]
    return "\n".join(parts)


def write_outputs(out: str, summary: dict, logs: list[str]) -> None:
    """summary.json, summary.md and logs.txt in `out` (each written atomically)."""
    io.write_json(os.path.join(out, "summary.json"), summary)
    io.write_text(os.path.join(out, "summary.md"), summary_markdown(summary))
    io.write_text(os.path.join(out, "logs.txt"), "\n".join(logs))


def update_benchmarks(path: str, summary: dict) -> None:
    """Writes section_markdown(summary) between the gpu-check markers of the Markdown file `path`."""
    with open(path) as f:
        text = f.read()
    io.write_text(path, stages.replace_section(text, section_markdown(summary)))

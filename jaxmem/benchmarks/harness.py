"""Timing done properly: warm-up (compile), block_until_ready, median of repeats; the device's
matmul rate (the roofline entries report a fraction of) and its peak memory.

Comparisons against a peer (`alternate`) run the sides in turns, not one after the other: on a
shared machine a burst of load then hits both sides alike, and the ratio of each round's paired
times is far steadier than the ratio of two medians taken minutes apart (PyTorch and faiss with
2 threads slow down much more than XLA when another process shares the cores). Every call
records the CPU time other processes spent while it ran (`other_core_seconds`: the machine's
busy CPU time from /proc/stat minus this process's own), read as cores over the call's wall
time; a comparison counts as quiet when no reading saw more than QUIET_OTHER_CORES. Both clocks
tick in 10 ms jiffies, so a reading over a few ms is noise (an idle machine can read a whole
core): a call of at least MIN_READING_S gives its own reading, and a side's shorter calls are
read together, over their summed time, when that reaches MIN_READING_S (else that side is not
measured). The 1-minute load average is kept beside it (`load_max`) but does not decide: it counts the benchmark's own threads, so a
2-thread benchmark alone on 2 cores already reads ~2.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from jaxmem import io

# Side of the square matmul that measures the device's rate: 2048^3 (17 GFLOP) keeps a CPU busy
# for tens of ms; an accelerator needs 8192^3 (1.1 TFLOP, ~20 ms in float32) to leave launch
# overhead out of the number.
MATMUL_SIDE = {"cpu": 2048}
ACCELERATOR_MATMUL_SIDE = 8192


def time_fn(fn: Callable, *args, repeats: int = 5, warmup: int = 1, min_time_s: float = 0.0) -> dict:
    """Times fn(*args) (jitted or plain); returns median/min seconds over `repeats` calls.

    Every call's outputs are waited for with jax.block_until_ready, so asynchronous
    dispatch is not mistaken for speed. Warm-up calls (compilation) are not timed.
    """
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    t_start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - t_start < min_time_s:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


QUIET_OTHER_CORES = 0.25  # cores other processes may keep busy, on average over one reading, in a quiet run
MIN_READING_S = 0.5       # the shortest timed span read on its own: 50 jiffies, so one jiffy is 0.02 cores


def busy_cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has spent busy since boot, of which this process and its
    waited-for children), or None where /proc/stat does not exist (not Linux). Busy = user, nice,
    system, irq and softirq time; idle, iowait and steal are not counts of work done here."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:8]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields
    own = os.times()
    return ((user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"),
            own.user + own.system + own.children_user + own.children_system)


def other_core_seconds(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """CPU seconds other processes spent between two busy_cpu_seconds readings (never below 0: the
    two clocks tick at different granularities); None without readings."""
    if before is None or after is None:
        return None
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1]))


def side_readings(calls: list[tuple[float, float | None]]) -> list[float] | None:
    """Other-core readings [cores] of one side's timed calls [(seconds, other core-seconds)]: one
    per call of at least MIN_READING_S, plus one over all shorter calls together when their
    summed time reaches MIN_READING_S; short of that, the shortest long calls join them until it
    does, so every call is read (a side of 0.45 s and 0.55 s calls). None when a call has no
    reading (not Linux) or all the calls together are too short to be read."""
    if any(spent is None for _, spent in calls):
        return None
    long = sorted((call for call in calls if call[0] >= MIN_READING_S), key=lambda call: call[0])
    short = [call for call in calls if call[0] < MIN_READING_S]
    while short and long and sum(seconds for seconds, _ in short) < MIN_READING_S:
        short.append(long.pop(0))
    readings = [spent / seconds for seconds, spent in long]
    if short:
        total = sum(seconds for seconds, _ in short)
        if total < MIN_READING_S:
            return None
        readings.append(sum(spent for _, spent in short) / total)
    return readings


def alternate(sides: Mapping[str, Callable], rounds: int = 5, warmup: int = 1,
              reference: str | None = None) -> dict[str, dict]:
    """Times the zero-argument callables of `sides` in turns: `rounds` rounds, each calling every side
    once (the order reversed every other round), after `warmup` untimed calls of each.

    Returns per side: median_s, min_s, max_s, spread (max - min over median), repeats, load_max
    (the largest 1-minute load average seen before one of its calls), other_cores_max (the largest
    of its side_readings: cores other processes kept busy meanwhile; None when not measured) and
    quiet (True when no reading of any side exceeds QUIET_OTHER_CORES; False when a side was not
    measured). With
    `reference` (a side's name), each other side also gets ratio_median / ratio_min / ratio_max:
    the time of that side over the reference's in the same round (above 1: the reference is
    faster).
    """
    names = list(sides)
    if reference is not None and reference not in sides:
        raise ValueError(f"reference = {reference!r} is not one of the sides {names}")
    for name in names:
        for _ in range(warmup):
            jax.block_until_ready(sides[name]())
    times = {name: [] for name in names}
    loads = {name: [] for name in names}
    others = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            loads[name].append(os.getloadavg()[0])
            before = busy_cpu_seconds()
            t0 = time.perf_counter()
            jax.block_until_ready(sides[name]())
            seconds = time.perf_counter() - t0
            times[name].append(seconds)
            others[name].append((seconds, other_core_seconds(before, busy_cpu_seconds())))
    readings = {name: side_readings(others[name]) for name in names}
    quiet = all(r is not None for r in readings.values()) and max(
        c for r in readings.values() for c in r) <= QUIET_OTHER_CORES
    out = {}
    for name in names:
        median = statistics.median(times[name])
        out[name] = dict(median_s=median, min_s=min(times[name]), max_s=max(times[name]),
                         spread=(max(times[name]) - min(times[name])) / median, repeats=rounds,
                         load_max=max(loads[name]),
                         other_cores_max=max(readings[name]) if readings[name] else None,
                         quiet=quiet)
        if reference is not None and name != reference:
            ratios = [a / b for a, b in zip(times[name], times[reference])]
            out[name].update(ratio_median=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
    return out


def matmul_rate(n: int | None = None, dtype=jnp.float32, repeats: int = 5) -> float:
    """Measured FLOP/s of an n x n x n matmul (random inputs, Precision.HIGHEST) on the default
    device: the roofline entries divide by. n defaults to MATMUL_SIDE of the backend."""
    n = n or MATMUL_SIDE.get(jax.default_backend(), ACCELERATOR_MATMUL_SIDE)
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (n, n), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype)
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
    seconds = time_fn(matmul, a, b, repeats=repeats)["median_s"]
    return 2.0 * n**3 / seconds


def peak_gib() -> float | None:
    """Peak device memory this process has used so far, GiB (memory_stats' peak_bytes_in_use);
    None where the backend does not report it (CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def tables_by_entry(rows: list[dict]) -> str:
    """One Markdown table per bench entry (a `### entry` heading each), holding only the columns
    that entry's rows fill: entry-specific fields stay out of the other entries' tables."""
    lead = ("method", "shape")
    parts = []
    for entry in dict.fromkeys(r["entry"] for r in rows):
        mine = [r for r in rows if r["entry"] == entry]
        filled = {k for r in mine for k, v in r.items() if v is not None and k != "entry"}
        columns = sorted(filled, key=lambda k: (k not in lead, lead.index(k) if k in lead else 0, k))
        parts.append(f"### {entry}\n\n" + io.markdown_table(mine, columns))
    return "\n\n".join(parts)

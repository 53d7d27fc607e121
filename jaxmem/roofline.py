"""What one compiled program costs on a target: memory, FLOPs, collectives and a roofline bound.

Everything here is read from XLA's compiled program for the target (per device, per call) or
derived from it with the target's published peaks (jaxmem.targets); nothing is measured:

  memory       argument, output, alias and temporary bytes (Compiled.memory_analysis()); the
               peak is XLA's `peak_memory_in_bytes` where the backend fills it, else
               argument + output - alias + temp + generated code
  flops        Compiled.cost_analysis()['flops']. The CUDA plugin leaves cost analysis empty
               without a GPU; the caller passes `flops_override` (XLA's cost analysis of the same
               program lowered for one CPU device, divided by the target's device count) and the
               bytes accessed are floored at argument + output bytes
  collectives  every all-reduce, all-gather, reduce-scatter, all-to-all and collective-permute
               of the optimized HLO: kind, count, result bytes and the bytes one device sends,
               for a ring over a group of g devices: all-reduce 2 (g-1)/g x bytes, all-gather and
               all-to-all (g-1)/g x result, reduce-scatter (g-1) x result, permute 1 x result.
               A collective inside a loop body is counted once (flagged `in_loop`)
  roofline     max(flops / peak FLOP/s of the compute class, bytes accessed / HBM bandwidth)
               + bytes sent / interconnect bandwidth: a lower bound on the call's time (the
               collectives are assumed not to overlap compute, so the bound is not tight there)
"""

from __future__ import annotations

import re

from jaxmem.targets import Target

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4,
               "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_OP = re.compile(r"=\s*(?P<shape>\(.*?\)|\S+)\s+(?P<kind>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\(")
_ARRAY = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[\w.\-]+)\s.*\{\s*$")


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape string: 'f32[3,3,128]{...}' or a tuple '(f32[8], bf16[2,2])'."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        count = 1
        for d in filter(None, dims.split(",")):
            count *= int(d)
        total += DTYPE_BYTES[dtype] * count
    return total


def _group_size(line: str, num_devices: int) -> int:
    """Devices per replica group of a collective's HLO line (num_devices when it cannot tell)."""
    groups = re.search(r"replica_groups=\{\{([0-9,]*)\}", line)
    if groups:
        return len(groups.group(1).split(","))
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
    if iota:
        return int(iota.group(2))
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
    if mesh:
        sizes = dict(re.findall(r"'(\w+)'=(\d+)", mesh.group(1)))
        return max(1, _product(int(sizes.get(a, 1)) for a in re.findall(r"'(\w+)'", mesh.group(2))))
    pairs = re.search(r"source_target_pairs=\{(.*?)\}\}", line)
    return 2 if pairs else num_devices


def _product(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def bytes_sent(kind: str, result_bytes: int, group: int) -> float:
    """Bytes one device sends for one collective over `group` devices (ring algorithms)."""
    if group <= 1:
        return 0.0
    share = (group - 1) / group
    return {"all-reduce": 2 * share * result_bytes, "all-gather": share * result_bytes,
            "all-to-all": share * result_bytes, "reduce-scatter": (group - 1) * result_bytes,
            "collective-permute": float(result_bytes)}[kind]


def collectives(hlo_text: str, num_devices: int) -> list[dict]:
    """The collectives of an optimized HLO module, one record per op:
    {kind, result_bytes, group, bytes_sent, in_loop, computation}."""
    found, computation = [], ""
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head and "=" not in line.split("{")[0]:
            computation = head.group("name")
            continue
        op = _OP.search(line)
        if not op:
            continue
        size, group = shape_bytes(op.group("shape")), _group_size(line, num_devices)
        if op.group("start") and op.group("shape").startswith("("):
            size //= 2  # an async start's result is (operand, destination)
        found.append({"kind": op.group("kind"), "result_bytes": size, "group": group,
                      "bytes_sent": bytes_sent(op.group("kind"), size, group),
                      "in_loop": "body" in computation or "while" in computation, "computation": computation})
    return found


def summarize_collectives(ops: list[dict]) -> dict:
    """{kind: {count, result_bytes, bytes_sent, in_loop}} summed over ops of each kind."""
    out: dict = {}
    for op in ops:
        entry = out.setdefault(op["kind"], {"count": 0, "result_bytes": 0, "bytes_sent": 0.0, "in_loop": 0})
        entry["count"] += 1
        entry["result_bytes"] += op["result_bytes"]
        entry["bytes_sent"] += op["bytes_sent"]
        entry["in_loop"] += int(op["in_loop"])
    return out


def memory(compiled) -> dict:
    """Per-device bytes of a compiled program (see module doc for the peak)."""
    stats = compiled.memory_analysis()
    out = {k: int(getattr(stats, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp",
                                                                      "generated_code")}
    computed = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["generated_code"]
    reported = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
    out["peak"] = reported if reported > 0 else computed
    out["peak_source"] = "xla" if reported > 0 else "argument+output-alias+temp+code"
    return out


def cost(compiled) -> dict:
    """{flops, bytes_accessed} per device from XLA's cost analysis (None where it is empty)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per partition
        analysis = analysis[0] if analysis else None
    if not analysis or not analysis.get("flops"):
        return {"flops": None, "bytes_accessed": None}
    return {"flops": float(analysis["flops"]), "bytes_accessed": float(analysis.get("bytes accessed", 0.0))}


def roofline(target: Target, compute: str, flops: float, bytes_accessed: float | None, sent: float) -> dict:
    """Lower bounds (seconds) of one call on one device of `target`; see the module doc.

    The collective time uses the link bandwidth inside a host and the scale-out bandwidth when
    the target spans several hosts (the slowest link of a ring sets its pace)."""
    compute_s = flops / target.peak_flops(compute)
    memory_s = (bytes_accessed or 0.0) / target.hbm_bandwidth
    link = target.scaleout_bandwidth if target.hosts > 1 and target.scaleout_bandwidth else target.link_bandwidth
    network_s = sent / link if sent else 0.0
    bound = max(compute_s, memory_s)
    return {"compute_s": compute_s, "memory_s": memory_s, "network_s": network_s,
            "bound_s": bound + network_s, "limit": "compute" if compute_s >= memory_s else "memory"}


def analyze(compiled, target: Target, compute: str, compile_s: float, flops_override: float | None = None) -> dict:
    """The full record of one compiled program on `target` (per device, per call).

    Without the target compiler's cost analysis, flops_override is used and bytes accessed are
    floored at argument + output bytes (every input read and every output written once), which
    keeps the roofline a lower bound."""
    mem, spent = memory(compiled), cost(compiled)
    own = spent["flops"] is not None
    flops = spent["flops"] if own else flops_override
    accessed = spent["bytes_accessed"] if own else float(mem["argument"] + mem["output"])
    ops = collectives(compiled.as_text(), target.chips)
    coll = summarize_collectives(ops)
    sent = sum(c["bytes_sent"] for c in coll.values())
    record = {"target": target.name, "chips": target.chips, "compute": compute, "compile_s": compile_s,
              "memory": mem, "hbm_bytes": target.hbm_bytes, "fits": mem["peak"] <= target.hbm_bytes,
              "flops": flops, "bytes_accessed": accessed,
              "flops_source": "xla:" + target.platform if own else "cpu hlo / chips",
              "bytes_source": "xla:" + target.platform if own else "arguments + outputs (a floor)",
              "intensity": flops / accessed if flops and accessed else None,
              "collectives": coll, "bytes_sent": sent}
    record["roofline"] = roofline(target, compute, flops or 0.0, accessed, sent) if flops else None
    return record

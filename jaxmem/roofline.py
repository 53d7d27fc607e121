"""What one compiled program costs on a target: memory, FLOPs, collectives and a roofline bound.

Everything here is read from XLA's compiled program for the target (per device, per call) or
derived from it with the target's published peaks (jaxmem.targets); nothing is measured:

  memory       argument, output, alias and temporary bytes (Compiled.memory_analysis()); the
               peak is XLA's `peak_memory_in_bytes` where the backend fills it, else
               argument + output - alias + temp + generated code
  flops        XLA's cost analysis (Compiled.cost_analysis()['flops']: elementwise work included,
               convolution taps on padding left out) for a program without loops; for one with
               loops (the k-NN, geometry and GMM programs loop over blocks or steps), whose bodies
               XLA counts once, or without XLA's count (the CUDA plugin without a GPU), the
               larger of it and `matmul_flops`: the dots and convolutions of the compiled HLO with
               every loop iteration. Both counts are kept in the record
  bytes        XLA's bytes accessed (loop bodies once), floored at argument + output bytes
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
_HEADER = re.compile(r"^(?:ENTRY\s+)?%(?P<name>[\w.\-]+)\s+\(")
_ARRAY = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([0-9,]*)\]")


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
        head = _HEADER.match(line)
        if head:
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


_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%(?P<name>[\w.\-]+)\s*=\s*(?P<shape>\(.*?\)|\S+)\s+(?P<op>[\w\-]+)\((?P<args>[^)]*)\)(?P<attrs>.*)$")
_CONV_TARGETS = {"__cudnn$convForward": ("out", 1), "__cudnn$convBiasActivationForward": ("out", 1),
                 "__cudnn$convBackwardFilter": (1, "out"), "__cudnn$convBackwardInput": (0, 1)}


def _dims(shape: str) -> list[int]:
    """The dimensions of the first array in an HLO shape ('f32[8,16]{1,0}' or a tuple)."""
    found = _ARRAY.search(shape)
    return [int(d) for d in filter(None, found.group(2).split(","))] if found else []


def _conv_flops(out: list[int], kernel: list[int], labels: str) -> float:
    """2 x output elements x contracted kernel elements (all kernel dims but its output features)."""
    kernel_labels = labels.split("_")[1].split("->")[0]
    return 2.0 * _product(out) * _product(kernel) / kernel[kernel_labels.index("o")]


def _instruction_flops(op: str, shape: str, args: list[str], attrs: str, shapes: dict) -> float:
    """Matmul and convolution FLOPs of one HLO instruction (0 for everything else)."""
    if op == "dot":
        lhs = _dims(shapes.get(args[0], ""))
        contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", attrs)
        contracted = _product(lhs[int(i)] for i in filter(None, contracting.group(1).split(","))) if contracting else 1
        return 2.0 * _product(_dims(shape)) * contracted
    if op == "convolution":
        labels = re.search(r"dim_labels=(\S+?)[,\s]", attrs + " ")
        return _conv_flops(_dims(shape), _dims(shapes.get(args[1], "")), labels.group(1)) if labels else 0.0
    if op == "custom-call":
        target = re.search(r'custom_call_target="([^"]+)"', attrs)
        target = target.group(1) if target else ""
        if target in _CONV_TARGETS:
            out_at, kernel_at = _CONV_TARGETS[target]
            pick = lambda at: _dims(shape) if at == "out" else _dims(shapes.get(args[at], ""))  # noqa: E731
            labels = re.search(r"dim_labels=(\S+?)[,\s]", attrs + " ")
            return _conv_flops(pick(out_at), pick(kernel_at), labels.group(1)) if labels else 0.0
        if target.startswith("__cublas"):
            lhs = _dims(shapes.get(args[0], ""))
            contracting = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', attrs)
            indices = [int(i.strip('" ')) for i in contracting.group(1).split(",") if i.strip('" ')] if contracting else []
            return 2.0 * _product(_dims(shape)) * _product(lhs[i] for i in indices)
    return 0.0


def _computations(hlo_text: str) -> tuple[dict, str]:
    """{computation name: [(name, shape, op, operand names, attributes)]} and the entry's name."""
    computations, entry, current = {}, "", None
    for line in hlo_text.splitlines():
        head = _HEADER.match(line)
        if head:
            current = computations.setdefault(head.group("name"), [])
            entry = head.group("name") if line.startswith("ENTRY") else entry
            continue
        op = _INSTRUCTION.match(line)
        if op and current is not None:
            current.append((op.group("name"), op.group("shape"), op.group("op"),
                            re.findall(r"%([\w.\-]+)", op.group("args")), op.group("attrs"), op.group("args")))
    return computations, entry


def _trip_count(attrs: str, computations: dict) -> int:
    """How often a while loop runs its body: XLA's known_trip_count, else the constant its
    condition compares the counter with (`i < n`), else 1."""
    known = re.search(r'known_trip_count":\{"n":"(\d+)"', attrs)
    if known:
        return int(known.group(1))
    condition = computations.get(re.search(r"condition=%([\w.\-]+)", attrs).group(1), [])
    if not any(op == "compare" and "direction=LT" in a for _, _, op, _, a, _ in condition):
        return 1
    constants = [int(raw) for _, shape, op, _, _, raw in condition if op == "constant" and raw.strip().isdigit()]
    return max(constants, default=1)


def matmul_flops(hlo_text: str, count_loops: bool = True) -> float:
    """FLOPs of the dots and convolutions of an optimized HLO module, with every while loop's body
    counted as often as the loop runs (XLA's own cost analysis counts a loop body once).

    The trip count is the loop's `known_trip_count` when XLA annotates it, else the constant its
    condition compares the counter with (jax's scans and fori_loops count up from 0). Fusions and
    calls count once per call; of a conditional's branches the costliest counts. Elementwise work
    is not counted: this is the matrix-unit work that the FLOP peaks of jaxmem.targets refer to.
    Every kernel tap counts, also those on a convolution's zero padding (XLA's cost analysis counts
    only taps inside the input). count_loops=False counts each loop body once, as XLA does."""
    computations, entry = _computations(hlo_text)
    memo: dict = {}

    def total(name: str) -> float:
        if name in memo:
            return memo[name]
        memo[name] = 0.0  # a recursive reference (none in valid HLO) counts nothing
        shapes, flops = {}, 0.0
        for inst, shape, op, args, attrs, _ in computations.get(name, []):
            shapes[inst] = shape
            flops += _instruction_flops(op, shape, args, attrs, shapes)
            if op == "while":
                trips = _trip_count(attrs, computations) if count_loops else 1
                flops += trips * total(re.search(r"body=%([\w.\-]+)", attrs).group(1))
            elif op == "conditional":
                branches = re.search(r"branch_computations=\{([^}]*)\}", attrs)
                flops += max((total(b) for b in re.findall(r"%([\w.\-]+)", branches.group(1))), default=0.0) \
                    if branches else 0.0
            else:
                flops += sum(total(callee) for callee in re.findall(r"\bcalls=%([\w.\-]+)", attrs))
        memo[name] = flops
        return flops

    return total(entry)


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


def choose_flops(xla: float | None, matmul: float, matmul_once: float) -> float:
    """The FLOPs a record uses: XLA's own count (elementwise work included, padding taps left out)
    for a program without loops; where a loop runs its body more than once (matmul > matmul_once:
    XLA counts a loop body once) or XLA gives no count (CUDA without a GPU), the larger of XLA's
    count and the HLO's dots and convolutions with every loop iteration."""
    if xla and matmul == matmul_once:
        return xla
    return max(xla or 0.0, matmul)


def analyze(compiled, target: Target, compute: str, compile_s: float) -> dict:
    """The full record of one compiled program on `target` (per device, per call).

    flops: see `choose_flops`. bytes_accessed: XLA's count where it has one, floored at argument +
    output bytes (every input read and every output written once); loop bodies count once, so the
    memory term stays a lower bound."""
    mem, spent = memory(compiled), cost(compiled)
    text = compiled.as_text()
    matmul, matmul_once = matmul_flops(text), matmul_flops(text, count_loops=False)
    flops = choose_flops(spent["flops"], matmul, matmul_once)
    accessed = max(spent["bytes_accessed"] or 0.0, float(mem["argument"] + mem["output"]))
    coll = summarize_collectives(collectives(text, target.chips))
    sent = sum(c["bytes_sent"] for c in coll.values())
    record = {"target": target.name, "chips": target.chips, "compute": compute, "compile_s": compile_s,
              "memory": mem, "hbm_bytes": target.hbm_bytes, "fits": mem["peak"] <= target.hbm_bytes,
              "flops": flops, "matmul_flops": matmul, "matmul_flops_once": matmul_once, "xla_flops": spent["flops"],
              "bytes_accessed": accessed,
              "intensity": flops / accessed if flops and accessed else None,
              "collectives": coll, "bytes_sent": sent}
    record["roofline"] = roofline(target, compute, flops, accessed, sent) if flops else None
    return record

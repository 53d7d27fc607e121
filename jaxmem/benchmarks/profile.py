"""Per-operation profiles of the EDM U-Net's train step and forward pass: jaxmem's XLA program and
NVlabs/edm's PyTorch code on the same network, time per call by category, for finding where one
side loses time to the other.

    python launch/bench.py --only=edm --size=cpu --profile --edm_reference=../edm

writes `profile.md` and `profile.json` into the bench workdir (no timing rounds then): per case
(network and batch of edm.CASES) and program (`step`: loss, backward, optimizer, EMA; `forward`:
one forward pass of the batch), for each side, the milliseconds per call of every CATEGORY, the
convolutions by direction and shape, and the costliest single operations. The sides are profiled
in turns (jaxmem, NVlabs, jaxmem, ...), one call per turn, so a burst of load on a shared machine
hits both; compare shares (category ms / call ms) rather than milliseconds across runs.

jaxmem (XLA:CPU): `jax.profiler.trace` around each call, read back with
`jax.profiler.ProfileData`. The thunk runtime marks each HLO instruction's execution by an event
named after it and its completion by one named `end: <instruction>`; convolutions run
asynchronously on the thread pool, so an instruction's span is [its event's start, its `end:`
event's end]. The call's wall time (a TraceAnnotation around it) is split over the spans in
flight: each elementary interval equally among the instructions running in it, intervals with
none go to `runtime` (dispatch, the executor's scheduling). The categories then sum to the call's
wall time by construction. Instructions are classified from the compiled HLO
(`compiled.as_text()`): opcode, shapes, window and the metadata op_name (flax module path; an
instruction without one takes a neighbour's).

PyTorch: `torch.profiler.profile` around each call; each operator's self time goes to the
category of the first of it and its ancestors (autograd nodes, record_function ranges such as
`Optimizer.step#Adam.step`, `jaxmem.ema` and `jaxmem.grad_checks` of nvlabs_edm.build) that a
rule matches; wall time no operator covers (Python) is `runtime`. The shapes of the per-op table
come from `key_averages(group_by_input_shape=True)`.

Convolution keys read `k x k C_in->C_out @ H` (kernel, channels, input resolution); PyTorch's
backward convolution computes the data and filter gradients in one operator, so its direction is
`backward (data+filter)`.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import tempfile
import time

import jax

CATEGORIES = ("convolution forward", "convolution backward-data", "convolution backward-filter",
              "convolution backward (data+filter)", "group norm", "attention", "dense and sums (dots)",
              "copies, transposes, concatenation", "elementwise (forward)", "elementwise (backward)",
              "loss and preconditioning", "optimizer, EMA, gradient checks", "runtime")
TOP_OPS = 25  # rows of the costliest-operations table per side and program
_CONTROL = {"conditional", "while", "call", "tuple", "get-tuple-element", "parameter", "constant", "bitcast"}


# --- jaxmem: the compiled HLO ---------------------------------------------------------------------

def _dims(shape: str) -> list[int]:
    """[d0, d1, ...] of an HLO array shape such as 'f32[32,16,16,128]{3,2,1,0}' ([] for a tuple)."""
    match = re.match(r"\w+\[([\d,]*)\]", shape)
    return [int(d) for d in match.group(1).split(",") if d] if match else []


def parse_hlo(text: str) -> dict[str, dict]:
    """Instruction name -> {opcode, shape, operands, op_name, window [sizes], calls, root (a
    fusion's root opcode), inner (opcodes in a fusion)} for every instruction of every
    computation of `compiled.as_text()`."""
    instructions, computations, current = {}, {}, None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head and not line.startswith(" "):
            current = computations.setdefault(head.group(1), [])
            continue
        match = re.match(r"^\s*(ROOT )?%?([\w.\-]+) = (.*)$", line)
        if not match or current is None:
            continue
        rest = match.group(3)
        depth, end = 0, 0
        for end, char in enumerate(rest):  # the shape: up to the first space outside parentheses
            depth += {"(": 1, ")": -1}.get(char, 0)
            if char == " " and depth == 0:
                break
        shape, rest = rest[:end], rest[end + 1:]
        opcode = re.match(r"([\w\-]+)\(", rest)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        window = re.search(r"window=\{size=([\dx]+)", rest)
        calls = re.search(r"calls=%?([\w.\-]+)", rest)
        args = rest[:rest.find(")")] if "(" in rest else ""
        record = dict(opcode=opcode.group(1) if opcode else "?", shape=shape, root=bool(match.group(1)),
                      operands=re.findall(r"%([\w.\-]+)", args), op_name=op_name.group(1) if op_name else "",
                      window=[int(w) for w in window.group(1).split("x")] if window else [],
                      calls=calls.group(1) if calls else None)
        instructions[match.group(2)] = record
        current.append(match.group(2))
    users = collections.defaultdict(list)
    for name, record in instructions.items():
        for operand in record["operands"]:
            users[operand].append(name)
    for name, record in instructions.items():
        inner = [instructions[n] for n in computations.get(record["calls"] or "", [])]
        record["inner"] = {r["opcode"] for r in inner}
        record["fusion_root"] = next((r["opcode"] for r in inner if r["root"]), record["opcode"])
        if not record["op_name"]:  # the fusion's root, anything inside, then the neighbours
            named = [r["op_name"] for r in sorted(inner, key=lambda r: not r["root"]) if r["op_name"]]
            named += [instructions[n]["op_name"] for n in users[name] + record["operands"]
                      if n in instructions and instructions[n]["op_name"]]
            record["op_name"] = named[0] if named else ""
        if "convolution" in record["inner"]:
            record["window"] = next(r for r in inner if r["opcode"] == "convolution")["window"]
    return instructions


def _conv_key(record: dict, instructions: dict, kind: str) -> str:
    """'k x k Cin->Cout @ H' of an XLA:CPU convolution (dim_labels b01f_01io->b01f, as XLA:CPU
    canonicalises them): forward lhs x [B,H,W,Cin] -> [B,H,W,Cout]; backward-data lhs dy
    [B,H,W,Cout] -> dx [B,H,W,Cin]; backward-filter lhs x^T [Cin,H,W,B] -> dW [Cin,k,k,Cout]."""
    out = _dims(record["shape"])
    lhs = _dims(instructions[record["operands"][0]]["shape"]) if record["operands"] and \
        record["operands"][0] in instructions else []
    if len(out) != 4 or len(lhs) != 4:
        return "x".join(map(str, out))
    if kind == "backward-filter":
        return f"{out[1]}x{out[2]} {out[0]}->{out[3]} @{lhs[1]}"
    k = record["window"][0] if record["window"] else "?"
    cin, cout = (lhs[3], out[3]) if kind == "forward" else (out[3], lhs[3])
    return f"{k}x{k} {cin}->{cout} @{lhs[1]}"


def classify_hlo(record: dict, instructions: dict) -> tuple[str, str]:
    """(category, detail) of one HLO instruction (see CATEGORIES)."""
    op_name, opcode, backward = record["op_name"], record["opcode"], "transpose(" in record["op_name"]
    if opcode == "convolution" or "convolution" in record["inner"]:
        window = record["window"]
        if window and (window[0] != window[1] or window[0] not in (1, 3)):
            kind = "backward-filter"
        else:
            kind = "backward-data" if backward else "forward"
        return f"convolution {kind}", _conv_key(record, instructions, kind)
    if opcode == "dot" and op_name.endswith("conv_general_dilated"):  # a 1x1 convolution XLA made a dot
        return "convolution backward-data" if backward else "convolution forward", f"1x1 dot -> {record['shape']}"
    if record["fusion_root"] in ("copy", "transpose", "concatenate") or opcode in ("copy", "transpose", "concatenate"):
        return "copies, transposes, concatenation", record["fusion_root"]
    if "SongUNet" not in op_name:
        if "jvp(" in op_name or backward:
            return "loss and preconditioning", op_name.split("/")[-1]
        return "optimizer, EMA, gradient checks", op_name.split("/")[-1] or opcode
    if re.search(r"/attn/(?!norm/|qkv/|proj/)", op_name):
        return "attention", op_name.split("/")[-1]
    if re.search(r"/(norm\d*|out_norm)/", op_name):
        return "group norm", "backward" if backward else "forward"
    if opcode == "dot" or "dot" in record["inner"]:
        return "dense and sums (dots)", op_name.split("/")[-2] if "/" in op_name else opcode
    return f"elementwise ({'backward' if backward else 'forward'})", op_name.split("/")[-1]


def _spans(path: str, window_name: str) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """(the windows [(start_ns, end_ns)] of the events named `window_name`, the executions
    [(start_ns, end_ns, instruction)]) of one xplane.pb trace: an event X pairs, in order, with the
    next `end: X` event on any thread."""
    starts, ends, windows = collections.defaultdict(list), collections.defaultdict(list), []
    for plane in jax.profiler.ProfileData.from_file(path).planes:
        for line in plane.lines:
            for event in line.events:
                name, start, duration = event.name, int(event.start_ns), int(event.duration_ns)
                if name == window_name:
                    windows.append((start, start + duration))
                elif name.startswith("end: "):
                    ends[name[5:]].append(start + duration)
                else:
                    starts[name].append((start, start + duration))
    spans = []
    for name, begun in starts.items():
        done = sorted(ends.get(name, []))
        for start, own_end in sorted(begun):
            while done and done[0] < start:
                done.pop(0)
            spans.append((start, max(own_end, done.pop(0) if done else own_end), name))
    return sorted(windows), spans


def split_wall_time(window: tuple[int, int], spans: list[tuple[int, int, str]]) -> dict[str, float]:
    """Nanoseconds of `window` per span name: each elementary interval split equally among the
    spans running in it, intervals with none under 'runtime'; the values sum to the window."""
    points = []
    for start, end, name in spans:
        start, end = max(start, window[0]), min(end, window[1])
        if end > start:
            points += [(start, 1, name), (end, -1, name)]
    points.sort(key=lambda p: (p[0], p[1]))
    active, out, now = collections.Counter(), collections.defaultdict(float), window[0]
    for when, step, name in points:
        if when > now:
            running = sum(active.values())
            for key, count in (active.items() if running else [("runtime", 1)]):
                out[key] += (when - now) * count / (running or 1)
            now = when
        active[name] += step
        if not active[name]:
            del active[name]
    out["runtime"] += window[1] - now
    return dict(out)


def profile_jax_call(fn, hlo_text: str, instructions: dict | None = None) -> dict:
    """Profiles one call of `fn` (a compiled XLA program; zero arguments, outputs waited for):
    {wall_ms, ops: {instruction: (category, detail, ms)}} with the ms summing to wall_ms."""
    instructions = instructions or parse_hlo(hlo_text)
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            started = time.perf_counter()
            with jax.profiler.TraceAnnotation("jaxmem.profile.call"):
                jax.block_until_ready(fn())
            timed = time.perf_counter() - started
        path = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)[0]
        windows, spans = _spans(path, "jaxmem.profile.call")
    keep = [s for s in spans if s[2] in instructions and instructions[s[2]]["opcode"] not in _CONTROL]
    split = split_wall_time(windows[-1], keep)
    ops = {name: (*(classify_hlo(instructions[name], instructions) if name != "runtime" else ("runtime", "")),
                  ns / 1e6) for name, ns in split.items()}
    return {"wall_ms": (windows[-1][1] - windows[-1][0]) / 1e6, "timed_ms": timed * 1e3, "ops": ops}


# --- PyTorch ----------------------------------------------------------------------------------------

def _torch_conv_key(shapes, backward: bool) -> str:
    """The convolution key from aten::convolution's ([B,Cin,H,W], [Cout,Cin,k,k], ...) or
    aten::convolution_backward's (dy, x, w, ...) input shapes."""
    try:
        x, w = shapes[1:3] if backward else shapes[0:2]
        return f"{w[2]}x{w[3]} {w[1]}->{w[0]} @{x[2]}"
    except (IndexError, TypeError, ValueError):  # an autograd node's own time: no shapes recorded
        return "(autograd node)"


def classify_torch(event) -> tuple[str, str]:
    """(category, detail) of a torch profiler FunctionEvent, from it and its ancestors."""
    chain = []
    while event is not None:
        chain.append(event)
        event = event.cpu_parent
    names = [e.name for e in chain]
    if any(n.startswith("Optimizer.") or n in ("jaxmem.ema", "jaxmem.grad_checks") for n in names):
        return "optimizer, EMA, gradient checks", names[0]
    for e in chain:
        if "convolution_backward" in e.name or e.name == "ConvolutionBackward0":
            conv = next((c for c in chain if c.name == "aten::convolution_backward"), e)
            return "convolution backward (data+filter)", _torch_conv_key(conv.input_shapes, True)
        if e.name == "aten::convolution":
            return "convolution forward", _torch_conv_key(e.input_shapes, False)
        if "group_norm" in e.name or "GroupNorm" in e.name:
            return "group norm", "backward" if "ackward" in e.name else "forward"
        if e.name in ("aten::einsum", "aten::bmm", "aten::softmax", "aten::_softmax_backward_data") \
                or "AttentionOp" in e.name:
            return "attention", names[0]
        if e.name in ("aten::addmm", "aten::mm", "aten::matmul", "aten::linear"):
            return "dense and sums (dots)", names[0]
    if names[0] in ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::_to_copy"):
        return "copies, transposes, concatenation", names[0]
    backward = any("Backward" in n or n.startswith("autograd::") for n in names)
    return f"elementwise ({'backward' if backward else 'forward'})", names[0]


def profile_torch_call(fn) -> dict:
    """Profiles one call of the zero-argument PyTorch callable `fn`: {wall_ms, ops: {key:
    (category, detail, ms)}, top: [(name, shapes, ms)]}, the self times summing with 'runtime'
    to wall_ms (operators of the calling thread only: on a CPU, autograd runs the backward there)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        started = time.perf_counter()
        with record_function("jaxmem.profile.call"):
            fn()
        timed = time.perf_counter() - started
    events = prof.events()
    outer = next(e for e in events if e.name == "jaxmem.profile.call")
    ops = collections.defaultdict(float)
    categories = {}
    for event in events:
        if event is outer or event.thread != outer.thread:
            continue
        category, detail = classify_torch(event)
        key = f"{category}|{detail}|{event.name}"
        ops[key] += event.self_cpu_time_total / 1e3
        categories[key] = (category, detail)
    wall = outer.cpu_time_total / 1e3
    out = {key: (*categories[key], ms) for key, ms in ops.items()}
    out["runtime"] = ("runtime", "", max(0.0, wall - sum(ops.values())))  # Python between operators
    top = sorted(((a.key, str(a.input_shapes), a.self_cpu_time_total / 1e3)
                  for a in prof.key_averages(group_by_input_shape=True) if a.key != "jaxmem.profile.call"),
                 key=lambda r: -r[2])[:TOP_OPS]
    return {"wall_ms": wall, "timed_ms": timed * 1e3, "ops": out, "top": top}


# --- tables -------------------------------------------------------------------------------------------

def summarize(calls: list[dict]) -> dict:
    """Averages profiled calls of one side and program: {wall_ms, timed_ms (perf_counter around
    the profiled call: wall_ms plus the annotation's own cost), categories {name: ms},
    convolutions {'direction key': ms}, top [(op, category, detail, ms)]} (ms per call)."""
    n = len(calls)
    categories, convolutions, per_op = (collections.defaultdict(float) for _ in range(3))
    for call in calls:
        for op, (category, detail, ms) in call["ops"].items():
            categories[category] += ms / n
            if category.startswith("convolution"):
                convolutions[f"{category[12:]} {detail}"] += ms / n
            per_op[(op.split("|")[-1], category, detail)] += ms / n
    top = calls[-1].get("top") or [(*key, ms) for key, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:TOP_OPS]]
    return {"wall_ms": sum(c["wall_ms"] for c in calls) / n, "timed_ms": sum(c["timed_ms"] for c in calls) / n,
            "categories": dict(categories),
            "convolutions": dict(sorted(convolutions.items(), key=lambda kv: -kv[1])), "top": top}


def markdown(title: str, sides: dict[str, dict]) -> str:
    """A category table (ms per call and share of the call, side by side), the costliest
    convolutions by direction and shape, and each side's costliest operations (TOP_OPS rows each)."""
    names = list(sides)
    lines = [f"### {title}", "", "| category | " + " | ".join(f"{n} ms | {n} share" for n in names) + " |",
             "|---|" + "---|---|" * len(names)]
    walls = {n: sides[n]["wall_ms"] for n in names}
    for category in CATEGORIES:
        values = [sides[n]["categories"].get(category) for n in names]
        if any(values):
            lines.append(f"| {category} | " + " | ".join(
                f"{v or 0:,.1f} | {(v or 0) / walls[n]:.1%}" for n, v in zip(names, values)) + " |")
    lines.append("| **call (wall)** | " + " | ".join(f"{walls[n]:,.1f} | 100%" for n in names) + " |")
    for name in names:
        lines += ["", f"{name}: convolutions by direction and shape (ms per call)", "",
                  "| convolution | ms | share |", "|---|---|---|"]
        lines += [f"| {key} | {ms:,.1f} | {ms / walls[name]:.1%} |"
                  for key, ms in list(sides[name]["convolutions"].items())[:TOP_OPS]]
        lines += ["", f"{name}: costliest operations (ms per call)", "", "| op | detail | ms |", "|---|---|---|"]
        lines += [f"| {row[0]} | {' '.join(map(str, row[1:-1]))[:90]} | {row[-1]:,.1f} |" for row in sides[name]["top"]]
    return "\n".join(lines)


def profile_sides(sides: dict[str, tuple], calls: int = 2) -> dict[str, dict]:
    """Profiles `calls` calls of each side in turns (the order reversed every other turn) after one
    warm-up call each; sides: name -> ('jax', fn, hlo_text) or ('torch', fn, None). Returns name ->
    summarize() of its calls."""
    parsed = {name: parse_hlo(hlo) for name, (kind, _, hlo) in sides.items() if kind == "jax"}
    results = {name: [] for name in sides}
    for name, (_, fn, _) in sides.items():
        jax.block_until_ready(fn())
    for turn in range(calls):
        for name in list(sides) if turn % 2 == 0 else list(sides)[::-1]:
            kind, fn, hlo = sides[name]
            results[name].append(profile_jax_call(fn, hlo, parsed[name]) if kind == "jax" else profile_torch_call(fn))
    return {name: summarize(results[name]) for name in sides}


def run(size: str, workdir: str, edm_reference: str | None = None, calls: int = 2) -> dict:
    """Profiles every case of edm.CASES[size] (its first compute dtype, one step per call): jaxmem
    against NVlabs's code (`edm_reference`, a checkout of NVlabs/edm) or, without one, the PyTorch
    twin (jaxmem.benchmarks.torch_unet); writes profile.md and profile.json into `workdir` and
    returns the JSON's content: {cases: [{case, program, sides: {name: summarize()}}]}."""
    from jaxmem import io
    from jaxmem.benchmarks import edm, nvlabs_edm

    cases, parts = [], [f"Per-operation profiles, size {size}, {calls} calls per side in turns "
                        f"({jax.devices()[0].device_kind}, jax {jax.__version__}); ms per call. "
                        "Compare shares: the machine's load moves the milliseconds."]
    for preset, dtypes, batch_size, _, _, model, with_torch in edm.CASES[size]:
        row, inputs = edm.measure(preset, dtypes[0], batch_size, 1, model)
        peer_name = "nvlabs" if edm_reference else "torch twin"
        peer = (nvlabs_edm.build(edm_reference, inputs["config"], inputs["params"], inputs["images"], 1)
                if edm_reference else edm.torch_baseline(inputs["config"], inputs["params"], inputs["images"], 1))
        for program in ("step", "forward"):
            sides = {"jaxmem": ("jax", inputs[program], inputs[f"{program}_hlo"]())}
            if with_torch and peer:
                sides[peer_name] = ("torch", peer[program], None)
            result = profile_sides(sides, calls)
            title = f"{program}: {row['method']}, {row['shape']}"
            cases.append({"case": title, "program": program, "sides": result})
            parts.append(markdown(title, result))
    out = {"size": size, "cases": cases}
    io.write_json(os.path.join(workdir, "profile.json"), out)
    io.write_text(os.path.join(workdir, "profile.md"), "\n\n".join(parts) + "\n")
    return out


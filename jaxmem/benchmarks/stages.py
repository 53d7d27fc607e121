"""The pieces of a time-boxed check (launch/gpu_check.py): a budget, commands run with a
timeout and a timestamped log, the set-up of a bare accelerator machine, and the marked section
of BENCHMARKS.md that a check's table fills.

Standard library only: the GPU check imports this module before it has installed the project's
dependencies.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import signal
import subprocess
import threading
import time
import tomllib

# Installed distributions a set-up must not touch: the machine's accelerator build of JAX.
PINNED = ("jax", "jaxlib", "numpy", "ml-dtypes")
PINNED_PREFIXES = ("jax-cuda", "jax-rocm", "libtpu")  # names normalised to lower case with "-"
BEGIN_MARKER, END_MARKER = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"


class Budget:
    """A deadline `total_s` seconds from now, minus `reserve_s` kept back for writing results."""

    def __init__(self, total_s: float, reserve_s: float = 10.0):
        self.total_s, self.reserve_s = total_s, reserve_s
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        """Seconds left for stages (the reserve excluded; may be negative)."""
        return self.total_s - self.reserve_s - self.elapsed()

    def timeout_for(self, estimate_s: float, factor: float = 2.0) -> float:
        """A stage's timeout: `factor` times its estimate, never past the deadline."""
        return max(1.0, min(factor * estimate_s, self.remaining()))


@dataclasses.dataclass
class CommandResult:
    """returncode (None: killed at the timeout), wall seconds, and the output as (seconds since
    the start, line) pairs, stdout and stderr merged."""

    returncode: int | None
    wall_s: float
    lines: list[tuple[float, str]]

    @property
    def text(self) -> str:
        return "".join(line for _, line in self.lines)


def run_command(command: list[str], timeout_s: float, env: dict | None = None, cwd: str | None = None
                ) -> CommandResult:
    """Runs `command` in its own process group, stamping each output line on arrival; at the
    timeout the group gets SIGTERM, then SIGKILL 5 s later."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace", env=env, cwd=cwd, start_new_session=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic() - start, line) for line in process.stdout),
                              daemon=True)
    reader.start()
    try:
        returncode = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        returncode = None
    reader.join(timeout=5.0)
    return CommandResult(returncode, time.monotonic() - start, lines)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group this module started, SIGKILL if it is still there after 5 s."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def tail(text: str, chars: int = 3000) -> str:
    """The last `chars` characters of text (a stage's error tail)."""
    return text if len(text) <= chars else "..." + text[-chars:]


# --------------------------------------------------------------------------- set-up of a bare machine


def requirement_name(requirement: str) -> str:
    """'ml-collections>=1.0' -> 'ml-collections'."""
    return re.match(r"[A-Za-z0-9_.\-]+", requirement.strip()).group(0)


def missing_requirements(pyproject_path: str, extras: tuple[str, ...] = ("test",)) -> list[str]:
    """The project's requirements (dependencies and `extras`) with no installed distribution."""
    with open(pyproject_path, "rb") as f:
        project = tomllib.load(f)["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project.get("optional-dependencies", {}).get(extra, [])
    return [r for r in requirements if not _installed(requirement_name(r))]


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def constraints_text() -> str:
    """pip constraints pinning the installed PINNED distributions and every installed
    distribution named with a PINNED_PREFIXES prefix (the accelerator plugins) to their versions."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "").lower())
        if name in PINNED or name.startswith(PINNED_PREFIXES):
            pins[name] = dist.version
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def pip_install_command(python: str, requirement: str, constraints_path: str, wheels_dir: str | None) -> list[str]:
    """pip install of one requirement under the constraints: from the wheels in `wheels_dir` only
    (--no-index) when given, else from the package index with short network timeouts."""
    command = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-cache-dir",
               "--constraint", constraints_path]
    if wheels_dir:
        command += ["--no-index", "--find-links", wheels_dir]
    else:
        command += ["--timeout", "10", "--retries", "1"]
    return command + [requirement]


# --------------------------------------------------------------------------- BENCHMARKS.md


def replace_section(text: str, section: str) -> str:
    """text with everything between BEGIN_MARKER and END_MARKER replaced by `section`.

    Raises ValueError when the markers are missing or out of order.
    """
    begin, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if begin < 0 or end < begin:
        raise ValueError(f"{BEGIN_MARKER} ... {END_MARKER} not found (in this order); "
                         "the GPU section of BENCHMARKS.md holds them")
    return text[:begin + len(BEGIN_MARKER)] + "\n" + section.strip() + "\n" + text[end:]


def nvidia_smi() -> dict | None:
    """{name, driver, memory} of GPU 0 from nvidia-smi, or None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    name, driver, memory = (field.strip() for field in out.stdout.splitlines()[0].split(","))
    return {"name": name, "driver": driver, "memory": memory}

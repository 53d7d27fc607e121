"""Compile a preset's programs for TPU and GPU targets on this CPU host, and cost them
(jaxmem.experiments.compile_check): per device and call, memory against the target's HBM, FLOPs,
bytes, collectives, compile time and a roofline lower bound; device-hours of the whole run.

    python launch/compile_check.py --config=configs/edm_training.py:cifar10_1k --target=v5e-8,h100x8 \\
        [--programs=train_step,sampler] --workdir=runs/compile_check
    make compile-check     # the smoke presets for v5e-8 and h100x8

Needs the compile-only packages (libtpu, the CUDA plugin), which live in their own environment:
`make accelerators` creates .venv-accelerators (make compile-check does it). No device is used:
the host runs on CPU. Experiments: edm_training, noise_regimes, gmm_crossover,
sample_quality.
Targets: v5e-8, v5e-32, v5e-256, v5p-32, v6e-8, h100x1, h100x8, h100x32, h100x256, h200x1 (jaxmem.targets).
A program that does not compile or fit prints one `error:` line each and the exit status is 1.
"""

import os
import sys

# Compile-only: the host's own jax runs on CPU whatever accelerator plugins are installed, and
# several processes may load libtpu at once (it locks itself to one process otherwise).
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxmem import cli, programs, targets  # noqa: E402
from jaxmem.validation import require_choice  # noqa: E402
from jaxmem.experiments import compile_check  # noqa: E402

_TARGETS = flags.DEFINE_list("target", ["v5e-8", "h100x8"], f"Targets to compile for: {', '.join(targets.TARGETS)}.")
_PROGRAMS = flags.DEFINE_list("programs", [], "Programs to compile (default: every program the preset runs).")


def family() -> str:
    """The config family: the basename of the --config file (configs/edm_training.py -> edm_training)."""
    return os.path.splitext(os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"])))[0]


def validate(config):
    del config
    require_choice("--config (its file's family)", family(), programs.FAMILIES)
    for name in _TARGETS.value:
        targets.check_packages(targets.get_target(name))


def main(config, workdir):
    try:
        compile_check.run(family(), config, workdir, _TARGETS.value, _PROGRAMS.value)
    except compile_check.CompileFailure as e:
        print("\n".join(f"error: {line}" for line in str(e).splitlines()), file=sys.stderr)
        sys.exit(1)  # a program did not compile or does not fit


if __name__ == "__main__":
    cli.run_main(main, default_workdir="runs/compile_check", validate=validate)

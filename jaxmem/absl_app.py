"""absl's app.run with `--help` answered on stdout with exit status 0 (absl's own exits 1).
Standard library and absl only: launch/gpu_check.py uses it before jax is installed; jaxmem.cli
re-exports it for the other launchers."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags

HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort")


def run_app(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """absl's app.run for the launchers that define their own flags, with --help answered as the
    config launchers answer it: the launcher's docstring and its flags, exit status 0."""
    argv = sys.argv if argv is None else argv
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print((sys.modules["__main__"].__doc__ or "").strip() + "\n\n" + flags.FLAGS.main_module_help())
        sys.exit(0)
    app.run(main, argv=argv)

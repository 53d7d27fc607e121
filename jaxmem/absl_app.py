"""absl's app.run for the launchers with their own flags: `--help` answered on stdout with exit
status 0 (absl's own exits 1), a flag that does not parse or an app.UsageError one `error:` line
and exit 2 (absl prints its usage text and exits 1). Standard library and absl only:
launch/gpu_check.py uses it before jax is installed; jaxmem.cli re-exports it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags

HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort")
USAGE_EXIT_CODE = 2


def fail(message: str, code: int = USAGE_EXIT_CODE) -> NoReturn:
    """Prints `error: <message>` on stderr and exits with status `code` (default 2, a usage error)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, a flag that does not parse (--size=huge, --parallel=two) failing in one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:  # several missing required flags: one line each, joined
        fail("; ".join(str(error).splitlines()))


def run_app(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """absl's app.run for the launchers that define their own flags, with --help answered as the
    config launchers answer it: the launcher's docstring and its flags, exit status 0; flag and
    usage errors are one `error:` line, exit 2."""
    argv = sys.argv if argv is None else argv
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print((sys.modules["__main__"].__doc__ or "").strip() + "\n\n" + flags.FLAGS.main_module_help())
        sys.exit(0)

    def main_or_usage_error(args: list[str]):
        try:
            return main(args)
        except app.UsageError as error:
            fail(str(error))

    app.run(main_or_usage_error, argv=argv, flags_parser=parse_flags)

"""The shared absl entry point of every launcher in launch/.

    python launch/<x>.py --config=configs/<x>.py:<preset> [--config.a.b=value ...] --workdir=DIR

`--help` lists the presets of the launcher's config family and the fields of a preset with
their values. The command line and then the whole config are checked before any work: a
problem the user can fix (unknown preset or field, missing file, bad value, unusable data:
jaxmem.validation.ConfigError) prints one `error: ...` line and exits 2; `--verbosity=1` shows the
traceback instead. The resolved config is written into the workdir before the run starts;
rerunning the same command resumes (or skips finished work) from what the workdir holds.

One owner per workdir: the run holds `<workdir>/.lock` (jaxmem.lock; process 0 of a multi-host
job holds it for all): a second launcher on a busy workdir exits 2 at once naming the owner's
pid and host; a stale lock (its process gone) is taken over. A result or checkpoint that
cannot be written (full disk, read-only folder: jaxmem.io.WriteError) stops the run with one
`error: ...` line naming the file, the cause and the last good checkpoint, and exit status 1.
A training run stopped by SIGTERM saves a checkpoint and exits 143 (jaxmem.train.Preempted).
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import pathlib
import re
import signal
import sys
import textwrap
from collections.abc import Callable, Mapping
from typing import NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

import jax

from jaxmem import absl_app, compile_cache, footprint, io, lock, parallel
from jaxmem.absl_app import HELP_FLAGS, USAGE_EXIT_CODE, fail, run_app  # noqa: F401  (run_app: for launchers)
from jaxmem import workdir as ownership
from jaxmem.config import config_module, get_field, load_config
from jaxmem.validation import ConfigError, check_finite, check_override, config_fields, require
from jaxmem.train import Preempted

WRITE_ERROR_EXIT_CODE = 1
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # 143: stopped and saved; schedulers requeue it


class _QuietLibraries(std_logging.Filter):
    """Drops INFO-level chatter of orbax (hundreds of lines per checkpoint) and jax's backend
    probe ("Unable to initialize backend 'tpu'" on every machine without one) and its compilation
    cache's "Resetting cache at ..."; warnings pass.
    With `errors_too` (the default verbosity) it also drops the error reports orbax logs from
    its background threads, each with a traceback, several per failure (also through asyncio
    as "Task exception was never retrieved"): jaxmem.train.checkpoint reports every failed
    checkpoint save or restore in one line of its own."""

    QUIET_PATHS = ("/orbax/", "/jax/_src/xla_bridge.py", "/jax/_src/compilation_cache.py")
    ERROR_PATHS = ("/orbax/", "/asyncio/")

    def __init__(self, errors_too: bool):
        super().__init__()
        self.errors_too = errors_too

    def filter(self, record: std_logging.LogRecord) -> bool:
        if self.errors_too and record.levelno >= std_logging.ERROR and any(
                p in record.pathname for p in self.ERROR_PATHS):
            return False
        return record.levelno >= std_logging.WARNING or not any(p in record.pathname for p in self.QUIET_PATHS)


def quiet_libraries() -> None:
    """Installs _QuietLibraries on absl's log handler (call once flags are parsed; --verbosity >= 1
    keeps the libraries' error reports)."""
    logging.get_absl_handler().addFilter(_QuietLibraries(errors_too=flags.FLAGS.verbosity < 1))


@contextlib.contextmanager
def user_errors(*kinds: type[Exception], code: int = USAGE_EXIT_CODE):
    """Turns ConfigError (and exceptions of `kinds`) into fail(message, code); under --verbosity
    >= 1 (once flags are parsed) they propagate with their traceback."""
    try:
        yield
    except (ConfigError, *kinds) as e:
        if flags.FLAGS.is_parsed() and flags.FLAGS.verbosity >= 1:
            raise
        fail(str(e), code)


def config_arguments(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the --config value, the dotted fields of the --config.<field> overrides) in argv."""
    spec, fields = None, []
    for i, arg in enumerate(argv[1:], 1):
        name, eq, value = arg.partition("=")
        if name == "--config":
            spec = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
        elif name.startswith("--config."):
            fields.append(name[len("--config."):])
    return spec, fields


def default_config_file(launcher: str) -> str | None:
    """configs/<experiment>.py of launch/<experiment>.py, or None when there is none."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(launcher))), "configs",
                        os.path.basename(launcher))
    return os.path.relpath(path) if os.path.isfile(path) else None


def field_lines(config: ml_collections.ConfigDict, descriptions: Mapping[str, str] | None = None,
                width: int = 100) -> list[str]:
    """The config's fields with their values, one wrapped block per group: '  group: a=1 b=(2, 3)',
    or '  group: <description>' and then the values when `descriptions` ({group: one line}) has it."""
    groups: dict[str, list[str]] = {}
    for path, value in config_fields(config):
        group, _, name = path.rpartition(".")
        groups.setdefault(group, []).append(f"{name}={value!r}")
    lines = []
    for group, items in groups.items():
        label = f"  {group or '(top level)'}: "
        description = (descriptions or {}).get(group)
        if description:
            lines += [one_line(label + description, width)]
            label = "      "
        lines.append(textwrap.fill(" ".join(items), width, initial_indent=label, subsequent_indent="      ",
                                   break_on_hyphens=False))
    return lines


def docstring_entries(doc: str | None, section: str) -> dict[str, str]:
    """{name: description} of a config file docstring's section, e.g. its "Presets (...):" or
    "Fields:" list, whose entries read '  name   description' with deeper indented continuation
    lines (joined into one line); 'a / b   description' or 'a, b' followed by the description's
    lines describes both. Empty without the section."""
    entries: dict[str, list[str]] = {}
    inside, names = False, []
    for line in (doc or "").splitlines():
        if not inside:
            inside = line.startswith(section)
            continue
        if not line.strip() or not line.startswith(" "):
            if entries:
                break
            continue
        match = re.match(r"^  (\w+(?:(?: / |, )\w+)*)(?:\s+(\S.*))?$", line)
        if match:
            names = re.split(r" / |, ", match.group(1))
            for name in names:
                entries[name] = [match.group(2) or ""]
        else:
            for name in names:
                entries[name].append(line.strip())
    return {name: " ".join(p for p in parts if p) for name, parts in entries.items()}


def one_line(text: str, width: int) -> str:
    """text cut to `width` characters, ending in '...' when cut."""
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def launcher_help(launcher: str, spec: str | None) -> str:
    """The launcher's docstring, the presets of its config family and the fields of one preset,
    each with the first line of its description in the config file's docstring."""
    lines = [(sys.modules["__main__"].__doc__ or "").strip(), ""]
    spec = spec or default_config_file(launcher)
    if spec:
        path, _, preset = spec.partition(":")
        module = config_module(path)
        config = module.get_config(preset or None)
        preset = config.get("preset", preset)
        described = docstring_entries(module.__doc__, "Presets")
        presets = list(getattr(module, "PRESETS", ()))
        if presets:
            lines.append(f"Presets of {path} (--config={path}:<preset>; the file's docstring says more):")
            pad = max(map(len, presets))
            lines += [one_line(f"  {name:<{pad}s}  {described.get(name, '')}".rstrip(), 100) for name in presets]
        lines += [f"Fields of {path}:{preset} (override: --config.<group>.<field>=<value>):",
                  *field_lines(config, docstring_entries(module.__doc__, "Fields")), ""]
    lines.append(textwrap.fill(f"Flags: --workdir (default {flags.FLAGS['workdir'].default}); --config=<file>:<preset> "
                               "--help shows that preset's fields; --verbosity=1 shows tracebacks; --helpfull lists "
                               "every flag.", 100))
    return "\n".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing behind a check of --config and its overrides, with --help replaced."""
    spec, fields = config_arguments(argv)
    with user_errors(FileNotFoundError):
        if any(arg in HELP_FLAGS for arg in argv[1:]):
            print(launcher_help(argv[0], spec))
            sys.exit(0)
        if spec is not None:
            config = load_config(spec)
            for field in fields:
                get_field(config, field)
        return absl_app.parse_flags(argv)


def _exit_on_signal(signum, frame) -> NoReturn:
    del frame
    logging.warning("signal %d: stopping", signum)
    sys.exit(128 + signum)


def run_main(run: Callable[[ml_collections.ConfigDict, str], object], default_workdir: str,
             validate: Callable[[ml_collections.ConfigDict], None] | None = None,
             subfolders: Callable[[ml_collections.ConfigDict, str], Mapping[str, str]] | None = None) -> None:
    """Defines the launcher's flags, resolves them, checks the config (finite numbers, then
    validate(config), which ends with the memory estimate of jaxmem.footprint) and the workdir's
    owner (jaxmem.workdir: the launcher's name), then locks and claims the workdir and runs
    run(config, workdir).

    subfolders(config, workdir) -> {folder: owner}: other workdirs the run writes (e.g. the
    swap experiment's EDM model folders), checked, locked and claimed like the workdir.
    """
    config_flag = config_flags.DEFINE_config_file("config", None, "configs/<experiment>.py:<preset>",
                                                  lock_config=True)
    flags.DEFINE_string("workdir", default_workdir, "Folder that receives everything the run writes.")
    flags.DEFINE_string("compile_cache", compile_cache.default_folder(), "Folder of JAX's persistent "
                        "compilation cache, shared by runs (jaxmem.compile_cache); empty: off.")
    flags.DEFINE_bool("memory_check", True, "Refuse a run whose estimated memory exceeds the host's available "
                      "memory (jaxmem.footprint); --nomemory_check runs it anyway.")

    def main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
        if config_flag.value is None:
            fail("--config=configs/<experiment>.py:<preset> is required (--help lists the presets)")
        workdir = os.path.abspath(flags.FLAGS.workdir)
        config = config_flag.value
        with user_errors():
            quiet_libraries()
            parallel.initialize_distributed()
            spec, fields = config_arguments(sys.argv)
            preset = load_config(spec)
            for field in fields:
                check_override(field, get_field(preset, field), get_field(config, field))
            check_finite(config)
            if validate is not None:
                with footprint.checking(flags.FLAGS.memory_check):
                    validate(config)
            require(not os.path.exists(workdir) or os.path.isdir(workdir), "--workdir", workdir,
                    "a folder or a path to create, not an existing file")
            owners = {workdir: (ownership.launcher_name(), ownership.recorded_fields_of(config))}
            for folder, owner in (subfolders(config, workdir) if subfolders else {}).items():
                folder = os.path.abspath(folder)
                owners[folder] = (owner, lambda f: f.startswith(workdir + os.sep))  # inside the workdir: ours
            for folder, (owner, adopt) in owners.items():
                ownership.check(folder, owner, adopt)
        compile_cache.enable(flags.FLAGS.compile_cache)
        # SIGTERM (a scheduler, the sweep driver) unwinds like an exception, so the lock is released;
        # the EDM trainer replaces this handler while it trains to save first.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        primary = jax.process_index() == 0
        # The inner user_errors answers config errors, a busy or foreign workdir (exit 2), the outer one
        # a failed write (exit 1); the locks are released before either prints.
        with (user_errors(io.WriteError, code=WRITE_ERROR_EXIT_CODE), user_errors(lock.WorkdirBusy),
              contextlib.ExitStack() as held):
            for folder, (owner, adopt) in owners.items():
                held.enter_context(lock.held(folder, enabled=primary))
                if primary:
                    ownership.claim(folder, owner, adopt)
            # A rerun with another config must not relabel the workdir before the experiment's own
            # fingerprint check has accepted it: then the config is recorded after a successful run.
            previous = os.path.join(workdir, "config.json")
            changed = os.path.exists(previous) and pathlib.Path(previous).read_text() != io.config_json(config)
            if not changed:
                io.save_config(workdir, config)
            try:
                run(config, workdir)
            except Preempted as stopped:  # a checkpoint is saved: the scheduler may requeue the command
                logging.warning("%s", stopped)
                sys.exit(PREEMPTED_EXIT_CODE)
            if changed:
                io.save_config(workdir, config)

    app.run(main, flags_parser=parse_flags)

"""JAX's persistent compilation cache for the launchers: compiled programs are written to a folder
and reused by later processes, so a rerun, a resume or the runs of a sweep that share a network do
not compile again (the EDM train step takes tens of seconds to compile on a CPU, minutes for the
CIFAR-10 network).

Every launcher (jaxmem.cli.run_main) calls `enable(flag value)` before any work; the folder is
--compile_cache, by default $JAX_COMPILATION_CACHE_DIR or ~/.cache/jaxmem/xla; an empty value
(--compile_cache=) turns the cache off. An entry is keyed by the program, the compile options,
the JAX/XLA versions and the devices, so a changed network or another machine misses the cache
instead of loading a wrong program; reading an entry is bitwise the program a compile would
produce, so results do not depend on the cache.
"""

from __future__ import annotations

import os

import jax
from jax.experimental.compilation_cache import compilation_cache

DEFAULT_FOLDER = os.path.join("~", ".cache", "jaxmem", "xla")
MIN_COMPILE_SECONDS = 1.0  # programs compiling faster than this are not worth a file
MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"  # JAX's own variable; wins when set


def default_folder() -> str:
    """$JAX_COMPILATION_CACHE_DIR if set, else ~/.cache/jaxmem/xla."""
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or DEFAULT_FOLDER


def enable(folder: str | None, min_compile_seconds: float = MIN_COMPILE_SECONDS) -> str | None:
    """Points JAX's persistent compilation cache at `folder` (created; ~ expanded) for the rest of
    the process and returns its absolute path; None or '' turns the cache off and returns None.

    Programs that compile in under `min_compile_seconds` ($JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS
    when set: the test suite sets 0, so the small programs its ~60 launcher processes share are
    stored too) are not stored. Takes effect also when something was compiled before (the cache is
    re-initialised).
    """
    if not folder:
        jax.config.update("jax_compilation_cache_dir", None)
        compilation_cache.reset_cache()
        return None
    folder = os.path.abspath(os.path.expanduser(folder))
    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    min_compile_seconds = float(os.environ.get(MIN_COMPILE_ENV, min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()  # a cache initialised earlier without a folder would stay off
    return folder

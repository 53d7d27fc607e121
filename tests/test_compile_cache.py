"""The persistent compilation cache: a second process loads what the first compiled (JAX's own
cache-hit/miss monitoring events, no wall-clock thresholds); an empty folder turns it off."""

import json
import os
import subprocess
import sys

import jax

from jaxmem import compile_cache

PROBE = """
import json, sys
import jax, jax.numpy as jnp
from jax import monitoring
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
import jax

from jaxmem import compile_cache
folder = compile_cache.enable(sys.argv[1] or None, min_compile_seconds=0)
step = jax.jit(lambda w, x: jnp.tanh(x @ w).sum())
jax.block_until_ready(jax.grad(step)(jnp.ones((8, 8)), jnp.ones((4, 8))))
print(json.dumps({"folder": folder, "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""


def _probe(folder: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", PROBE, folder], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_programs_the_first_compiled(tmp_path):
    folder = str(tmp_path / "xla")
    first = _probe(folder)
    assert first["folder"] == folder and first["misses"] >= 1 and first["hits"] == 0
    entries = os.listdir(folder)
    assert entries
    second = _probe(folder)
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert sorted(os.listdir(folder)) == sorted(entries)


def test_an_empty_folder_turns_the_cache_off(tmp_path):
    off = _probe("")
    assert off == {"folder": None, "hits": 0, "misses": 0}


def test_the_default_folder_follows_jax_environment_variable(monkeypatch):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere/xla")
    assert compile_cache.default_folder() == "/somewhere/xla"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    assert compile_cache.default_folder() == os.path.join("~", ".cache", "jaxmem", "xla")


def test_jax_minimum_compile_time_variable_wins_over_the_default(monkeypatch, tmp_path):
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    try:
        monkeypatch.setenv(compile_cache.MIN_COMPILE_ENV, "0.25")
        compile_cache.enable(str(tmp_path))
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.25
        monkeypatch.delenv(compile_cache.MIN_COMPILE_ENV)
        compile_cache.enable(str(tmp_path))
        assert jax.config.jax_persistent_cache_min_compile_time_secs == compile_cache.MIN_COMPILE_SECONDS
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
        compile_cache.enable(before[0])

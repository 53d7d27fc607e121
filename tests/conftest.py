"""Test set-up: 8 fake CPU devices so every sharded path is exercised on one machine, and one
persistent compilation cache for the whole suite, which stores every program, not only those that
compile in over a second as the launchers' default does (a warm launcher run of the EDM smoke
preset: 44 s instead of 56 s).

XLA_FLAGS must be set before jax is imported anywhere, hence here at collection time. The cache
folder (runs/test_xla_cache, ignored by git; $JAX_COMPILATION_CACHE_DIR wins when set) is read by
JAX in this process and inherited by every launcher a test starts, so a program compiled once --
the smoke U-Net's step, a preset's training grid -- is loaded, not compiled, by the other tests and
subprocesses that build it again, and by the next run of the suite. An entry is keyed by the
program, the compile options, the versions and the devices, and loads bitwise the program a
compile would give, so no result depends on it.
"""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(REPO, "runs", "test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # small programs too: ~60 launchers share them

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)


def first_in_fast_tier(cases) -> list:
    """pytest.param per case of a parametrised launcher test, each a subprocess of ~5 s (Python,
    jax and the experiment imported): the first case stays in the fast tier, the others are marked
    slow, so `make test-fast` still starts a launcher of each kind and `make test` runs them all."""
    return [pytest.param(case, marks=() if i == 0 else pytest.mark.slow) for i, case in enumerate(cases)]


# The files that take longest on 2 cores (pytest --durations), in that order. They are collected
# first, so the xdist workers (make test: a file per worker at a time, handed out in collection
# order) start them early and finish together instead of one worker running the longest file
# alone at the end. Every other file keeps its order after them.
LONGEST_FIRST = ("test_swap_experiment.py", "test_metrics_parity.py", "test_edm_training.py",
                 "test_reliability_inputs.py", "test_posthoc_ema.py", "test_multihost.py", "test_edm_import.py",
                 "test_compile_check.py", "test_sweep.py", "test_unet_step_numbers.py", "test_first_hour.py",
                 "test_gpu_check.py", "test_gmm_train.py", "test_gmm_crossover.py", "test_faults.py",
                 "test_capacity_search.py", "test_unet_speed_parts.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: file order kept

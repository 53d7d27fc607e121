# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= runs/demo
# Compile-only accelerator packages (libtpu, the CUDA plugin) live in their own environment.
ACCEL  ?= .venv-accelerators
ACCEL_PY := $(ACCEL)/bin/python

.PHONY: demo test test-fast bench gpu-check accelerators compile-check clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(ACCEL)/.installed: pyproject.toml
	test -x $(ACCEL_PY) || $(PYTHON) -m venv $(ACCEL)
	$(ACCEL_PY) -m pip install -q --upgrade pip
	$(ACCEL_PY) -m pip install -q -e '.[accelerators]'
	touch $@

accelerators: $(ACCEL)/.installed

demo: $(VENV)/.installed
	$(PY) launch/gmm_crossover.py --config=configs/gmm_crossover.py:demo --workdir=$(WORKDIR)

# Tests run in TEST_WORKERS processes (pytest-xdist), a test file per process at a time, so a
# file's module fixtures are built once; TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: $(VENV)/.installed $(ACCEL)/.installed
	$(PYTEST) tests

# The fast tier: every test but those marked slow (a call or fixture set-up of more than ~5 s).
test-fast: $(VENV)/.installed
	$(PYTEST) -m "not slow" tests

# The smoke preset compiled for a TPU slice and 8 GPUs on this CPU host (launch/compile_check.py).
compile-check: $(ACCEL)/.installed
	$(ACCEL_PY) launch/compile_check.py --config=configs/edm_training.py:smoke --target=v5e-8,h100x8 \
	    --workdir=runs/compile_check $(COMPILE_CHECK_FLAGS)

bench: $(VENV)/.installed
	$(PY) launch/bench.py --workdir=runs/bench

# Every GPU figure in one call of <= 8 min (BENCHMARKS.md, GPU; --help lists stages and outputs).
# Runs with the machine's own python3 and its JAX for CUDA, not the venv; results in $OUT or runs/gpu_check.
gpu-check:
	$(PYTHON) launch/gpu_check.py $(GPU_CHECK_FLAGS)

clean:
	rm -rf runs .pytest_cache

# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= runs/demo

.PHONY: demo test bench gpu-check clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) launch/crossover.py --config=configs/crossover.py:demo --workdir=$(WORKDIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(PY) launch/bench.py --workdir=runs/bench

# Every GPU figure in one call of <= 8 min (BENCHMARKS.md, GPU; --help lists stages and outputs).
# Runs with the machine's own python3 and its JAX for CUDA, not the venv; results in $OUT or runs/gpu_check.
gpu-check:
	$(PYTHON) launch/gpu_check.py $(GPU_CHECK_FLAGS)

clean:
	rm -rf runs .pytest_cache

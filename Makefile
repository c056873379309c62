# Two commands do everything on a fresh machine:
#   make demo   set up, train a small policy, evaluate it against the optimizer, print and plot
#   make test   set up, run the test suite
# The virtual environment is made here; torch is pinned to the local CPU wheel (constraints.txt).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[rl,profiling,onnx,sign,dev,service,sweep]"
	touch $(STAMP)

demo: setup
	PYTHON=$(PY) bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/bench_optimizer.py

clean:
	rm -rf $(VENV) runs out

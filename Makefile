# Every target sets up its own virtual environment (.venv) on first use, installing the
# pinned versions from constraints.txt (torch 2.13.0 CPU wheel: no CUDA download).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?= --durations=10

.PHONY: install demo test test-fast test-slow bench lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,dev]"
	touch $(STAMP)

## make demo: IVAE vs VAE on simulated nonstationary sources (a few minutes on 2 CPU cores)
demo: $(STAMP)
	$(VENV)/bin/pyrocrl demo --out demo_output

## make test: the fast tier, then the slow recovery tier at small scale (what CI runs)
test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

## make bench: the benchmarks at full size; results land in benchmarks/results/
bench: $(STAMP)
	$(PY) benchmarks/ivae.py
	$(PY) benchmarks/overhead.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache

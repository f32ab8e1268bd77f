# The two commands: `make run` and `make test`. Both create .venv and install jaxebm first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Two test processes (pytest-xdist): compilation is single-threaded, so the second core would
# idle through most of a one-process run on the 2-core CI machine.
PYTEST_ARGS ?= -n 2

.PHONY: run test test-all bench lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,experiments,speech]"
	touch $(STAMP)

# The default EBM on built-in data: the 2-D toy config on two densities (~2 min each on 2 cores).
TOY2D_DATASETS ?= 8gaussians rings

run: $(STAMP)
	@for name in $(TOY2D_DATASETS); do \
	  $(PY) -m experiments.train --config=experiments/configs/toy2d.py \
	    --config.data.name=$$name --workdir=runs/toy2d-$$name || exit 1; \
	done

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

# Peers (blackjax, PyTorch) run only when named: make bench BENCH_ARGS="--peers DIR ..."
BENCH_ARGS ?=

bench: $(STAMP)
	$(PY) -m scripts.bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache

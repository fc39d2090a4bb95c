# bilevel_jax: every target installs what it needs into ./.venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: setup run prepare-data test test-slow test-all ntk-oracle bench clean-venv

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# The main job (README's first command): CPU-scale FSDD active learning, bilevel vs uniform,
# one seed, 10 -> 30 labels (8 min measured on 2 idle cores); resumable, ends with a table and a plot.
run: setup
	$(BIN)/python -m experiments.active_learning --config=experiments/configs/fsdd.py:quick --workdir=runs/al_fsdd_quick --resume

# Validate and cache FSDD, print counts, plot example log-mels.
prepare-data: setup
	$(BIN)/python -m experiments.prepare_data --dataset=fsdd --workdir=runs/prepare_fsdd

# Fast suite (README's second command; .ci/run calls exactly this): < 20 min on 2 cores.
test: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" --durations=15

# Tests marked slow (minutes each).
test-slow: setup
	$(BIN)/python -m pytest -q -m slow --durations=15

test-all: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=25

# neural-tangents 0.6.5 oracle in its own pinned env (.venv-ntk-oracle, ~650 MB, no tensorflow).
ntk-oracle: setup
	PY=$(PY) scripts/ntk_oracle/build_env.sh .venv-ntk-oracle
	.venv-ntk-oracle/bin/python scripts/ntk_oracle/compare.py --ours_python=$(BIN)/python

clean-venv:
	rm -rf $(VENV)

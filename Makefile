# bilevel_jax: every target installs what it needs into ./.venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: lint setup run prepare-data test test-slow test-all ntk-oracle bench clean-venv

# Python >= 3.11 (the pinned numpy, scipy and jax need it): checked before anything is installed.
$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "bilevel_jax needs Python >= 3.11, but PY=$(PY) is $$($(PY) --version 2>&1)." >&2; \
	  echo "Install python3.11 (or newer) and run: make setup PY=python3.11" >&2; exit 1; }
	@echo "Installing bilevel_jax into $(VENV) with its pinned dependencies (jax/jaxlib, flax,"
	@echo "optax, numpy, scipy, librosa, matplotlib, scikit-learn, pytest, ...): about 1.3 GB on"
	@echo "disk; this takes a few minutes, mostly downloading. pip lists each package below."
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e ".[test]" \
	  | grep --line-buffered -E '^(Collecting|Successfully installed)' || true
	@test -x $(BIN)/python && $(BIN)/python -c 'import bilevel_jax, jax, flax, librosa' \
	  || { echo "Install failed: see pip's messages above." >&2; exit 1; }
	@echo "Installed into $(VENV)."
	touch $(STAMP)

setup: $(STAMP)

# The main job (README's first command): CPU-scale FSDD active learning, bilevel vs uniform,
# one seed, 10 -> 30 labels (the README gives its measured time); resumable, ends with a table
# and a plot.
run: setup
	$(BIN)/python -m experiments.active_learning --config=experiments/configs/fsdd.py:quick --workdir=runs/al_fsdd_quick --resume

# Validate and cache FSDD, print counts, plot example log-mels.
prepare-data: setup
	$(BIN)/python -m experiments.prepare_data --dataset=fsdd --workdir=runs/prepare_fsdd

# Fast suite (README's second command; .ci/run calls exactly this): every module, no test over
# ~30 s on 2 cores (the README gives the suite's measured time). -rs prints each skip's reason.
test: setup lint
	$(BIN)/python -m pytest -q -rs -n $(PYTEST_WORKERS) -m "not slow" --durations=15

# ruff: bug-class lint errors and the house format (2-space indent, 100 columns).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Tests marked slow (over ~30 s each on 2 cores).
test-slow: setup
	$(BIN)/python -m pytest -q -rs -m slow --durations=15

test-all: setup
	$(BIN)/python -m pytest -q -rs -n $(PYTEST_WORKERS) --durations=25

# neural-tangents 0.6.5 oracle in its own pinned env (.venv-ntk-oracle, ~650 MB, no tensorflow).
ntk-oracle: setup
	PY=$(PY) scripts/ntk_oracle/build_env.sh .venv-ntk-oracle
	.venv-ntk-oracle/bin/python scripts/ntk_oracle/compare.py --ours_python=$(BIN)/python
	.venv-ntk-oracle/bin/python scripts/ntk_oracle/compare.py --activations --n=64 \
	  --ours_python=$(BIN)/python

clean-venv:
	rm -rf $(VENV)

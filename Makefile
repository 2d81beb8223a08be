# Two entry points that work on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= configs/default.yaml
# Which build of torch 2.13.0 to install into a new .venv. Empty: PyPI's (on Linux x86_64 the CUDA build, with
# NVIDIA's libraries as packages) or a wheel found on local disk. A PyTorch index picks another build:
#   make clean install TORCH_INDEX=https://download.pytorch.org/whl/cpu     # CPU only, a fraction of the size
#   make clean install TORCH_INDEX=https://download.pytorch.org/whl/cu128   # a chosen CUDA version
TORCH_INDEX ?=

.PHONY: run test lint install system-deps clean gc

PY311 := import sys; sys.exit(sys.version_info[:2] != (3, 11))
# What is wrong with the Python that .venv is (or would be) made with; empty when it is a working 3.11.
python_problem = $(shell if [ -e $(BIN)/python ]; then \
	$(BIN)/python -c '$(PY311)' 2>/dev/null || echo "$(VENV) is broken or not Python 3.11: run 'make clean', then make again"; \
	elif ! $(PYTHON) -c '$(PY311)' >/dev/null 2>&1; then \
	echo "alignflow needs Python 3.11 and $(PYTHON) is $$($(PYTHON) -c 'import platform; print(platform.python_version())' 2>/dev/null || echo missing): install 3.11 (e.g. pyenv install 3.11) or run make PYTHON=/path/to/python3.11"; fi)
# A recipe's first line: stops make with that one line before anything runs.
check_python = $(if $(python_problem),$(error $(python_problem)))

# requirements.lock pins every transitive version that was resolved and tested together.
$(STAMP): pyproject.toml requirements.lock
	$(check_python)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		-c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(check_python)
	$(BIN)/alignflow run --config $(CONFIG)

lint: $(STAMP)
	$(check_python)
	$(BIN)/ruff check .

# The ops tests run a real PostgreSQL and take an MLflow UI screenshot in headless Chromium (Debian packages).
system-deps:
	@if command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null; \
	else echo "note: chromium/postgresql missing and not root: the ops tests that need them will skip"; fi

test: $(STAMP) system-deps
	$(check_python)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -rs --durations=15

# What no run needs any more: Ray checkpoints of completed runs, unused prepared corpora (see flows/gc.py).
# GC_ARGS=--dry-run to see what would go; --older-than DAYS (default 7).
gc: $(STAMP)
	$(BIN)/alignflow gc --config $(CONFIG) $(GC_ARGS)

# The installation and tool caches only. Never the MLflow store (mlflow.db, mlartifacts/: runs and registered
# models) nor alignflow-work/ (checkpoints of runs that may be resumed): `make gc` prunes those safely.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

# Two entry points that work on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= configs/default.yaml

.PHONY: run test lint install system-deps clean

# requirements.lock pins every transitive version that was resolved and tested together.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/alignflow run --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check .

# The ops tests run a real PostgreSQL and take an MLflow UI screenshot in headless Chromium (Debian packages).
system-deps:
	@if command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null; \
	else echo "note: chromium/postgresql missing and not root: the ops tests that need them will skip"; fi

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -rs --durations=15

clean:
	rm -rf $(VENV) alignflow-work mlflow.db mlartifacts

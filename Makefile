# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each builds .venv on first use and is a no-op install on the next run.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test test-all lint install clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check awac_robot tests bench docs
	$(BIN)/ruff format --check awac_robot tests bench docs
	$(BIN)/mypy  # awac_robot, bench and the example driver in docs, strict: pyproject.toml [tool.mypy]

test: lint
	$(BIN)/pytest

# Also the tests marked slow (50-episode demonstrator checks, longer training runs).
test-all: lint
	$(BIN)/pytest -m ''

demo: $(STAMP)
	$(BIN)/awac-robot demo

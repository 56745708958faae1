# Two entry points: `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup train test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: setup
	$(BIN)/mimicry train task=gan $(ARGS)

test: setup
	$(BIN)/python -m pytest -q -n 2 $(ARGS)  # two workers, one torch thread each (tests/conftest.py)

clean:
	rm -rf outputs multirun lightning_logs mlartifacts .pytest_cache

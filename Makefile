# The two commands of the README: `make run` (the console) and `make test` (the test suite).
# Each creates or updates .venv first, so both work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test setup setup-test

run: setup
	$(PY) app.py $(ARGS)

test: setup-test
	$(PY) -m pytest $(PYTEST_ARGS)

setup:
	@VENV=$(VENV) scripts/setup_env.sh run

setup-test:
	@VENV=$(VENV) scripts/setup_env.sh test

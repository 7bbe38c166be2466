# The two commands of the README: `make run` (the console) and `make test` (the test suite);
# `make test-fast` runs the unit tier alone.
# Each creates or updates .venv first, so both work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-fast setup setup-test

run: setup
	$(PY) app.py $(ARGS)

# Two test files at a time (one per core; a file's tests stay together and share its fixtures),
# each trainer on one thread so that two never fight over a core.
test: setup-test
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} TRAINDECK_REQUIRE_BROWSER=1 $(PY) -m pytest --numprocesses=auto --maxprocesses=4 \
		--dist=loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The unit tier: no training, no console, no browser (under a minute).
test-fast: setup-test
	$(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

setup:
	@VENV=$(VENV) scripts/setup_env.sh run

setup-test:
	@VENV=$(VENV) scripts/setup_env.sh test

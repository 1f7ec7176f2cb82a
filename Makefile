# hpsearch: `make run` sets up and runs the quickstart sweep; `make test` sets up and runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup data run test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	touch $@

data:
	bash scripts/get-data.sh

run: setup data
	$(VENV)/bin/hpsearch sweep studies/quickstart.yaml

# Every test: unit + integration (real Ray, real MLflow server) + cluster (containers, when an
# engine is available or installable), in one process: two pytest-xdist workers (JOBS=2) were
# tried on this 2-core machine and took as long (42.8 min of tests against 41) while starving
# the browser and cluster tests. The fast unit tests do gain from two workers.
#
# PYTHONDONTWRITEBYTECODE (set in this CI's environment) is cleared for the tests: with it, every
# pytest worker and every hpsearch command a test starts compiled the checkout's modules again
# and pytest rewrote the asserts of every test module again (4 s a worker). The .pyc files go
# to __pycache__/, which git ignores.
JOBS ?= 2
TEST_ENV := PYTHONDONTWRITEBYTECODE=
test: setup data
	$(TEST_ENV) $(PY) -m pytest -m "" -n 0 $(PYTEST_ARGS)

test-fast: setup
	$(TEST_ENV) $(PY) -m pytest -n $(JOBS) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check hpsearch search trainables tests bench

bench: setup data
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache

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
# (tests/conftest.py has bytecode written while testing, whatever PYTHONDONTWRITEBYTECODE says.)
JOBS ?= 2
test: setup data
	$(PY) -m pytest -m "" -n 0 $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -n $(JOBS) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check hpsearch search trainables tests bench

bench: setup data
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache

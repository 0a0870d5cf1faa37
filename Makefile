# Two commands do all the set-up on a fresh machine:
#   make demo   -- creates .venv, installs imnn, fits the mean/variance toy problem
#   make test   -- creates .venv, installs imnn with test extras, runs the suite
# Contributors also use: make lint (ruff), make docs (the site into site/).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench lint docs docs-serve clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/imnn demo --overwrite  # runs/demo is the demo's own: each make demo starts it afresh

# Tests marked redundant (what a faster test or `make docs` proves again) are left out; run them with
# $(BIN)/python -m pytest -n 2 --dist loadgroup -m redundant tests
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m "not redundant" tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow and not redundant" tests

bench: $(STAMP)
	$(BIN)/python -m pytest bench --benchmark-only -q

$(VENV)/.dev: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[test,docs,lint]"
	touch $(VENV)/.dev

lint: $(VENV)/.dev
	$(BIN)/python -m ruff check .

# The documentation site (MkDocs material + mkdocstrings) into site/; --strict fails on any
# warning: a broken link, a missing page or an API reference that does not resolve.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

docs-serve: $(VENV)/.dev
	$(BIN)/python -m mkdocs serve

clean:
	rm -rf $(VENV) build dist site *.egg-info

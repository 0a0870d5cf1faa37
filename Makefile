# Two commands do all the set-up on a fresh machine:
#   make demo   -- creates .venv, installs imnn, fits the mean/variance toy problem
#   make test   -- creates .venv, installs imnn with test extras, runs the suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/imnn demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow" tests

bench: $(STAMP)
	$(BIN)/python -m pytest bench --benchmark-only -q

clean:
	rm -rf $(VENV) build dist *.egg-info

# Set-up and the two main commands. Every target (re)creates the venv when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-slow verify-theory clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## the main job: the zoo, one model per family, signal propagation on bundled data
	$(PY) -m dslm_zoo.demo

test: $(STAMP)  ## the default suite (< 10 min on 2 cores; about 4 min quiet); CI runs this
	$(PY) -m pytest -q

test-slow: $(STAMP)  ## long runs: 1000-layer measurements, full Monte-Carlo grids
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands on a fresh machine:  make demo   and   make test
# Both create/refresh .venv. torch==2.13.0 goes in FIRST: that CPU build lies on
# local disk; anything torch-dependent installed before it pulls a multi-GB CUDA build.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgecompress-installed

.PHONY: demo test setup clean bench

$(STAMP): pyproject.toml runtime/pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e runtime -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgecompress demo --json out/demo.json

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/runtime_gather.py

clean:
	rm -rf $(VENV) out build *.egg-info runtime/*.egg-info

# Two commands do all set-up on a fresh machine: `make demo` (the pruning experiment) and `make test`;
# each creates .venv. `make mi-demo` runs the MI estimator demo.
# torch is pinned (a CPU wheel); override with `make test TORCH_VERSION=...`.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo mi-demo test install clean

$(STAMP): setup.py pyproject.toml $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel pybind11
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m mipp prune

mi-demo: $(STAMP)
	$(PY) -m mipp mi-demo

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info python/mipp/_C*.so

# Two entry points, each doing all of its own set-up on a fresh machine:
#   make demo   create .venv, install torch==2.13.0 and hogn, run the built-in demo
#   make test   same install plus the test extra (torch-scatter, scipy, pytest, ruff), run the tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test lint bench install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

# torch first and pinned: a looser spec pulls a multi-GB CUDA build.
$(VENV)/.base: pyproject.toml | $(PY)
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e .
	touch $@

# torch-scatter has no wheel here: it compiles against the installed torch (~5 min).
$(VENV)/.test: $(VENV)/.base
	$(PIP) install --no-build-isolation torch-scatter
	$(PIP) install -e ".[test]"
	touch $@

install: $(VENV)/.base
install-test: $(VENV)/.test

demo: $(VENV)/.base
	$(VENV)/bin/hogn demo

# pytest exits 5 when it collected no test: that is a failure here, never a silent pass.
test: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(VENV)/.test
	$(PY) benchmarks/bench_generate.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache

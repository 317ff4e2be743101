# The two commands: `sudo make run` (capture + dashboard) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test test-unit lint bench system-deps clean

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	touch $@

# The project itself, editable: builds its compiled parts (setup.py: capture/_tcp_health.c, _steady.c) in place
# with the system's C compiler. Optional: without one, the Python analysis does the same work.
$(VENV)/.built: $(VENV)/.installed setup.py pyproject.toml capture/_tcp_health.c capture/_steady.c
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

run: $(VENV)/.built
	$(PY) run.py $(ARGS)

system-deps:
	@./tools/system-deps.sh

# The layer contracts (pyproject.toml, docs/ARCHITECTURE.md) and ruff: part of every test run.
lint: $(VENV)/.built
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .

test: lint system-deps
	$(PY) -m pytest -q -rs tests

# The pure tests only: no root, network, browser or tshark, nothing slow.
test-unit: lint
	$(PY) -m pytest -q -rs -m "not system and not slow" tests

bench: $(VENV)/.built system-deps
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info capture/*.so

# The two commands: `sudo make run` (capture + dashboard) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test bench system-deps clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

run: $(VENV)/.installed
	$(PY) run.py $(ARGS)

system-deps:
	@./tools/system-deps.sh

test: $(VENV)/.installed system-deps
	$(PY) -m pytest -q -rs tests

bench: $(VENV)/.installed system-deps
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands do all the setup on a fresh machine with Python 3.10+ and make:
#   make demo   create .venv, install procpool, run the main demonstration (procpool run)
#   make test   create .venv, lint, type-check, run the tests on every supported Python found
#   make bench  the side-by-side benchmarks (installs the peer libraries into .venv)
#   make bench-dask  procpool on Dask against Client.map and get_executor().map, one cluster
#   make soak   a seeded kill storm on fork, spawn and forkserver, then the fault matrix's slow cells
PYTHON ?= python3
VENV ?= .venv
PIP_FLAGS ?= --quiet --disable-pip-version-check
# Other supported interpreters to run the suite on, when this machine has them (pyenv or PATH).
EXTRA_PYTHON_VERSIONS ?= 3.10 3.11 3.12 3.13

.PHONY: demo test bench bench-dask soak lint typecheck pytest test-other-pythons clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

# The main job: the batch runner resizes a folder of generated photos, with a progress bar, a
# journal and a summary (run it again with --resume to see that nothing is redone).
DEMO_DIR ?= build/demo
demo: $(VENV)/.installed
	$(VENV)/bin/python -m examples.photos $(DEMO_DIR)/photos --count 32
	$(VENV)/bin/procpool run examples.photos:resize '$(DEMO_DIR)/photos/*.jpg' \
	    -o $(DEMO_DIR)/resized.jsonl --restart --progress
	$(VENV)/bin/procpool status $(DEMO_DIR)/resized.jsonl.journal

# The suite on the default interpreter and on every other one found, all of them even after a
# failure (test-other-pythons prints which passed), failing at the end if any failed.
test: lint typecheck
	@$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) test-other-pythons \
	    WITH_DEFAULT_PYTHON=1

# Side-by-side benchmarks against the stdlib and the peers (docs/performance.md).
bench: $(VENV)/.installed
	$(VENV)/bin/pip install $(PIP_FLAGS) -r benchmarks/requirements.txt
	$(VENV)/bin/python -m benchmarks $(BENCH_ARGS)

bench-dask: $(VENV)/.installed
	$(VENV)/bin/python -m benchmarks.dask_compare $(BENCH_ARGS)

# Robustness under fire: tools/soak.py SIGKILLs busy workers while threads submit through every
# face (about 30 s per start method; SOAK_ARGS="--seed N --duration S" replays or resizes it),
# then the fault matrix's cells marked soak (pytest -m soak). Runs both; fails if either failed.
SOAK_ARGS ?=
soak: $(VENV)/.installed
	@status=0; \
	$(VENV)/bin/python tools/soak.py $(SOAK_ARGS) || status=1; \
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) -m soak || status=1; \
	exit $$status

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests examples benchmarks tools

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# Two test processes (pytest-xdist): most tests wait on worker processes, so the suite takes
# about 0.6x the time of one process even on two cores. PYTEST_WORKERS=0 runs it in one.
PYTEST_WORKERS ?= 2
pytest: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS)

# Runs the suite again on each supported interpreter other than the default one (and first on
# the default one too with WITH_DEFAULT_PYTHON=1, as `make test` does): on all of them even after
# a failure, then a summary; fails if any failed. SUITE_TARGET is what runs for each interpreter
# (with PYTHON and VENV set to its own).
SUITE_TARGET ?= pytest
WITH_DEFAULT_PYTHON ?=
test-other-pythons: $(VENV)/.installed
	@default=$$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	passed=""; failed=""; skipped=""; \
	if [ -n "$(WITH_DEFAULT_PYTHON)" ]; then \
	  echo "== Python $$default (default, $(VENV))"; \
	  if $(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) $(SUITE_TARGET); then \
	    passed=" $$default"; \
	  else \
	    failed=" $$default"; \
	  fi; \
	fi; \
	for version in $(EXTRA_PYTHON_VERSIONS); do \
	  [ "$$version" = "$$default" ] && continue; \
	  interpreter=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$version.*/bin/python$$version 2>/dev/null | tail -n 1); \
	  [ -n "$$interpreter" ] || { python$$version -c pass 2>/dev/null && interpreter=python$$version; }; \
	  [ -n "$$interpreter" ] || { echo "== Python $$version: not installed, skipped"; skipped="$$skipped $$version"; continue; }; \
	  echo "== Python $$version ($$interpreter)"; \
	  if $(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) $(SUITE_TARGET) \
	       PYTHON=$$interpreter VENV=.venv-$$version; then \
	    passed="$$passed $$version"; \
	  else \
	    failed="$$failed $$version"; \
	  fi; \
	done; \
	echo "== Summary: passed:$${passed:- none}; failed:$${failed:- none}; not installed:$${skipped:- none}"; \
	[ -z "$$failed" ] || { echo "== FAILED on Python$$failed"; exit 1; }

clean:
	rm -rf .venv .venv-* build src/*.egg-info .mypy_cache .ruff_cache

# Two commands do all the setup on a fresh machine with Python 3.10+ and make:
#   make demo   create .venv, install procpool, run the main demonstration (procpool run)
#   make test   create .venv, lint, type-check, run the tests on every supported Python found
#   make bench  the side-by-side benchmarks (installs the peer libraries into .venv)
#   make bench-dask  procpool on Dask against Client.map and get_executor().map, one cluster
PYTHON ?= python3
VENV ?= .venv
PIP_FLAGS ?= --quiet --disable-pip-version-check
# Other supported interpreters to run the suite on, when this machine has them (pyenv or PATH).
EXTRA_PYTHON_VERSIONS ?= 3.10 3.11 3.12 3.13

.PHONY: demo test bench bench-dask lint typecheck pytest test-other-pythons clean

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

test: lint typecheck pytest test-other-pythons

# Side-by-side benchmarks against the stdlib and the peers (docs/performance.md).
bench: $(VENV)/.installed
	$(VENV)/bin/pip install $(PIP_FLAGS) -r benchmarks/requirements.txt
	$(VENV)/bin/python -m benchmarks $(BENCH_ARGS)

bench-dask: $(VENV)/.installed
	$(VENV)/bin/python -m benchmarks.dask_compare $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests examples benchmarks tools

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

pytest: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

# Runs the suite again on each supported interpreter other than the default one.
test-other-pythons: $(VENV)/.installed
	@default=$$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	for version in $(EXTRA_PYTHON_VERSIONS); do \
	  [ "$$version" = "$$default" ] && continue; \
	  interpreter=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$version.*/bin/python$$version 2>/dev/null | tail -n 1); \
	  [ -n "$$interpreter" ] || { python$$version -c pass 2>/dev/null && interpreter=python$$version; }; \
	  [ -n "$$interpreter" ] || { echo "== Python $$version: not installed, skipped"; continue; }; \
	  echo "== Python $$version ($$interpreter)"; \
	  $(MAKE) --no-print-directory pytest PYTHON=$$interpreter VENV=.venv-$$version || exit 1; \
	done

clean:
	rm -rf .venv .venv-* build src/*.egg-info .mypy_cache .ruff_cache

# Two commands do all the setup on a fresh machine with Python 3.10+ and make:
#   make demo   create .venv, install procpool, run the main demonstration (procpool run)
#   make test   create .venv, lint, type-check, run the tests on every supported Python found
#   make bench  the side-by-side benchmarks (installs the peer libraries into .venv)
#   make bench-dask  procpool on Dask against Client.map and get_executor().map, one cluster
#   make soak   a seeded kill storm on fork, spawn and forkserver, then the fault matrix's slow cells
#   make docs-check  run every Python example of README.md and docs/*.md
#   make dist-check  build the wheel and sdist from a clean clone of HEAD, install and test them
PYTHON ?= python3
VENV ?= .venv
PIP_FLAGS ?= --quiet --disable-pip-version-check
# Other supported interpreters to run the suite on, when this machine has them (pyenv or PATH).
EXTRA_PYTHON_VERSIONS ?= 3.10 3.11 3.12 3.13

.PHONY: demo test bench bench-dask soak lint typecheck pytest test-other-pythons clean \
        docs-check dist-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

# The main job: the batch runner resizes a folder of generated photos, some of them bad as real
# batches are (truncated files, one that crashes its decoder, one that hangs it), with a Ctrl-C
# midway and a --resume; then the run's status, what became of each bad photo, and a serial
# loop against a pool (examples/demo.py; under a minute).
DEMO_DIR ?= build/demo
demo: $(VENV)/.installed
	$(VENV)/bin/python -m examples.demo $(DEMO_DIR)

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
# a failure, then a summary; fails if any failed. The default interpreter runs every cell of the
# matrix files; each other one runs its share of them (PROCPOOL_TEST_SHARE, tests/conftest.py),
# so every cell runs on two interpreters and the whole stays within CI's time. SUITE_TARGET is what runs for each interpreter
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
	others=0; for version in $(EXTRA_PYTHON_VERSIONS); do \
	  [ "$$version" = "$$default" ] && continue; \
	  { ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$version.*/bin/python$$version \
	      >/dev/null 2>&1 || python$$version -c pass 2>/dev/null; } \
	    && others=$$((others + 1)); \
	done; \
	share=0; \
	for version in $(EXTRA_PYTHON_VERSIONS); do \
	  [ "$$version" = "$$default" ] && continue; \
	  interpreter=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$version.*/bin/python$$version 2>/dev/null | tail -n 1); \
	  [ -n "$$interpreter" ] || { python$$version -c pass 2>/dev/null && interpreter=python$$version; }; \
	  [ -n "$$interpreter" ] || { echo "== Python $$version: not installed, skipped"; skipped="$$skipped $$version"; continue; }; \
	  share=$$((share + 1)); \
	  echo "== Python $$version ($$interpreter)"; \
	  if PROCPOOL_TEST_SHARE=$$share/$$others $(MAKE) --no-print-directory \
	       -f $(firstword $(MAKEFILE_LIST)) $(SUITE_TARGET) PYTHON=$$interpreter \
	       VENV=.venv-$$version; then \
	    passed="$$passed $$version"; \
	  else \
	    failed="$$failed $$version"; \
	  fi; \
	done; \
	echo "== Summary: passed:$${passed:- none}; failed:$${failed:- none}; not installed:$${skipped:- none}"; \
	[ -z "$$failed" ] || { echo "== FAILED on Python$$failed"; exit 1; }

clean:
	rm -rf .venv .venv-* build src/*.egg-info .mypy_cache .ruff_cache


# Every ```python block of README.md and docs/*.md runs as a script of its own, under forkserver
# (tools/docs_check.py; tests/test_docs.py runs the same blocks in the suite). A block marked
# <!-- docs-check: skip (reason) --> in the Markdown is listed with its reason, not run.
# DOCS_CHECK_ARGS="--list" only lists the blocks; "--start-method fork" runs them under fork.
DOCS_CHECK_ARGS ?=
docs-check: $(VENV)/.installed
	$(VENV)/bin/python tools/docs_check.py $(DOCS_CHECK_ARGS)

# What a user of the release gets, checked in a temporary folder that is removed at the end:
# a clean clone of HEAD (committed work only: uncommitted changes are not in it) is built into
# a wheel and an sdist (python -m build: the wheel is built from the sdist). A fresh virtualenv
# installs the wheel and runs `import procpool` and `procpool --version`; another installs the
# sdist with its test dependencies (the dev extra) and runs, from the unpacked sdist, with its
# src/ removed so that only the installed package can be imported, a representative part of
# the sdist's own suite: DIST_TESTS, by default the Pool and executor API tests and the docs
# examples (-x -q; the whole suite takes too long for a packaging check). The interpreter is
# DIST_PYTHON if set, else Python DIST_PYTHON_VERSION found as test-other-pythons finds them.
DIST_PYTHON ?=
DIST_PYTHON_VERSION ?= 3.13
DIST_TESTS ?= tests/test_pool_api.py tests/test_executor.py tests/test_docs.py
dist-check:
	@set -e; \
	interpreter="$(DIST_PYTHON)"; version=$(DIST_PYTHON_VERSION); \
	if [ -z "$$interpreter" ]; then \
	  interpreter=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$version.*/bin/python$$version 2>/dev/null | tail -n 1); \
	  [ -n "$$interpreter" ] || { python$$version -c pass 2>/dev/null && interpreter=python$$version; }; \
	fi; \
	[ -n "$$interpreter" ] || { echo "== dist-check: Python $$version not found; set DIST_PYTHON"; exit 2; }; \
	revision=$$(git rev-parse --verify HEAD); \
	[ -z "$$(git status --porcelain --untracked-files=no)" ] || \
	  echo "== dist-check: the work tree has uncommitted changes; they are not checked"; \
	work=$$(mktemp -d "$${TMPDIR:-/tmp}/procpool-dist-check.XXXXXX"); \
	trap 'rm -rf "$$work"' EXIT; \
	echo "== clone of $$(git rev-parse --short HEAD) in $$work; $$($$interpreter --version) ($$interpreter)"; \
	git clone --quiet --no-checkout "$(CURDIR)" "$$work/clone"; \
	git -C "$$work/clone" checkout --quiet "$$revision"; \
	echo "== build: wheel and sdist"; \
	$$interpreter -m venv "$$work/build-venv"; \
	"$$work/build-venv/bin/pip" install $(PIP_FLAGS) build; \
	"$$work/build-venv/bin/python" -m build --outdir "$$work/dist" "$$work/clone" \
	    >"$$work/build.log" 2>&1 || { cat "$$work/build.log"; exit 1; }; \
	wheel=$$(ls "$$work"/dist/*.whl); sdist=$$(ls "$$work"/dist/*.tar.gz); \
	ls -l "$$work/dist"; \
	echo "== wheel: install in a fresh virtualenv, import, procpool --version"; \
	$$interpreter -m venv "$$work/wheel-venv"; \
	"$$work/wheel-venv/bin/pip" install $(PIP_FLAGS) "$$wheel"; \
	(cd "$$work" && "$$work/wheel-venv/bin/python" -c \
	    'import procpool; print("import procpool:", procpool.__version__, procpool.__file__)'); \
	"$$work/wheel-venv/bin/procpool" --version; \
	echo "== sdist: install with the dev extra in a fresh virtualenv, run its tests"; \
	$$interpreter -m venv "$$work/sdist-venv"; \
	"$$work/sdist-venv/bin/pip" install $(PIP_FLAGS) "$$sdist[dev]"; \
	tar -xzf "$$sdist" -C "$$work"; \
	unpacked="$$work/$$(basename "$$sdist" .tar.gz)"; \
	rm -rf "$$unpacked/src"; \
	cd "$$unpacked"; \
	"$$work/sdist-venv/bin/python" -c 'import procpool; print("tests import", procpool.__file__)'; \
	"$$work/sdist-venv/bin/python" -m pytest -x -q $(DIST_TESTS); \
	echo "== dist-check passed: $$(basename "$$wheel") and $$(basename "$$sdist") of $$(git -C "$$work/clone" rev-parse --short HEAD)"

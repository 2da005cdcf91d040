# Everything a fresh clone needs: `make test` (and later `make demo`) create the virtual
# environment and install what they use. Only python3 (>= 3.10) must exist beforehand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch lies on disk on the project machines; asking for it explicitly, before the
# package, keeps pip from resolving `torch>=2.2` to a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: test test-fast lint docs demo install clean bench

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,docs]"
	touch $(STAMP)

install: $(STAMP)

# Tests run in TEST_JOBS worker processes (pytest-xdist; each worker sets torch to one thread): most of
# the suite's time is child processes and torchrun waiting on each other, which two workers overlap.
# TEST_JOBS=0 runs them in this process (e.g. to use a debugger).
TEST_JOBS ?= 2
PYTEST := $(PY) -m pytest -x -q -n $(TEST_JOBS) --dist worksteal

test: $(STAMP)
	$(PYTEST)

# The quick loop while editing: everything but the tests marked `slow` (child processes, torchrun,
# kills, long training runs), in under 2 min on an idle 2-core machine. `make test` runs them all
# (under 8 min); `pytest -m slow` runs only the slow ones.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# Static checks, configured in pyproject.toml: ruff's lint rules, ruff's formatting (checked, never
# rewritten here: `ruff format --diff` shows what it wants) and mypy on src/. All three run even when
# one fails, so one run shows every finding.
LINT_PATHS := src tests benchmarks examples
lint: $(STAMP)
	@status=0; \
	echo "ruff check"; $(PY) -m ruff check $(LINT_PATHS) || status=1; \
	echo "ruff format --check"; $(PY) -m ruff format --check --output-format concise $(LINT_PATHS) || status=1; \
	echo "mypy"; $(PY) -m mypy || status=1; \
	exit $$status

# The documentation site, into docs/_build/html: offline (no intersphinx; MathJax is bundled), from a clean
# output folder, every warning an error (-W, and --keep-going to report them all) and every
# cross-reference checked (-n): a broken link to multimix's own code fails the build.
DOCS_OUT := docs/_build/html
docs: $(STAMP)
	rm -rf docs/_build
	$(PY) -m sphinx -W --keep-going -n -q -b html docs $(DOCS_OUT)
	@echo "docs: open $(DOCS_OUT)/index.html"

# The main job: ERM, input mixup, manifold mixup and MultiMix on MNIST-1D (generated offline),
# 3 seeds each, two runs at a time; prints the table and writes runs/demo/results.{md,csv,png}.
demo: $(STAMP)
	$(PY) -m multimix.cli compare --config demo --methods erm,mixup,manifold,multimix \
		--seeds 3 --jobs 2 --out runs/demo

bench: $(STAMP)
	$(PY) benchmarks/functional_ops.py

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .hypothesis .mypy_cache .ruff_cache src/*.egg-info

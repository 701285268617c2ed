# madm-pl: every target runs inside the repo's own virtual environment (.venv/).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TASK ?= rgb2infrared
PROFILE ?= demo
TORCH_VERSION := 2.13.0

.PHONY: setup test test-all lint format data train tensorboard prior bench bench-adapt figure clean

# The pinned CPU build of torch goes first: an unpinned torch (pulled in by another package) would
# download a multi-GB CUDA build. The stamp makes a re-run a no-op until pyproject.toml changes.
setup: $(VENV)/.setup-stamp
$(VENV)/.setup-stamp: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

# Includes the tests marked slow (full SD v1-4 architecture, long trainings).
test-all: setup
	$(BIN)/python -m pytest -q -m ''

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: setup
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

data: setup
	$(BIN)/madm-pl-data --out data/synthetic

# PROFILE=demo: the synthetic world and the tiny stack on CPU (configs/demo/). PROFILE=paper: the
# published recipe on real data (configs/<task>.yaml) with DATA=<root of the datasets> SD=<SD v1-4 folder>.
ifeq ($(PROFILE),demo)
CONFIG := configs/demo/$(TASK).yaml
else
CONFIG := configs/$(TASK).yaml
endif

train: setup
	@test -f $(CONFIG) || { echo "no config $(CONFIG): TASK is one of rgb2depth, rgb2infrared, rgb2event; PROFILE demo or paper"; exit 2; }
ifeq ($(PROFILE),demo)
	@test -f data/synthetic/synthetic.json || $(MAKE) data
	$(BIN)/madm-pl fit -c $(CONFIG) $(ARGS)
else
	$(BIN)/madm-pl fit -c $(CONFIG) $(ARGS)
endif

tensorboard: setup
	$(BIN)/tensorboard --logdir runs

clean:
	rm -rf $(VENV) build src/*.egg-info

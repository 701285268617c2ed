# madm-pl: every target runs inside the repo's own virtual environment (.venv/).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TASK ?= rgb2infrared
# The tasks with a config per profile (configs/<task>.yaml, configs/demo/<task>.yaml; base.yaml is their shared part).
TASKS := rgb2depth rgb2infrared rgb2event
PROFILE ?= demo
TORCH_VERSION := 2.13.0

.PHONY: setup test test-all lint format data train prepare tensorboard prior bench bench-adapt demo-results figure clean

# The pinned torch goes first, so that no other package pulls in another version. From PyPI on Linux
# torch==2.13.0 is the CUDA build (several GB; it runs on CPU too). TORCH_INDEX=<wheel index> installs
# from that index instead, e.g. the CPU build (about 200 MB):
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Needs Python 3.11 (PYTHON=<path to python3.11> when it is not on the PATH under that name). The
# stamp makes a re-run a no-op until pyproject.toml changes.
TORCH_INDEX ?=
setup: $(VENV)/.setup-stamp
$(VENV)/.setup-stamp: pyproject.toml
	@command -v $(PYTHON) >/dev/null || test -x $(BIN)/python || { echo "no $(PYTHON): madm-pl needs Python 3.11; make setup PYTHON=<path to python3.11>"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# The CPU suite without the tests marked slow (pytest's addopts -m 'not slow').
test: setup
	$(BIN)/python -m pytest -q

# Includes the tests marked slow (full SD v1-4 architecture, long trainings).
test-all: setup
	$(BIN)/python -m pytest -q -m ''

lint: setup
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

format: setup
	$(BIN)/ruff check --fix src tests benchmarks tools
	$(BIN)/ruff format src tests benchmarks tools

data: setup
	$(BIN)/madm-pl-data --out data/synthetic

# PROFILE=demo: the synthetic world and the tiny stack on CPU (configs/demo/, whose `threads: 1` every
# command and the printed resume line carry; ARGS=--threads=4 on a machine with free cores). PROFILE=paper: the
# published recipe on real data (configs/<task>.yaml, docs/PAPER_RECIPES.md) with DATA=<root of the
# datasets>, holding them under the reference's folder names Cityscapes/, DELIVER/, FMB/ and DSEC/
# (DATA_SOURCE / DATA_TARGET override one root each), and SD=<local stable-diffusion-v1-4 folder>.
# Make also reads these from the environment (export DATA=... SD=...). ARGS adds any CLI option.
# A PROFILE other than demo or paper (PROFILE=Paper) stops the targets that read it, before anything runs.
ifneq ($(filter train prepare figure,$(MAKECMDGOALS)),)
ifeq ($(filter demo paper,$(PROFILE)),)
$(error unknown PROFILE='$(PROFILE)': use PROFILE=demo (configs/demo/, built-in data) or PROFILE=paper (configs/, real data))
endif
endif
ifeq ($(PROFILE),demo)
CONFIG := configs/demo/$(TASK).yaml
else
CONFIG := configs/$(TASK).yaml
endif
TARGET_FOLDER_rgb2depth := DELIVER
TARGET_FOLDER_rgb2infrared := FMB
TARGET_FOLDER_rgb2event := DSEC
DATA_SOURCE ?= $(DATA)/Cityscapes
DATA_TARGET ?= $(DATA)/$(TARGET_FOLDER_$(TASK))
DATA_ARGS = --data.init_args.source_root=$(DATA_SOURCE) --data.init_args.target_root=$(DATA_TARGET)
define check_paper_paths
	@test -d "$(DATA_SOURCE)" || { echo "no Cityscapes folder '$(DATA_SOURCE)': set DATA=<datasets root> or DATA_SOURCE=<folder>"; exit 2; }
	@test -d "$(DATA_TARGET)" || { echo "no target folder '$(DATA_TARGET)': set DATA=<datasets root> or DATA_TARGET=<folder>"; exit 2; }
endef

# Which task it trains, said first: TASK defaults to rgb2infrared.
TASK_NOTE = make $@: TASK=$(TASK) ($(if $(filter file,$(origin TASK)),the default; TASK=rgb2depth or TASK=rgb2event trains another,given)), $(CONFIG)

train: setup
	@test -n "$(filter $(TASK),$(TASKS))" -a -f $(CONFIG) || { echo "no config $(CONFIG): TASK is one of $(TASKS); PROFILE demo or paper"; exit 2; }
	@echo "$(TASK_NOTE)"
ifeq ($(PROFILE),demo)
	$(BIN)/madm-pl-data --out data/synthetic  # a no-op when the world is there, in this format
	$(BIN)/madm-pl fit -c $(CONFIG) $(ARGS)
else
	$(check_paper_paths)
	@test -d "$(SD)" || { echo "no Stable Diffusion folder SD='$(SD)': set SD=<local stable-diffusion-v1-4 folder>"; exit 2; }
	$(BIN)/madm-pl fit -c $(CONFIG) --model.init_args.backbone=$(SD) $(DATA_ARGS) $(ARGS)
endif

# Checks the data trees, caches the RCS statistics, prints label histograms (madm-pl prepare).
prepare: setup
	@test -n "$(filter $(TASK),$(TASKS))" -a -f $(CONFIG) || { echo "no config $(CONFIG): TASK is one of $(TASKS); PROFILE demo or paper"; exit 2; }
	@echo "$(TASK_NOTE)"
ifeq ($(PROFILE),demo)
	$(BIN)/madm-pl-data --out data/synthetic  # a no-op when the world is there, in this format
	$(BIN)/madm-pl prepare -c $(CONFIG) $(ARGS)
else
	$(check_paper_paths)
	$(BIN)/madm-pl prepare -c $(CONFIG) $(DATA_ARGS) $(ARGS)
endif

# Trains the tiny diffusion prior (the tiny preset's VAE and UNet, pretrained on the synthetic world's own
# prior scenes, ~10 min on 2 CPU cores) into priors/tiny; the result is committed, so train needs no prior step.
prior: setup
	$(BIN)/python -m madm_pl.prior --out priors/tiny

# The cost of one training step against its floor (BENCHMARKS.md); needs the synthetic world.
bench: setup
	$(BIN)/madm-pl-data --out data/synthetic  # a no-op when the world is there, in this format
	$(BIN)/python -m benchmarks.step_cost --markdown BENCHMARKS.md

# The adaptation table (BENCHMARKS.md): source-only, oracle and every MADM ingredient on the synthetic
# world with the tiny prior, 3 seeds (0, 1, 2), 600 iterations per run (the demo configs' max_steps), the
# test mIoU every 100, 2 runs at a time with one thread each (benchmarks/adapt_table.py's defaults): 54
# runs, about 11 CPU-hours, 5-6 hours on 2 cores. TASK=<task> runs one task; finished runs are reused.
bench-adapt: setup
	$(BIN)/madm-pl-data --out data/synthetic  # a no-op when the world is there, in this format
	$(BIN)/python -m benchmarks.adapt_table $(if $(filter command line,$(origin TASK)),--tasks $(TASK)) $(ARGS)

# The demo's measured numbers (benchmarks/results/demo.json; README.md and BENCHMARKS.md's demo sections are
# written from it, and the demo run's closing line and TensorBoard read it): trains TASK's demo run as
# make train does (about 7 minutes on one core), records it with the config's digest and the training
# code's fingerprint (a test fails when either changes), refreshes the adaptation table's means.
# ARGS=--from-run runs/demo/<task>/version_<n> records a finished run instead of training.
demo-results: setup
	$(BIN)/madm-pl-data --out data/synthetic  # a no-op when the world is there, in this format
	$(BIN)/python -m benchmarks.demo_results --task $(TASK) $(ARGS)

# Target image, pseudo-label, prediction, ground truth of the newest run's last.ckpt, written into that
# run's folder (runs/<profile>/<task>/version_<n>/figure.png). The tracked README figure is replaced
# only when asked: make figure TASK=rgb2infrared OUT=docs/figures/demo_rgb2infrared.png
figure: setup
	$(BIN)/python -m madm_pl.visualize --runs runs/$(PROFILE)/$(TASK) $(if $(OUT),--out $(OUT))

tensorboard: setup
	$(BIN)/tensorboard --logdir runs

clean:
	rm -rf $(VENV) build src/*.egg-info

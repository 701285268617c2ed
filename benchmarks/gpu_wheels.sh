#!/usr/bin/env bash
# The wheels a GPU machine without network needs for benchmarks/gpu_check.py and gpu_recipe.py, downloaded
# here into .whl/ (git-ignored) for Python 3.12 on x86-64 Linux (the lent H200 machine's Python, which has
# torch, lightning, transformers, torchmetrics, safetensors and huggingface-hub but not these):
#   benchmarks/gpu_wheels.sh            # then carry .whl and run (docs/PAPER_RECIPES.md section 6)
# The versions are pyproject.toml's pins (kornia_rs: the version kornia 0.9.0 installs here).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    diffusers==0.42.1 torchao==0.18.0 kornia==0.9.0 kornia_rs==0.2.0
ls -1 .whl

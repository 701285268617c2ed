"""Makefile logic, checked with ``make -n`` (prints the commands, runs none)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.cli_runs import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_n(*args: str) -> subprocess.CompletedProcess:
    # --no-print-directory: under a parent make (make test) a sub-make prints "Entering/Leaving directory"
    return subprocess.run(
        ["make", "-n", "--no-print-directory", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


@pytest.mark.parametrize("target", ["train", "prepare", "figure"])
def test_unknown_profile_is_refused(target: str) -> None:
    result = make_n(target, "PROFILE=Paper")  # was silently taken as the paper profile
    assert result.returncode != 0
    assert "unknown PROFILE='Paper': use PROFILE=demo" in result.stderr
    assert make_n(target, "PROFILE=paper", "DATA=/datasets", "SD=/sd").returncode == 0
    assert make_n(target).returncode == 0  # demo by default


def test_figure_reads_the_newest_run_and_leaves_the_tracked_figure_alone() -> None:
    command = make_n("figure", "TASK=rgb2depth").stdout.strip().splitlines()[-1]
    assert command.endswith("-m madm_pl.visualize --runs runs/demo/rgb2depth")  # no --out: into the run
    assert "docs/figures" not in command
    paper = make_n("figure", "TASK=rgb2event", "PROFILE=paper").stdout.strip().splitlines()[-1]
    assert paper.endswith("--runs runs/paper/rgb2event")
    out = make_n("figure", "OUT=docs/figures/demo_rgb2infrared.png").stdout.strip().splitlines()[-1]
    assert out.endswith("--runs runs/demo/rgb2infrared --out docs/figures/demo_rgb2infrared.png")


def test_benchmark_targets_run_the_benchmarks_package() -> None:
    bench = make_n("bench").stdout.strip().splitlines()[-1]
    assert bench.endswith("-m benchmarks.step_cost --markdown BENCHMARKS.md")  # its section of BENCHMARKS.md
    adapt = make_n("bench-adapt", "TASK=rgb2event").stdout.strip().splitlines()[-1]
    assert "-m benchmarks.adapt_table --tasks rgb2event" in adapt


@pytest.mark.parametrize("target", ["train", "prepare"])
def test_task_is_one_of_the_three(target: str) -> None:
    # configs/demo/base.yaml exists but is no task: the check that stops the target names the tasks
    check = next(line for line in make_n(target, "TASK=base").stdout.splitlines() if "no config" in line)
    assert check.startswith('test -n "" -a -f configs/demo/base.yaml')
    assert "TASK is one of rgb2depth rgb2infrared rgb2event" in check
    assert make_n(target, "TASK=rgb2depth").stdout.count('test -n "rgb2depth"') == 1


def test_train_says_which_task_it_trains_and_leaves_threads_to_the_config() -> None:
    lines = make_n("train").stdout.splitlines()
    assert any(
        "make train: TASK=rgb2infrared (the default; TASK=rgb2depth or TASK=rgb2event" in x for x in lines
    )
    assert any(
        "make train: TASK=rgb2event (given)" in x
        for x in make_n("train", "TASK=rgb2event").stdout.splitlines()
    )
    fit = next(line for line in lines if " fit -c " in line)
    assert (
        "OMP_NUM_THREADS" not in fit
    )  # the config's `threads` (every command carries it), not the environment


def test_setup_takes_a_wheel_index_for_torch_and_pypi_by_default() -> None:
    # -B: the stamp may be up to date; the commands are printed, not run
    default = make_n("-B", ".venv/.setup-stamp").stdout
    assert "pip install -q torch==2.13.0 \n" in default + "\n" and "--index-url" not in default
    cpu = make_n("-B", ".venv/.setup-stamp", "TORCH_INDEX=https://download.pytorch.org/whl/cpu").stdout
    assert "pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in cpu

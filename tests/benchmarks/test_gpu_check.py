"""benchmarks.gpu_check: the smoke path end to end (forked children, rows into a markdown section), a mode
that fails or overruns recorded while the next one runs, the budget, the options."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check, gpu_recipe
from benchmarks.common import markers

REPO = Path(__file__).resolve().parents[2]


def markdown_copy(tmp_path: Path) -> Path:
    """A copy of the repository's BENCHMARKS.md (its gpu-check section is what the check fills)."""
    path = tmp_path / "BENCHMARKS.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((REPO / "BENCHMARKS.md").read_text())
    return path


def section(path: Path) -> str:
    start, end = markers(gpu_check.SECTION)
    return path.read_text().split(start, 1)[1].split(end, 1)[0]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_smoke_runs_the_modes_in_children_and_fills_the_section(tmp_path: Path) -> None:
    document = markdown_copy(tmp_path)
    before = document.read_text()
    out = tmp_path / "check.json"
    argv = ["--smoke", "--modes", "recipe", "offload", "compiled-check", "--markdown", str(document)]
    # forked children: seconds (the default, spawn, re-imports the package per child: the tests below)
    report = gpu_check.main([*argv, "--json", str(out), "--start-method", "fork"])
    assert [r["status"] for r in report["results"]] == ["ok", "ok", "ok"]
    recipe, offload, check = (r["row"] for r in report["results"])
    assert recipe["iterations"] == offload["iterations"] == 1
    assert recipe["seconds_per_iteration"] > 0 and offload["seconds_per_iteration"] > 0
    assert check["seconds_per_iteration"] is None and check["tap_gradient_errors"] == [0.0, 0.0, 0.0]
    assert json.loads(out.read_text()) == report
    text = section(document)
    assert "**smoke (CPU)**" in text and "measured" not in text  # a smoke run is no measurement
    assert f"torch {torch.__version__}" in text
    assert "| `offload` | the 24 GB mode" in text and "| `compiled-check` |" in text
    # only the section changed
    start, end = markers(gpu_check.SECTION)
    assert document.read_text().split(start)[0] == before.split(start)[0]
    assert document.read_text().split(end)[1] == before.split(end)[1]
    # the same rows rendered again from the JSON (what one does with a GPU run's returned file)
    again = markdown_copy(tmp_path / "again")
    gpu_check.main(["--from-json", str(out), "--markdown", str(again)])
    assert section(again) == text


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_smoke_with_spawned_children_as_on_a_gpu(tmp_path: Path) -> None:
    """The default start method, as the GPU run uses it: the child imports the package and runs the mode."""
    report = gpu_check.main(["--smoke", "--modes", "offload"])
    (result,) = report["results"]
    assert result["status"] == "ok" and result["row"]["seconds_per_iteration"] > 0


@pytest.mark.slow  # every default mode in a spawned child: a minute or two on 2 CPU cores
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_whole_smoke_check_as_on_a_gpu(tmp_path: Path) -> None:
    document = markdown_copy(tmp_path)
    report = gpu_check.main(["--smoke", "--markdown", str(document)])
    assert [r["mode"] for r in report["results"]] == list(gpu_check.DEFAULT_MODES)
    assert all(r["status"] == "ok" for r in report["results"]), report["results"]
    assert section(document).count("| ok (") == len(gpu_check.DEFAULT_MODES)


def fake_run_mode(args, mode, device) -> dict:
    """Stands in for gpu_recipe.run_mode in the (forked) children: offload runs out of memory, eager hangs."""
    if mode == "offload":
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if mode == "eager":
        time.sleep(30)
    return {
        "mode": mode,
        "iterations": 5,
        "seconds_per_iteration": 1.5,
        "peak_allocated_gib": 20.5,
        "peak_reserved_gib": 21.0,
        "tap_gradient_errors": None,
        "device": "NVIDIA Fake 24GB",
        "torch": "2.13.0",
        "switches": [],
    }


def test_a_failed_or_overrunning_mode_is_recorded_and_the_next_one_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu_recipe, "run_mode", fake_run_mode)  # the forked children inherit it
    # budget 8 s, 2 s kept per mode still to run: offload gets 4 s, eager what is left but 2 s, recipe 2 s
    monkeypatch.setattr(gpu_check, "RESERVE_PER_MODE", 2.0)
    monkeypatch.setattr(gpu_check, "MIN_MODE_SECONDS", 1.0)
    document = markdown_copy(tmp_path)
    argv = ["--modes", "offload", "eager", "recipe", "--budget", "8", "--markdown", str(document)]
    argv += ["--start-method", "fork"]  # the children inherit the fake run_mode
    report = gpu_check.main(argv)
    offload, eager, recipe = report["results"]
    assert offload["status"] == "out of memory" and "Tried to allocate 2.00 GiB" in offload["error"]
    assert eager["status"].startswith("stopped after") and "row" not in eager
    assert recipe["status"] == "ok" and recipe["row"]["peak_allocated_gib"] == 20.5
    text = section(document)
    assert "**measured**" in text and "NVIDIA Fake 24GB, torch 2.13.0" in text
    assert "| `recipe` |" in text and "| 1.500 | 20.50 | 21.00 |" in text
    assert "out of memory: OutOfMemoryError: CUDA out of memory" in text


def test_modes_without_time_left_are_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_recipe, "run_mode", fake_run_mode)
    # 40 s kept for compiled: recipe is not started
    report = gpu_check.main(["--modes", "recipe", "compiled", "--budget", "50", "--start-method", "fork"])
    assert [r["status"] for r in report["results"]] == ["not run: no time left in the budget", "ok"]


def test_options_and_child_command_lines(tmp_path: Path) -> None:
    args = gpu_check.parse_args([])
    assert (args.modes, args.budget, args.warmup, args.steps) == (list(gpu_check.DEFAULT_MODES), 480.0, 2, 5)
    assert args.start_method == "spawn"  # CUDA-safe
    assert gpu_check.recipe_args(args, "compiled") == [
        *("--warmup", "2", "--steps", "5", "--modes", "compiled", "--gradient-check", "skip")
    ]
    assert gpu_check.recipe_args(args, "compiled-check")[-4:] == [
        "--modes",
        "compiled",
        "--gradient-check",
        "only",
    ]
    args = gpu_check.parse_args(["--smoke", "--modes", "offload", "--", "--channels-last"])
    assert gpu_check.recipe_args(args, "offload") == [
        *("--warmup", "1", "--steps", "1", "--channels-last", "--smoke", "--modes", "offload")
    ]
    for mode in gpu_check.DEFAULT_MODES:  # every mode's child command parses
        gpu_recipe.parse_args(gpu_check.recipe_args(args, mode))
    no_markers = tmp_path / "plain.md"
    no_markers.write_text("# nothing to fill\n")
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--markdown", str(no_markers)])
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--from-json", "x.json"])  # needs --markdown


def test_the_wheels_carried_to_a_gpu_machine_are_the_pinned_versions() -> None:
    script = (REPO / "benchmarks" / "gpu_wheels.sh").read_text()
    pins = (REPO / "pyproject.toml").read_text()
    for name in ("diffusers", "torchao", "kornia"):
        version = pins.split(f'"{name}==', 1)[1].split('"', 1)[0]
        assert f"{name}=={version}" in script, name

"""RecipeComparison: a run's mIoU next to the recipe's measured numbers, printed and drawn in TensorBoard."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from madm_pl.callbacks.comparison import (
    DRAWN_METHODS,
    RecipeComparison,
    RecipeResults,
    format_comparison,
    load_recipe_results,
)
from tests.cli_runs import REPO
from tests.conftest import TrainedRun

TABLE = {"source-only": 16.6, "self-training": 22.8, "MADM": 20.4, "oracle": 39.7}


def write_results(path: Path, demo: dict | None) -> Path:
    entry = {"table": {"seeds": [0, 1, 2], "miou": TABLE}, "demo": demo}
    path.write_text(json.dumps({"tasks": {"rgb2infrared": entry}}))
    return path


def test_the_line_gives_the_run_the_measured_demo_and_the_table(tmp_path: Path) -> None:
    demo = {"command": "make train TASK=rgb2infrared", "curve": [{"iteration": 200, "miou": 18.62}]}
    results = load_recipe_results(write_results(tmp_path / "r.json", demo), "rgb2infrared")
    assert results == RecipeResults(TABLE, (0, 1, 2), 18.62, 200, "make train TASK=rgb2infrared")
    # two decimals, as the IoU table (19.695 is not shown as 19.70 here and 19.69 there)
    assert format_comparison(0.19694, 600, results) == (
        "this run, after iteration 600: mIoU 19.69 | make train TASK=rgb2infrared, measured: 18.62 | "
        "the adaptation table (mean of seeds 0, 1, 2): source-only 16.6, self-training 22.8, MADM 20.4, "
        "oracle 39.7"
    )
    no_demo = load_recipe_results(write_results(tmp_path / "r.json", None), "rgb2infrared")
    assert format_comparison(0.5, 4, no_demo).startswith("this run, after iteration 4: mIoU 50.00 | the adap")


def test_a_missing_or_foreign_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"comparison.results='.*nope.json' does not exist"):
        load_recipe_results(tmp_path / "nope.json", "rgb2infrared")
    with pytest.raises(ValueError, match="no readable entry for task 'rgb2depth'"):
        load_recipe_results(write_results(tmp_path / "r.json", None), "rgb2depth")


def test_fit_and_test_end_print_the_line_or_warn_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    module = SimpleNamespace(
        last_scores={"miou": 0.5, "iteration": 40}, task=SimpleNamespace(name="rgb2infrared")
    )
    callback = RecipeComparison(str(write_results(tmp_path / "r.json", None)))
    callback.on_test_end(SimpleNamespace(), module)
    assert "this run, after iteration 40: mIoU 50.00 | the adaptation table" in caplog.text
    caplog.clear()
    RecipeComparison(None).on_fit_end(SimpleNamespace(), module)  # the paper recipes: nothing
    assert "this run" not in caplog.text
    missing = RecipeComparison(str(tmp_path / "nope.json"))
    with pytest.warns(UserWarning, match="does not exist.*no comparison is printed"):
        missing.on_fit_end(SimpleNamespace(), module)
    missing.on_test_end(SimpleNamespace(), module)  # warned once: the option is now off
    assert missing.results is None and "this run" not in caplog.text


def test_a_demo_run_draws_the_levels_beside_its_miou_and_ends_with_the_line(trained_run: TrainedRun) -> None:
    recorded = json.loads((REPO / "benchmarks" / "results" / "demo.json").read_text())["tasks"][
        "rgb2infrared"
    ]
    run = EventAccumulator(str(trained_run.version))
    run.Reload()
    # flat lines over every logging step (2 iterations, a line every step) and the validation's step
    steps = sorted({e.step for e in run.Scalars("train/loss")} | {e.step for e in run.Scalars("val/miou")})
    assert steps == [0, 1]
    for method in DRAWN_METHODS:
        level = EventAccumulator(str(trained_run.version / f"recipe_{method}"))
        level.Reload()
        assert level.Tags()["scalars"] == ["val/miou"]
        points = [(event.step, round(event.value, 4)) for event in level.Scalars("val/miou")]
        assert points == [(step, recorded["table"]["miou"][method]) for step in steps]
    demo = recorded["demo"]["curve"][-1]["miou"]
    assert (
        f"| make train TASK=rgb2infrared, measured: {demo:.2f} | the adaptation table" in trained_run.output
    )

"""IoUTable's benchmark line: the run's score next to the adaptation table's for the same recipe."""

import logging
from types import SimpleNamespace

import pytest

from madm_pl.callbacks import IoUTable
from madm_pl.callbacks.tables import format_benchmark_line


def test_benchmark_line_gives_the_run_and_the_table() -> None:
    line = format_benchmark_line(0.2534, 600, {"source-only": 18.14, "oracle": 39.75}, "BENCHMARKS.md")
    assert line == (
        "this run, after iteration 600: mIoU 25.3; the same recipe in BENCHMARKS.md: "
        "source-only 18.1, oracle 39.8"
    )


def test_fit_and_test_end_print_the_benchmark_line_only_when_configured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    module = SimpleNamespace(last_scores={"miou": 0.5, "iteration": 40, "stage": "val"})
    table = IoUTable(benchmark_scores={"MADM": 23.2}, benchmark_source="the table")
    table.on_fit_end(SimpleNamespace(), module)
    assert "this run, after iteration 40: mIoU 50.0; the same recipe in the table: MADM 23.2" in caplog.text
    caplog.clear()
    IoUTable().on_fit_end(SimpleNamespace(), module)  # no numbers configured: nothing printed
    assert "this run" not in caplog.text

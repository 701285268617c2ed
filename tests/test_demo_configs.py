"""The demo configs print, next to a run's score, the adaptation table's numbers for the same recipe:
those numbers must be the table's (benchmarks/results/adapt.json), not stale copies. Each config is
read through the CLI parser, so what is checked is the composed result (base.yaml + the task file)."""

import json
from pathlib import Path

import pytest

from tests.test_configs import parse

REPO = Path(__file__).resolve().parents[1]
TASKS = ("rgb2depth", "rgb2infrared", "rgb2event")

# pytest's own command line is in sys.argv when the tests call the CLI with args=[...]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


@pytest.mark.parametrize("task", TASKS)
def test_demo_config_benchmark_scores_are_the_tables_means(
    task: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse(monkeypatch, "-c", str(REPO / "configs" / "demo" / f"{task}.yaml"))
    table = json.loads((REPO / "benchmarks" / "results" / "adapt.json").read_text())
    setup = json.loads(table["runs"][0]["key"])
    assert setup["iterations"] == config.trainer.max_steps  # the table ran this recipe
    scores = config.iou_table.benchmark_scores
    assert {"source-only", "oracle"} <= set(scores)
    cells = table["cells"][task]
    assert scores == {method: round(cells[method]["mean"], 1) for method in scores}
    seeds = sorted({seed for method in scores for seed in cells[method]["seeds"]})
    assert config.iou_table.benchmark_source.endswith(f"seeds {', '.join(map(str, seeds))})")

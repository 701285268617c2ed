"""The demo configs compare a run with the recipe's measured numbers, read from one file
(benchmarks/results/demo.json); its table means must be the adaptation table's (adapt.json), not stale
copies. Each config is read through the CLI parser, so what is checked is the composed result."""

import json
from pathlib import Path

import pytest

from benchmarks.demo_results import TABLE_METHODS, table_entry
from madm_pl.callbacks.comparison import load_recipe_results
from tests.test_configs import parse

REPO = Path(__file__).resolve().parents[1]
TASKS = ("rgb2depth", "rgb2infrared", "rgb2event")

# pytest's own command line is in sys.argv when the tests call the CLI with args=[...]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


@pytest.mark.parametrize("task", TASKS)
def test_demo_config_compares_with_the_tables_means(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse(monkeypatch, "-c", str(REPO / "configs" / "demo" / f"{task}.yaml"))
    assert config.comparison.results == "benchmarks/results/demo.json"
    adapt = json.loads((REPO / "benchmarks" / "results" / "adapt.json").read_text())
    setup = json.loads(adapt["runs"][0]["key"])
    assert setup["iterations"] == config.trainer.max_steps  # the table ran this recipe
    recorded = json.loads((REPO / config.comparison.results).read_text())["tasks"][task]["table"]
    assert recorded == table_entry(task, adapt)  # python -m benchmarks.demo_results --table-only
    results = load_recipe_results(REPO / config.comparison.results, task)
    seeds = tuple(sorted({run["seed"] for run in adapt["runs"] if run["task"] == task}))
    assert list(results.table) == list(TABLE_METHODS) and results.seeds == seeds and len(seeds) >= 3

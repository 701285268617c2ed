"""benchmarks/adapt_table.py: the methods' switches, the summary arithmetic, the markdown block."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

import pytest

import benchmarks.adapt_table


@pytest.fixture(scope="module")
def table() -> ModuleType:
    return benchmarks.adapt_table


def test_each_ingredient_adds_exactly_its_switches(table: ModuleType) -> None:
    methods = table.METHODS

    def changed(a: str, b: str) -> dict:
        return {k: v for k, v in methods[b].items() if methods[a][k] != v}

    assert changed("self-training", "+DPLG") == {"dplg": True}
    assert changed("self-training", "+LPLR") == {"lplr": True}
    assert changed("self-training", "MADM") == {"dplg": True, "lplr": True}
    assert methods["source-only"]["mode"] == "source_only" and methods["oracle"]["mode"] == "oracle"
    assert (
        methods["self-training"] | {"mode": "madm", "classmix": True, "ema": True} == methods["self-training"]
    )
    # every method names every switch, so none inherits one from the demo config
    assert len({frozenset(m) for m in methods.values()}) == 1


def test_lplr_methods_train_the_tasks_own_lplr_terms(table: ModuleType) -> None:
    # the paper's event recipe regresses only the source palette (at weight 20, from the config);
    # depth and infrared regress both. A method that switched both on everywhere trained something
    # else than MADM on rgb2event.
    configs = {task: table.demo_config(task) for task in table.TASKS}
    for method in ("+LPLR", "MADM"):
        event = table.method_switches(method, configs["rgb2event"])
        assert (event["lplr_source"], event["lplr_target"]) == (True, False)
        for task in ("rgb2depth", "rgb2infrared"):
            both = table.method_switches(method, configs[task])
            assert (both["lplr_source"], both["lplr_target"]) == (True, True)
    for method in ("source-only", "oracle", "self-training", "+DPLG"):
        off = table.method_switches(method, configs["rgb2event"])
        assert (off["lplr_source"], off["lplr_target"]) == (False, False)
    setup = {"backbone": "priors/tiny", "data": "data/synthetic", "overrides": {}}
    options = table.run_options("rgb2event", "MADM", 0, setup)
    assert "--model.init_args.lplr_target=false" in options
    assert "--model.init_args.lplr_source=true" in options and "--model.init_args.dplg=true" in options
    # the weight is not a method switch: the run keeps the config's 20
    assert not any("lplr_source_weight" in option for option in options)


def _run(task: str, method: str, seed: int, miou: float) -> dict:
    return {"task": task, "method": method, "seed": seed, "miou": miou}


def test_summary_mean_spread_and_gap_closed(table: ModuleType) -> None:
    runs = [
        _run("rgb2depth", "source-only", 0, 10.0),
        _run("rgb2depth", "source-only", 1, 14.0),
        _run("rgb2depth", "oracle", 0, 40.0),
        _run("rgb2depth", "oracle", 1, 44.0),
        _run("rgb2depth", "MADM", 0, 27.0),
        _run("rgb2depth", "MADM", 1, 21.0),
        _run("rgb2depth", "self-training", 0, 30.0),
        _run("rgb2depth", "self-training", 1, 20.0),
    ]
    methods = ["source-only", "oracle", "self-training", "MADM"]
    summary = table.summarise(runs, ["rgb2depth"], methods)
    cells = summary["cells"]["rgb2depth"]
    assert cells["MADM"]["mean"] == 24.0 and cells["MADM"]["min"] == 21.0 and cells["MADM"]["max"] == 27.0
    assert cells["MADM"]["std"] == pytest.approx(18**0.5)  # sample std of (27, 21)
    # (24 - 12) / (42 - 12): 40 % of the source-only-to-oracle gap
    assert cells["MADM"]["gap_closed"] == pytest.approx(0.4)
    assert cells["source-only"]["gap_closed"] == 0.0 and cells["oracle"]["gap_closed"] == 1.0
    # seed 0: self-training 30 > MADM 27; seed 1: MADM 21 > 20: the ranking flips
    assert summary["rank_by_seed"]["rgb2depth"] == {
        0: ["self-training", "MADM"],
        1: ["MADM", "self-training"],
    }

    text = table.markdown_table(summary, ["rgb2depth"], methods)
    assert "| MADM | 24.0 ± 4.2 (+40 %) |" in text
    assert "| source-only | 12.0 ± 2.8 |" in text


def test_a_cell_with_fewer_seeds_says_which_and_one_seed_shows_no_spread(table: ModuleType) -> None:
    runs = [_run("rgb2depth", "source-only", seed, 10.0 + 2 * seed) for seed in (0, 1, 2)]
    runs += [_run("rgb2depth", "self-training", 0, 15.0), _run("rgb2depth", "MADM", 0, 13.0)]
    runs += [_run("rgb2depth", "MADM", 1, 17.0)]
    methods = ["source-only", "self-training", "MADM"]
    summary = table.summarise(runs, ["rgb2depth"], methods)
    text = table.markdown_table(summary, ["rgb2depth"], methods)
    assert "| source-only | 12.0 ± 2.0 |" in text  # all three seeds: no note
    assert "| self-training | 15.0 [seed 0] |" in text  # one seed: no ± 0.0
    assert "| MADM | 15.0 ± 2.8 [seeds 0, 1] |" in text
    differences = table.differences_table(table.paired_differences(runs, ["rgb2depth"]), ["rgb2depth"])
    # self-training - source-only on seed 0 only (15 - 10); MADM - self-training on seed 0 (13 - 15)
    assert "| self-training vs source-only | +5.0 |" in differences
    assert "| MADM vs self-training | -2.0 |" in differences


def test_seeds_note_names_each_task_when_their_seeds_differ(table: ModuleType) -> None:
    same = [_run(t, "oracle", seed, 1.0) for t in ("rgb2depth", "rgb2event") for seed in (0, 1)]
    assert table.seeds_note(same, ["rgb2depth", "rgb2event"]) == "seeds [0, 1]"
    mixed = same + [_run("rgb2event", "oracle", 2, 1.0)]
    assert (
        table.seeds_note(mixed, ["rgb2depth", "rgb2event"]) == "seeds rgb2depth [0, 1], rgb2event [0, 1, 2]"
    )


def test_gap_closed_needs_both_ends(table: ModuleType) -> None:
    runs = [_run("rgb2event", "MADM", 0, 20.0), _run("rgb2event", "source-only", 0, 10.0)]
    summary = table.summarise(runs, ["rgb2event"], ["source-only", "MADM"])
    assert summary["cells"]["rgb2event"]["MADM"]["gap_closed"] is None


def test_markdown_block_is_replaced_between_markers(table: ModuleType) -> None:
    start, end = table.MARK_START, table.MARK_END
    document = f"# B\n\nbefore\n{start}\nold table\n{end}\nafter\n"
    new = table.replace_between_markers(document, "new table")
    assert new == f"# B\n\nbefore\n{start}\nnew table\n{end}\nafter\n"
    with pytest.raises(ValueError, match="adapt-table:start"):
        table.replace_between_markers("no markers", "x")


def test_a_changed_setup_never_reuses_a_run(table: ModuleType) -> None:
    key = table.run_key
    setup = {"iterations": 300, "backbone": "priors/tiny", "ema_max_alpha": 0.99, "data": "data/synthetic"}
    assert key("rgb2depth", "MADM", 0, setup) == key("rgb2depth", "MADM", 0, dict(setup))
    assert key("rgb2depth", "MADM", 0, setup) != key("rgb2depth", "MADM", 0, setup | {"iterations": 400})
    assert key("rgb2depth", "MADM", 0, setup) != key("rgb2depth", "MADM", 1, setup)


def test_a_markdown_file_without_markers_is_refused_before_training(table: ModuleType, tmp_path) -> None:
    (tmp_path / "synthetic.json").write_text("{}")
    document = tmp_path / "B.md"
    document.write_text("# Benchmarks\n")
    with pytest.raises(SystemExit):
        table.parse_args(["--data", str(tmp_path), "--markdown", str(document)])
    document.write_text(f"# Benchmarks\n{table.MARK_START}\n{table.MARK_END}\n")
    assert table.parse_args(["--data", str(tmp_path), "--markdown", str(document)]).markdown == document


def test_a_resumed_table_finds_the_finished_runs(table: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # The keys of benchmarks/results/adapt_runs.jsonl were written by the script that read the demo
    # configs as plain YAML; parsed now through the CLI (base + task file), the same runs get the same keys.
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    runs = table.read_runs(repo / "benchmarks" / "results" / "adapt_runs.jsonl")
    args = argparse.Namespace(
        iterations=None, every=None, backbone=None, data=Path("data/synthetic"), overrides={}
    )
    setups = {task: table.run_setup(args, task) for task in table.TASKS}
    current = [row for row in runs.values() if row.get("every") == 100 and row.get("overrides") == {}]
    assert len(current) >= 30  # the table's runs of the demo recipe, every task, method and seed
    for row in current:
        assert table.run_key(row["task"], row["method"], row["seed"], setups[row["task"]]) == row["key"]

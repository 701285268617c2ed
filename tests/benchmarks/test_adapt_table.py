"""benchmarks/adapt_table.py and benchmarks/adapt/: the methods' switches, the run keys, the summary
arithmetic, the markdown block."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import adapt_table
from benchmarks.adapt import report, stats
from benchmarks.adapt import runs as adapt_runs

#: Runs of the demo recipe the committed runs file holds at least (the re-run of issue 25 fills it).
TABLE_RUNS = 0


def test_each_ingredient_adds_exactly_its_switches() -> None:
    methods = adapt_runs.METHODS

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


def test_lplr_methods_train_the_tasks_own_lplr_terms() -> None:
    # the paper's event recipe regresses only the source palette (at weight 20, from the config);
    # depth and infrared regress both. A method that switched both on everywhere trained something
    # else than MADM on rgb2event.
    configs = {task: adapt_runs.demo_config(task) for task in adapt_runs.TASKS}
    for method in ("+LPLR", "MADM"):
        event = adapt_runs.method_switches(method, configs["rgb2event"])
        assert (event["lplr_source"], event["lplr_target"]) == (True, False)
        for task in ("rgb2depth", "rgb2infrared"):
            both = adapt_runs.method_switches(method, configs[task])
            assert (both["lplr_source"], both["lplr_target"]) == (True, True)
    for method in ("source-only", "oracle", "self-training", "+DPLG"):
        off = adapt_runs.method_switches(method, configs["rgb2event"])
        assert (off["lplr_source"], off["lplr_target"]) == (False, False)
    setup = {"backbone": "priors/tiny", "data": "data/synthetic", "overrides": {}}
    options = adapt_runs.run_options("rgb2event", "MADM", 0, setup)
    assert "--model.init_args.lplr_target=false" in options
    assert "--model.init_args.lplr_source=true" in options and "--model.init_args.dplg=true" in options
    # the weight is not a method switch: the run keeps the config's 20
    assert not any("lplr_source_weight" in option for option in options)


def _run(task: str, method: str, seed: int, miou: float) -> dict:
    return {"task": task, "method": method, "seed": seed, "miou": miou}


def test_summary_mean_spread_and_gap_closed() -> None:
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
    summary = stats.summarise(runs, ["rgb2depth"], methods)
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

    text = report.markdown_table(summary, ["rgb2depth"], methods)
    assert "| MADM | 24.0 ± 4.2 (+40 %) |" in text
    assert "| source-only | 12.0 ± 2.8 |" in text


def test_a_cell_with_fewer_seeds_says_which_and_one_seed_shows_no_spread() -> None:
    runs = [_run("rgb2depth", "source-only", seed, 10.0 + 2 * seed) for seed in (0, 1, 2)]
    runs += [_run("rgb2depth", "self-training", 0, 15.0), _run("rgb2depth", "MADM", 0, 13.0)]
    runs += [_run("rgb2depth", "MADM", 1, 17.0)]
    methods = ["source-only", "self-training", "MADM"]
    summary = stats.summarise(runs, ["rgb2depth"], methods)
    text = report.markdown_table(summary, ["rgb2depth"], methods)
    assert "| source-only | 12.0 ± 2.0 |" in text  # all three seeds: no note
    assert "| self-training | 15.0 [seed 0] |" in text  # one seed: no ± 0.0
    assert "| MADM | 15.0 ± 2.8 [seeds 0, 1] |" in text
    differences = report.differences_table(stats.paired_differences(runs, ["rgb2depth"]), ["rgb2depth"])
    # self-training - source-only on seed 0 only (15 - 10); MADM - self-training on seed 0 (13 - 15)
    assert "| self-training vs source-only | +5.0 |" in differences
    assert "| MADM vs self-training | -2.0 |" in differences


def test_seeds_note_names_each_task_when_their_seeds_differ() -> None:
    same = [_run(t, "oracle", seed, 1.0) for t in ("rgb2depth", "rgb2event") for seed in (0, 1)]
    assert report.seeds_note(same, ["rgb2depth", "rgb2event"]) == "seeds [0, 1]"
    mixed = same + [_run("rgb2event", "oracle", 2, 1.0)]
    assert (
        report.seeds_note(mixed, ["rgb2depth", "rgb2event"]) == "seeds rgb2depth [0, 1], rgb2event [0, 1, 2]"
    )


def test_gap_closed_needs_both_ends() -> None:
    runs = [_run("rgb2event", "MADM", 0, 20.0), _run("rgb2event", "source-only", 0, 10.0)]
    summary = stats.summarise(runs, ["rgb2event"], ["source-only", "MADM"])
    assert summary["cells"]["rgb2event"]["MADM"]["gap_closed"] is None


def test_markdown_block_is_replaced_between_markers() -> None:
    start, end = report.MARK_START, report.MARK_END
    document = f"# B\n\nbefore\n{start}\nold table\n{end}\nafter\n"
    new = report.replace_between_markers(document, "new table")
    assert new == f"# B\n\nbefore\n{start}\nnew table\n{end}\nafter\n"
    with pytest.raises(ValueError, match="adapt-table:start"):
        report.replace_between_markers("no markers", "x")


def test_a_changed_setup_never_reuses_a_run() -> None:
    key = adapt_runs.run_key
    setup = {"iterations": 300, "backbone": "priors/tiny", "ema_max_alpha": 0.99, "data": "data/synthetic"}
    recipe = {"model": {"color_jitter": "kornia-0.6"}, "head_finest_level": "decoded"}
    assert key("rgb2depth", "MADM", 0, setup, recipe) == key(
        "rgb2depth", "MADM", 0, dict(setup), dict(recipe)
    )
    assert key("rgb2depth", "MADM", 0, setup, recipe) != key(
        "rgb2depth", "MADM", 0, setup | {"iterations": 400}, recipe
    )
    assert key("rgb2depth", "MADM", 0, setup, recipe) != key("rgb2depth", "MADM", 1, setup, recipe)
    assert key("rgb2depth", "MADM", 0, setup, recipe) != key(
        "rgb2depth", "MADM", 0, setup, recipe | {"head_finest_level": "vae_encoder"}
    )


def test_the_key_holds_each_methods_resolved_recipe() -> None:
    # Issue 25: a run whose meaning changed (switches, colour jitter, decode rule) is trained again.
    setup = {
        "iterations": 600,
        "every": 100,
        "backbone": "priors/tiny",
        "data": "data/synthetic",
        "overrides": {},
    }
    recipes = {
        (task, method): adapt_runs.resolved_recipe(task, method, setup)
        for task in ("rgb2infrared", "rgb2event")
        for method in adapt_runs.METHODS
    }
    for (task, method), recipe in recipes.items():
        model = recipe["model"]
        assert model["mode"] == adapt_runs.METHODS[method]["mode"] and "seed" not in model
        if model["mode"] == "madm":
            assert (
                model["color_jitter"] == "kornia-0.6" and model["dplg"] == adapt_runs.METHODS[method]["dplg"]
            )
        else:  # no mixed image, no jitter, no teacher: those options are not part of the recipe
            assert not {"color_jitter", "dplg", "ema_max_alpha", "pseudo_label_threshold"} & set(model)
        assert ("dplg_t_end" in model) == (adapt_runs.METHODS[method]["dplg"] is True)
        lplr = adapt_runs.METHODS[method]["lplr"]
        assert recipe["head_finest_level"] == ("decoded" if lplr else "vae_encoder"), (task, method)
        assert recipe["data"]["target_train_labels"] is True and "seed" not in recipe["data"]
    event_lplr = recipes[("rgb2event", "+LPLR")]["model"]
    assert (event_lplr["lplr_source"], event_lplr["lplr_target"], event_lplr["lplr_source_weight"]) == (
        True,
        False,
        20.0,
    )
    assert recipes[("rgb2event", "+LPLR")]["head_finest_level"] == "decoded"  # one term on is LPLR on
    # The recipe differs per method, so no two methods share a key for a seed.
    keys = {adapt_runs.run_key(t, m, 0, setup, r) for (t, m), r in recipes.items()}
    assert len(keys) == len(recipes)
    jitter = adapt_runs.resolved_recipe(
        "rgb2infrared", "MADM", setup | {"overrides": {"model.color_jitter": "kornia-0.9"}}
    )
    assert jitter["model"]["color_jitter"] == "kornia-0.9"
    assert jitter != recipes[("rgb2infrared", "MADM")]


def test_options_a_method_never_reads_are_left_out_of_its_recipe() -> None:
    base = adapt_runs.demo_config("rgb2depth").model.init_args.as_dict()
    self_training = base | {"dplg": False, "lplr_source": False, "lplr_target": False}
    active = adapt_runs.active_model_options(self_training)
    assert not {"dplg_t0", "dplg_t_end", "lplr_source_weight", "lplr_target_weight", "seed"} & set(active)
    assert active["ema_max_alpha"] == 0.99 and active["color_jitter"] == "kornia-0.6"
    # Editing an option the method never reads leaves its recipe (and so its key) as it was ...
    assert adapt_runs.active_model_options(self_training | {"dplg_t_end": 123}) == active
    # ... editing one it reads does not.
    madm = base | {"dplg": True}
    assert adapt_runs.active_model_options(madm | {"dplg_t_end": 123}) != adapt_runs.active_model_options(
        madm
    )
    assert adapt_runs.active_model_options(madm)["lplr_target_weight"] == 1.0
    source_only = self_training | {"mode": "source_only", "ema": False, "classmix": False}
    teacher_and_mix = {"ema_max_alpha", "pseudo_label_threshold", "color_jitter", "classmix", "ema", "dplg"}
    assert set(adapt_runs.active_model_options(source_only)) == set(active) - teacher_and_mix - {
        "classmix_include_ignore"
    }
    # The source LPLR term is computed in every mode but the oracle's.
    assert "lplr_source_weight" in adapt_runs.active_model_options(source_only | {"lplr_source": True})
    oracle = source_only | {"mode": "oracle", "lplr_source": True}
    assert "lplr_source_weight" not in adapt_runs.active_model_options(oracle)


def test_t_interval_by_hand_and_against_scipy() -> None:
    from benchmarks.common import T_975, t_interval

    # differences 1, 2, 3: mean 2, std 1, n 3: 2 +- 4.303 / sqrt(3) = 2 +- 2.484
    low, high = t_interval([1.0, 2.0, 3.0])
    assert (low, high) == pytest.approx((2 - 4.303 / 3**0.5, 2 + 4.303 / 3**0.5))
    assert t_interval([5.0]) is None
    with pytest.raises(ValueError, match="2 to 31"):
        t_interval([1.0] * 32)
    stats = pytest.importorskip("scipy.stats")
    for df, value in T_975.items():
        assert value == pytest.approx(stats.t.ppf(0.975, df), abs=6e-4), df


def test_differences_table_shows_the_interval_and_marks_one_that_excludes_zero() -> None:
    runs = [_run("rgb2infrared", "source-only", seed, 10.0) for seed in (0, 1, 2)]
    runs += [_run("rgb2infrared", "self-training", seed, 10.0 + d) for seed, d in zip((0, 1, 2), (5, 6, 7))]
    runs += [_run("rgb2infrared", "MADM", seed, 10.0 + d) for seed, d in zip((0, 1, 2), (3, 7, 8))]
    differences = stats.paired_differences(runs, ["rgb2infrared"])
    adapt = differences["rgb2infrared"]["self-training vs source-only"]
    assert adapt["excludes_zero"] and adapt["ci95"] == pytest.approx((6 - 2.484, 6 + 2.484), abs=1e-3)
    madm = differences["rgb2infrared"]["MADM vs self-training"]  # -2, +1, +1: mean 0, std sqrt(3)
    assert not madm["excludes_zero"] and madm["ci95"] == pytest.approx((-4.303, 4.303), abs=1e-3)
    text = report.differences_table(differences, ["rgb2infrared"])
    assert "| self-training vs source-only | **+6.0 ± 1.0 [+3.5, +8.5]** |" in text
    assert "| MADM vs self-training | +0.0 ± 1.7 [-4.3, +4.3] |" in text


def test_a_markdown_file_without_markers_is_refused_before_training(tmp_path) -> None:
    (tmp_path / "synthetic.json").write_text("{}")
    document = tmp_path / "B.md"
    document.write_text("# Benchmarks\n")
    with pytest.raises(SystemExit):
        adapt_table.parse_args(["--data", str(tmp_path), "--markdown", str(document)])
    document.write_text(f"# Benchmarks\n{report.MARK_START}\n{report.MARK_END}\n")
    assert adapt_table.parse_args(["--data", str(tmp_path), "--markdown", str(document)]).markdown == document


def test_a_resumed_table_finds_the_finished_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every run of the demo recipe in benchmarks/results/adapt_runs.jsonl carries the key the current code
    # gives it (setup and resolved recipe), so a resumed table reuses exactly these runs.
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    runs = adapt_runs.read_runs(repo / "benchmarks" / "results" / "adapt_runs.jsonl")
    args = argparse.Namespace(
        iterations=None, every=None, backbone=None, data=Path("data/synthetic"), overrides={}
    )
    setups = {task: adapt_runs.run_setup(args, task) for task in adapt_runs.TASKS}
    recipes: dict[tuple[str, str], dict] = {}
    current = [row for row in runs.values() if row.get("every") == 100 and row.get("overrides") == {}]
    assert len(current) >= TABLE_RUNS
    for row in current:
        task, method = row["task"], row["method"]
        if (task, method) not in recipes:
            recipes[(task, method)] = adapt_runs.resolved_recipe(task, method, setups[task])
        assert (
            adapt_runs.run_key(task, method, row["seed"], setups[task], recipes[(task, method)]) == row["key"]
        )


def test_curves_table_means_per_interval_and_q_at_the_end() -> None:
    def run(seed: int, curve: list[tuple[float, float, float]]) -> dict:
        points = [
            {"iteration": 100 * (i + 1), "miou": m, "pseudo_label_weight": q, "pseudo_label_accuracy": a}
            for i, (m, q, a) in enumerate(curve)
        ]
        return {"task": "rgb2infrared", "method": "self-training", "seed": seed, "curve": points}

    runs = [run(0, [(10.0, 0.0, 0.4), (20.0, 0.2, 0.6)]), run(1, [(12.0, 0.0, 0.5), (22.0, 0.1, 0.7)])]
    runs.append({"task": "rgb2infrared", "method": "source-only", "seed": 0, "curve": [
        {"iteration": 100, "miou": 9.0}, {"iteration": 200, "miou": 11.0}]})  # fmt: skip
    text = report.curves_table(runs, ["rgb2infrared"], ["source-only", "self-training"])
    assert "| task, method (seeds) | 100 | 200 |" in text
    assert "| rgb2infrared, self-training (0, 1) | 11.0 ± 1.4 | 21.0 ± 1.4 | 0.15 | 0.45 / 0.65 |" in text
    assert "| rgb2infrared, source-only (0) | 9.0 | 11.0 |  |  |" in text


def test_set_overrides_are_parsed_by_the_projects_parser_into_the_same_key() -> None:
    # The values madm-pl fit's parser gives (a float, a tuple as a list, a string), as the run key stores
    # them: the same dict (and so the same key) as the literal one.
    overrides = adapt_runs.parse_overrides(
        ["model.lr=1e-3", "data.crop_size=[96,96]", "model.color_jitter=kornia-0.9"], ["rgb2infrared"]
    )
    literal = {"model.lr": 0.001, "data.crop_size": [96, 96], "model.color_jitter": "kornia-0.9"}
    assert overrides == literal and isinstance(overrides["model.lr"], float)
    assert adapt_runs.parse_overrides([], ["rgb2infrared"]) == {}
    setup = {"iterations": 600, "every": 100, "backbone": "priors/tiny", "data": "data/synthetic"}
    recipe = {"model": {"lr": 0.001}}
    assert adapt_runs.run_key("rgb2infrared", "MADM", 0, setup | {"overrides": overrides}, recipe) == (
        adapt_runs.run_key("rgb2infrared", "MADM", 0, setup | {"overrides": literal}, recipe)
    )
    options = adapt_runs.run_options("rgb2infrared", "MADM", 0, setup | {"overrides": overrides})
    assert "--model.init_args.lr=0.001" in options and "--data.init_args.crop_size=[96, 96]" in options
    # A nested option below model.init_args reaches the run's recipe.
    nested = adapt_runs.parse_overrides(["model.head.init_args.embed_dim=48"], ["rgb2infrared"])
    assert nested == {"model.head.init_args.embed_dim": 48}
    recipe = adapt_runs.resolved_recipe("rgb2infrared", "MADM", setup | {"overrides": nested})
    assert recipe["model"]["head"]["init_args"]["embed_dim"] == 48


def test_a_bad_set_key_or_value_fails_with_the_parsers_message_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(
        ValueError, match=r"--set model\.lrr=1e-3: .*did you mean `lr`\? Fix: --set model\.lr="
    ):
        adapt_runs.parse_overrides(["model.lrr=1e-3"], ["rgb2infrared"])
    with pytest.raises(ValueError, match=r"--set model\.lr=abc: expected float"):
        adapt_runs.parse_overrides(["model.lr=abc"], ["rgb2infrared"])
    with pytest.raises(ValueError, match=r"expected model\.<option>=<value>"):
        adapt_runs.parse_overrides(["trainer.max_steps=3"], ["rgb2infrared"])
    (tmp_path / "synthetic.json").write_text("{}")
    with pytest.raises(SystemExit):  # the command: argparse's error, before any run is planned
        adapt_table.parse_args(
            ["--data", str(tmp_path), "--markdown", "none.md", "--set", "data.crop_size=x"]
        )
    assert "error: --set data.crop_size=x: expected" in capsys.readouterr().err

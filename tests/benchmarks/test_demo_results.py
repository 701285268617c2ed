"""benchmarks/demo_results.py: the demo's numbers are those of the current config and training code, and
README.md and BENCHMARKS.md show what the results file holds (issue 27, item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.common import markers
from benchmarks.demo_results import (
    DEMO_TASK,
    FINGERPRINT_WORLD,
    REGENERATE,
    RESULTS,
    SECTION,
    config_digest,
    demo_config_path,
    fingerprint,
    fingerprints_match,
    read_run,
    record_demo,
    render_benchmarks,
    render_readme,
    saved_config_digest,
)
from tests.cli_runs import REPO
from tests.conftest import TrainedRun

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def recorded_demo() -> dict:
    return json.loads((REPO / RESULTS).read_text())["tasks"][DEMO_TASK]["demo"]


def section(path: Path) -> str:
    start, end = markers(SECTION)
    return path.read_text().split(start + "\n", 1)[1].split("\n" + end, 1)[0]


def test_the_recorded_demo_is_of_the_current_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert recorded_demo()["config_sha256"] == config_digest(demo_config_path(DEMO_TASK)), (
        f"{demo_config_path(DEMO_TASK)} changed since its demo was measured: re-measure with {REGENERATE}"
    )


def test_the_recorded_demo_is_of_the_current_training_code(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fingerprint's world is the test suite's small synthetic world
    options = json.loads((synthetic_root / "synthetic.json").read_text())["options"]
    world = {key: value for key, value in FINGERPRINT_WORLD.items() if key != "workers"}
    assert {key: options[key] for key in world} == world
    monkeypatch.chdir(REPO)
    recorded = recorded_demo()["fingerprint"]["losses"]
    current = fingerprint(DEMO_TASK, synthetic_root)
    assert fingerprints_match(recorded, current), (
        f"the first losses of the demo config moved ({recorded} -> {current}): the training path changed "
        f"and the demo numbers are stale; re-measure with {REGENERATE}"
    )


def test_fingerprints_tell_runs_apart() -> None:
    assert fingerprints_match([4.6539, 4.3718], [4.6539, 4.3718])
    assert not fingerprints_match([4.6539, 4.3718], [4.6539, 4.3719])  # 2e-5 relative
    assert not fingerprints_match([4.6539, 4.3718], [4.6539])


def test_config_digest_ignores_comments_and_display_but_not_values(tmp_path: Path) -> None:
    base = (REPO / "configs" / "demo" / "base.yaml").read_text()
    task = (REPO / "configs" / "demo" / "rgb2infrared.yaml").read_text()

    def digest(base_text: str, task_text: str = task) -> str:
        (tmp_path / "base.yaml").write_text(base_text)
        (tmp_path / "task.yaml").write_text(task_text)
        return config_digest(tmp_path / "task.yaml")

    original = digest(base)
    assert digest("# a new comment\n" + base) == original
    assert digest(base.replace("results: benchmarks/results/demo.json", "results: other.json")) == original
    assert digest(base.replace("    lr: 1.0e-3", "    lr: 2.0e-3")) != original
    assert digest(base, task.replace("dplg_t_end: 480", "dplg_t_end: 400")) != original


def test_docs_show_the_results_file(monkeypatch: pytest.MonkeyPatch) -> None:
    results = json.loads((REPO / RESULTS).read_text())
    fix = "python -m benchmarks.demo_results --docs-only rewrites it"
    assert section(REPO / "README.md") == render_readme(results), fix
    assert section(REPO / "BENCHMARKS.md") == render_benchmarks(results), fix
    demo = results["tasks"][DEMO_TASK]["demo"]
    assert f"**{demo['curve'][-1]['miou']:.2f}**" in section(REPO / "README.md")


def test_a_run_is_read_from_its_events_and_must_be_of_the_current_config(
    trained_run: TrainedRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    numbers = read_run(trained_run.version, DEMO_TASK)
    events = EventAccumulator(str(trained_run.version))
    events.Reload()
    [logged] = events.Scalars("val/miou")  # the validation after iteration 2, at Lightning's step 1
    assert numbers["curve"] == [{"iteration": 2, "miou": round(logged.value, 2)}]
    assert {"road", "sky"} <= set(numbers["iou"])  # in every synthetic test image
    [road] = events.Scalars("val_iou/road")
    assert numbers["iou"]["road"] == round(road.value, 2)
    # the trained run has other options (2 iterations, a small world): not the demo's numbers
    with pytest.raises(ValueError, match=r"is not configs/demo/rgb2infrared\.yaml as it is now"):
        record_demo(DEMO_TASK, trained_run.version, None, "make train TASK=rgb2infrared")


def test_the_config_a_demo_run_saves_has_the_configs_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # --print_config prints what SaveConfigCallback writes to a run's config.yaml (ckpt_path included)
    from madm_pl.cli import main

    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(demo_config_path(DEMO_TASK)), "--print_config"])
    saved = tmp_path / "config.yaml"
    saved.write_text(capsys.readouterr().out)
    assert "ckpt_path" in saved.read_text()
    assert saved_config_digest(saved) == config_digest(demo_config_path(DEMO_TASK))

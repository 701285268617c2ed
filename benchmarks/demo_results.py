"""The demo's measured numbers, in one file that a test holds to the code and configs (issue 27, item 1).

``benchmarks/results/demo.json`` is the single source of every demo number a user can reproduce: the
closing line a demo run prints (``callbacks.comparison``), the levels TensorBoard draws beside
``val/miou``, and the marked demo sections of README.md and BENCHMARKS.md, which this script writes from
it. Per task it holds:

- ``table``: the adaptation table's means for the same recipe, copied from
  ``benchmarks/results/adapt.json`` (source-only, self-training, MADM, oracle; the seeds);
- ``demo`` (rgb2infrared, the README's task): the measured ``make train`` run, its curve, per-class IoU
  and time, with two checks of what it was measured on: ``config_sha256``, the digest of the composed
  config (``config_digest``), and ``fingerprint``, the losses of the first training steps of that config
  on a small synthetic world (``fingerprint``), which move with any change of the training path (model,
  losses, augmentation, data, schedule). ``tests/benchmarks/test_demo_results.py`` recomputes both and
  fails, naming this command, when either differs: a demo config or the code changed, and the numbers
  were not measured again.

    python -m benchmarks.demo_results                     # make train TASK=rgb2infrared, then record it
    python -m benchmarks.demo_results --from-run runs/demo/rgb2infrared/version_3   # a finished run
    python -m benchmarks.demo_results --table-only        # the table's means after make bench-adapt
    python -m benchmarks.demo_results --docs-only         # README/BENCHMARKS sections from the file

A run given with ``--from-run`` must have been made with the current config (its saved ``config.yaml``
has the same digest) and the current code (the fingerprint is computed now, by this command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import BARE_TRAINER, has_markers, markers, replace_between_markers, write_atomic

TASKS = ("rgb2depth", "rgb2infrared", "rgb2event")
#: The task whose demo run the README shows.
DEMO_TASK = "rgb2infrared"
#: The table's methods the results keep (what a demo run is compared with).
TABLE_METHODS = ("source-only", "self-training", "MADM", "oracle")
#: Sections of the top-level config that do not change what is trained (display, where results are read).
UNTRAINED_SECTIONS = ("config", "comparison", "progress_bar", "prediction_writer")
#: The small synthetic world of the fingerprint (as tests/conftest.py's ``synthetic_root``).
FINGERPRINT_WORLD = {
    "height": 64,
    "width": 128,
    "source_train": 8,
    "target_train": 8,
    "target_test": 5,
    "workers": 1,
}
FINGERPRINT_STEPS = 3
#: Relative tolerance of a fingerprint comparison: bit-identical on one machine at one thread; another
#: CPU's kernels differ far below it, while a change of the training path moves the losses far above it.
FINGERPRINT_RTOL = 1e-5
RESULTS = Path("benchmarks/results/demo.json")
ADAPT_JSON = Path("benchmarks/results/adapt.json")
SECTION = "demo-result"
MARK_START, MARK_END = markers(SECTION)
REGENERATE = "python -m benchmarks.demo_results (make demo-results; 7 minutes on one core)"


def demo_config_path(task: str) -> Path:
    return Path("configs", "demo", f"{task}.yaml")


def config_digest(config_file: str | Path) -> str:
    """SHA-256 of what a config trains: the composed config as ``madm-pl fit`` parses it (base included,
    defaults filled in), without ``UNTRAINED_SECTIONS``. Comments and key order do not count."""
    from madm_pl.cli import parse_config

    config = parse_config(["-c", str(config_file)]).as_dict()
    trained = {key: value for key, value in config.items() if key not in UNTRAINED_SECTIONS}
    text = json.dumps(trained, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def saved_config_digest(saved: Path) -> str:
    """``config_digest`` of the ``config.yaml`` a ``madm-pl fit`` run saved (without the keys of ``fit``
    itself, ``ckpt_path`` and ``weights_only``, which the config parser does not take)."""
    import yaml

    content = yaml.safe_load(saved.read_text())
    for key in ("ckpt_path", "weights_only", "config"):
        content.pop(key, None)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder, "config.yaml")
        copy.write_text(yaml.safe_dump(content))
        return config_digest(copy)


def make_fingerprint_world(out: Path) -> Path:
    """Write the fingerprint's synthetic world (``FINGERPRINT_WORLD``) to ``out``."""
    from madm_pl.synthetic import generate

    generate(out, **FINGERPRINT_WORLD)
    return out


def fingerprint(task: str, world: Path, steps: int = FINGERPRINT_STEPS) -> list[float]:
    """The training loss of the first ``steps`` iterations of the task's demo config on ``world``.

    The config as ``madm-pl fit`` parses it (seed, model, data, schedule over ``max_steps``, gradient
    clip) with the data roots moved to ``world`` and one loader process, on CPU with one intra-op
    thread, stopped after ``steps`` iterations. Step 1's loss depends on the initialisation, the data
    pipeline and the losses; steps 2 and 3 also on the optimiser and schedule.

    Returns:
        ``steps`` floats.
    """
    import torch
    from lightning.pytorch import Callback, Trainer, seed_everything

    from madm_pl.cli import instantiate, parse_config

    base = parse_config(["-c", str(demo_config_path(task))])
    roots = {key: Path(world, Path(base.data.init_args[key]).name) for key in ("source_root", "target_root")}
    options = [f"--data.init_args.{key}={value}" for key, value in roots.items()]
    config = parse_config(["-c", str(demo_config_path(task)), *options, "--data.init_args.num_workers=0"])
    losses: list[float] = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))
            if len(losses) >= steps:
                trainer.should_stop = True

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_everything(config.seed_everything, verbose=False)
        module = instantiate(config.model)
        data = instantiate(config.data)
        trainer = Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=config.trainer.max_steps,  # the LR schedule of the whole run
            gradient_clip_val=config.trainer.gradient_clip_val,
            gradient_clip_algorithm=config.trainer.gradient_clip_algorithm,
            callbacks=[Record()],
            **BARE_TRAINER,
        )
        trainer.fit(module, data)
    finally:
        torch.set_num_threads(threads)
    return losses[:steps]


def fingerprints_match(recorded: Sequence[float], current: Sequence[float]) -> bool:
    """Whether two fingerprints are the same run (``FINGERPRINT_RTOL``)."""
    return len(recorded) == len(current) and all(
        abs(a - b) <= FINGERPRINT_RTOL * max(abs(a), abs(b)) for a, b in zip(recorded, current)
    )


def table_entry(task: str, adapt: dict[str, Any]) -> dict[str, Any]:
    """The adaptation table's means of ``task`` (one decimal, as the table prints them) and their seeds."""
    cells = adapt["cells"][task]
    seeds = sorted({seed for method in TABLE_METHODS for seed in cells[method]["seeds"]})
    return {
        "source": str(ADAPT_JSON),
        "seeds": seeds,
        "miou": {method: round(cells[method]["mean"], 1) for method in TABLE_METHODS},
    }


# --------------------------------------------------------------------------------- reading a run
def read_run(run_folder: Path, task: str) -> dict[str, Any]:
    """A finished ``make train`` run's numbers from its TensorBoard events: the ``val/miou`` curve and
    the last validation's per-class IoU (``val_iou/<class>``), both in percent."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_folder), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    if "val/miou" not in tags:
        raise ValueError(f"{run_folder}: no val/miou in its TensorBoard events; is it a finished run folder?")
    # Lightning logs the validation after iteration n at step n - 1 (callbacks.images.logger_step)
    curve = [{"iteration": e.step + 1, "miou": round(e.value, 2)} for e in events.Scalars("val/miou")]
    last = curve[-1]["iteration"] - 1
    from madm_pl.labels import get_task

    iou = {}
    for name in get_task(task).classes:
        tag = f"val_iou/{name.replace(' ', '_')}"
        values = [e.value for e in events.Scalars(tag) if e.step == last] if tag in tags else []
        if values:
            iou[name] = round(values[-1], 2)
    return {"curve": curve, "iou": iou}


def run_demo(task: str) -> tuple[Path, float]:
    """``make train TASK=<task>``'s training (``madm-pl fit`` of the demo config, its ``threads``):
    the new run folder and its wall seconds."""
    root = Path("runs", "demo", task)
    before = set(root.glob("version_*")) if root.is_dir() else set()
    command = [str(Path(sys.executable).parent / "madm-pl"), "fit", "-c", str(demo_config_path(task))]
    start = time.perf_counter()
    subprocess.run(command, check=True)  # the config's `threads`, as make train
    seconds = time.perf_counter() - start
    new = sorted(set(root.glob("version_*")) - before, key=lambda p: int(p.name.split("_")[1]))
    if not new:
        raise RuntimeError(f"madm-pl fit wrote no new run folder under {root}")
    return new[-1], seconds


# ---------------------------------------------------------------------------------------- the docs
def _per_class(iou: dict[str, float] | None) -> str:
    if not iou:
        return "per-class IoU not recorded in this measurement"
    ranked = sorted(iou.items(), key=lambda item: -item[1])
    named = [f"{name} {value:.1f}" for name, value in ranked if value >= 0.05]
    zero = [name for name, value in ranked if value < 0.05]
    return ", ".join(named) + (f"; {', '.join(zero)} 0" if zero else "")


def _table_sentence(table: dict[str, Any]) -> str:
    seeds = ", ".join(str(seed) for seed in table["seeds"])
    means = ", ".join(f"{name} {value:.1f}" for name, value in table["miou"].items())
    return f"the adaptation table for the same recipe (mean of seeds {seeds}): {means}"


def _curve_columns(curve: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """``"200 / 400 / 600"`` and ``"17.21 / 23.93 / **21.12**"``: the iterations and mIoUs of a demo curve."""
    steps = " / ".join(str(point["iteration"]) for point in curve)
    values = " / ".join(f"{point['miou']:.2f}" for point in curve[:-1]) + f" / **{curve[-1]['miou']:.2f}**"
    return steps, values


def render_readme(results: dict[str, Any]) -> str:
    """The README's marked demo paragraph."""
    entry = results["tasks"][DEMO_TASK]
    demo = entry["demo"]
    curve = demo["curve"]
    steps, values = _curve_columns(curve)
    return _wrap(
        f"`{demo['command']}` gives target test mIoU {values} after {steps} iterations "
        f"({_per_class(demo['iou'])}); {_table_sentence(entry['table'])}. The run prints this comparison "
        f"when it ends, and TensorBoard draws source-only, self-training and oracle beside `val/miou`. "
        f'Measured {demo["measured"]}; the numbers live in `{RESULTS}` (BENCHMARKS.md, "Demo training").'
    )


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=110, break_long_words=False, break_on_hyphens=False)


def render_benchmarks(results: dict[str, Any]) -> str:
    """BENCHMARKS.md's marked demo table and sentence."""
    entry = results["tasks"][DEMO_TASK]
    demo = entry["demo"]
    curve = demo["curve"]
    steps, values = _curve_columns(curve)
    seconds = demo.get("wall_seconds")
    timing = f" ({seconds / 60:.1f} min wall)" if seconds else ""
    return "\n".join(
        [
            f"| | val mIoU after {steps} iterations | per class at {curve[-1]['iteration']} |",
            "| --- | --- | --- |",
            f"| `{demo['command']}` (seed 42) | {values} | {_per_class(demo['iou'])} |",
            "",
            _wrap(
                f"Measured {demo['measured']}{timing}. For comparison, {_table_sentence(entry['table'])}. "
                f"Written by `python -m benchmarks.demo_results` from `{RESULTS}`, which a test holds to the "
                "demo config and the training code."
            ),
        ]
    )


def write_docs(results: dict[str, Any], readme: Path, benchmarks: Path) -> None:
    for path, text in ((readme, render_readme(results)), (benchmarks, render_benchmarks(results))):
        document = path.read_text()
        updated = replace_between_markers(document, text, SECTION)
        if updated != document:
            write_atomic(path, updated)


# ------------------------------------------------------------------------------------------- main
def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def record_demo(task: str, run_folder: Path, seconds: float | None, command: str) -> dict[str, Any]:
    """The ``demo`` entry of a finished run of the current config, with the current code's fingerprint."""
    saved = run_folder / "config.yaml"
    if not saved.is_file():
        raise ValueError(f"{run_folder}: no config.yaml; give a run folder written by madm-pl fit")
    digest = config_digest(demo_config_path(task))
    if saved_config_digest(saved) != digest:
        raise ValueError(
            f"{saved} is not {demo_config_path(task)} as it is now (other options or an older config): "
            "record a run made with the current config"
        )
    numbers = read_run(run_folder, task)
    with tempfile.TemporaryDirectory() as folder:
        losses = fingerprint(task, make_fingerprint_world(Path(folder, "world")))
    return {
        "command": command,
        "config": str(demo_config_path(task)),
        "config_sha256": digest,
        "fingerprint": {"steps": FINGERPRINT_STEPS, "world": FINGERPRINT_WORLD, "losses": losses},
        "measured": f"on {time.strftime('%Y-%m-%d')}, {machine()}, from {run_folder}",
        "curve": numbers["curve"],
        "iou": numbers["iou"],
        "wall_seconds": None if seconds is None else round(seconds, 1),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=TASKS, default=DEMO_TASK, help="the demo run to measure")
    parser.add_argument("--from-run", type=Path, help="record this finished run folder instead of training")
    parser.add_argument("--table-only", action="store_true", help="refresh the table's means only")
    parser.add_argument(
        "--docs-only", action="store_true", help="rewrite the README/BENCHMARKS sections only"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args(argv)
    for path in (args.readme, args.benchmarks):
        if not has_markers(path.read_text(), SECTION):
            parser.error(f"{path}: add the lines {MARK_START} and {MARK_END} where the demo numbers go")
    if args.from_run is not None and not args.from_run.is_dir():
        parser.error(f"--from-run {args.from_run}: no such run folder")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {"tasks": {}}
    results["about"] = (
        "The demo's measured numbers: the closing line of a demo run, TensorBoard's levels beside "
        f"val/miou and the README/BENCHMARKS demo sections read them. Written by {REGENERATE}."
    )
    if not args.docs_only:
        adapt = json.loads(ADAPT_JSON.read_text())
        for task in TASKS:
            results["tasks"].setdefault(task, {"demo": None})["table"] = table_entry(task, adapt)
        if not args.table_only:
            if args.from_run is not None:
                run_folder, seconds = args.from_run, None
            else:
                run_folder, seconds = run_demo(args.task)
            entry = record_demo(args.task, run_folder, seconds, f"make train TASK={args.task}")
            results["tasks"][args.task]["demo"] = entry
        write_atomic(args.results, json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.results}")
    write_docs(results, args.readme, args.benchmarks)
    print(f"wrote the {SECTION} sections of {args.readme} and {args.benchmarks}")


if __name__ == "__main__":
    main()

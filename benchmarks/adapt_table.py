"""The adaptation table on the synthetic world (issue 7, `make bench-adapt`): what each ingredient does.

For each task, each method and each seed, one short training run on the synthetic world with the tiny
diffusion prior (`configs/demo/<task>.yaml`: 64x64 crops, batch 2, the demo's narrow head), then the
mIoU on the 100 target test images at 64x128:

- ``source-only``: supervised on the labelled RGB source; no teacher, no target.
- ``oracle``: supervised on the labelled target training images only (the upper bound).
- ``self-training``: EMA teacher + ClassMix + confidence-weighted pseudo-labels; no DPLG, no LPLR.
- ``+DPLG``: self-training with the teacher's target latent noised at the DPLG timestep.
- ``+LPLR``: self-training with latent regression on the source and mixed palette images.
- ``MADM``: both.

Every run of a cell differs only in its seed (initialisation, data order, crops, ClassMix, noise). Runs
go to ``--workers`` processes with one thread each (two OpenMP threads per process on two shared cores
are ~50x slower), longest first. Each finished run is appended to ``--runs`` (JSON lines) at once, so
an interrupted table resumes where it stopped; then the summary is written:

    python -m benchmarks.adapt_table                          # 3 tasks x 6 methods x 2 seeds
    python -m benchmarks.adapt_table --tasks rgb2infrared --seeds 0 1 2

Outputs: ``--json`` (every run and every cell), ``--chart`` (PNG, mIoU per method per task, bars =
mean, whiskers = min and max over seeds) and the table between the markers in ``--markdown``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from benchmarks.common import BARE_TRAINER, has_markers, markers, t_interval, write_atomic
from benchmarks.common import replace_between_markers as common_replace

TASKS = ("rgb2depth", "rgb2infrared", "rgb2event")
_SELF_TRAINING = {"mode": "madm", "classmix": True, "ema": True}
_OFF = {"dplg": False, "lplr": False}
# method -> its switches (every one named, so no method inherits one from the demo config). "lplr"
# stands for the task's own LPLR terms (method_switches): the paper chose them per task.
METHODS: dict[str, dict[str, Any]] = {
    "source-only": {"mode": "source_only", "classmix": False, "ema": False, **_OFF},
    "oracle": {"mode": "oracle", "classmix": False, "ema": False, **_OFF},
    "self-training": {**_SELF_TRAINING, **_OFF},
    "+DPLG": {**_SELF_TRAINING, **_OFF, "dplg": True},
    "+LPLR": {**_SELF_TRAINING, **_OFF, "lplr": True},
    "MADM": {**_SELF_TRAINING, "dplg": True, "lplr": True},
}
# Relative cost per iteration (student passes, teacher, palette encodes), to start the long runs first.
_COST = {"source-only": 1, "oracle": 1, "self-training": 2.6, "+DPLG": 2.6, "+LPLR": 3.2, "MADM": 3.2}
#: The section of ``--markdown`` this script fills.
SECTION = "adapt-table"
MARK_START, MARK_END = markers(SECTION)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="training iterations per run (default: the demo config's trainer.max_steps, the small recipe)",
    )
    parser.add_argument(
        "--every",
        type=int,
        default=None,
        help="target test mIoU every this many iterations, for the learning curves (default: a sixth "
        "of the run)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="change the recipe for every run, e.g. model.lr=1e-3 data.crop_size=[96,96] (YAML values); "
        "the keys are those of configs/demo/<task>.yaml below model.init_args / data.init_args",
    )
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"), help="the synthetic world")
    parser.add_argument(
        "--backbone", default=None, help="diffusion stack of every run (default: the config's)"
    )
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/results/adapt_runs.jsonl"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/adapt.json"))
    parser.add_argument("--chart", type=Path, default=Path("docs/figures/adapt.png"))
    parser.add_argument(
        "--curves-chart",
        type=Path,
        default=Path("docs/figures/adapt_curves.png"),
        help="learning curves (test mIoU against iteration) of every method on --curves-task",
    )
    parser.add_argument("--curves-task", choices=TASKS, default="rgb2infrared")
    parser.add_argument("--markdown", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args(argv)
    if (args.iterations is not None and args.iterations < 1) or args.workers < 1:
        parser.error("--iterations and --workers must be >= 1")
    if args.every is not None and args.every < 1:
        parser.error("--every must be >= 1")
    try:
        args.overrides = parse_overrides(args.overrides)
    except ValueError as error:
        parser.error(str(error))
    if not (args.data / "synthetic.json").is_file():
        parser.error(f"--data {args.data}: no synthetic world there; run `make data` first")
    if args.markdown.is_file() and not has_markers(args.markdown.read_text(), SECTION):
        # checked before an hour of training, not after it
        parser.error(
            f"--markdown {args.markdown}: add the lines {MARK_START} and {MARK_END} where the table goes"
        )
    return args


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["model.lr=1e-3", "data.crop_size=[96,96]"]`` -> ``{"model.lr": 0.001, "data.crop_size": [96, 96]}``.

    Raises:
        ValueError: an item without ``=``, or a key outside ``model.`` / ``data.``.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key.split(".")[0] not in ("model", "data") or key.count(".") != 1:
            raise ValueError(f"--set {item!r}: expected model.<option>=<value> or data.<option>=<value>")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):
            # YAML 1.1 reads "1e-3" as a string: take it as the number it means
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        overrides[key] = parsed
    return overrides


def demo_config(task: str, options: Sequence[str] = ()) -> Namespace:
    """``configs/demo/<task>.yaml``, the small recipe every run of the table starts from, as ``madm-pl
    fit`` parses it (its base included) with ``options`` (``--model.init_args.lr=0.001``, ...) added."""
    from madm_pl.cli import parse_config

    return parse_config(["-c", str(Path("configs", "demo", f"{task}.yaml")), *options])


def run_setup(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """What defines a run besides (task, method, seed): iterations, evaluation interval, backbone, data,
    overrides. Written into every run's key, so a changed recipe never reuses an old result."""
    config = demo_config(task)
    iterations = args.iterations or int(config.trainer.max_steps)
    return {
        "iterations": iterations,
        "every": args.every or max(1, iterations // 6),  # 100 for the 600-iteration demo recipe
        "backbone": args.backbone or config.model.init_args.backbone,
        "data": str(args.data),
        "overrides": dict(sorted(args.overrides.items())),
    }


def run_key(task: str, method: str, seed: int, setup: dict[str, Any], recipe: dict[str, Any]) -> str:
    """Identifies a run: a changed setup (iterations, backbone, overrides) or a changed resolved recipe
    (``resolved_recipe``: every model and data option, the colour jitter, the head's finest level) never
    reuses an old result."""
    return json.dumps(
        {"task": task, "method": method, "seed": seed, **setup, "recipe": recipe}, sort_keys=True
    )


def resolved_recipe(task: str, method: str, setup: dict[str, Any]) -> dict[str, Any]:
    """What a run of ``method`` on ``task`` trains, as ``madm-pl fit`` resolves it: the demo config with the
    run's options (``run_options``), every ``model.init_args`` and ``data.init_args`` value but the seed
    (the key has it), plus the head's finest level (``"decoded"`` / ``"vae_encoder"``), which the code
    derives from the LPLR switches (``madm_pl.module.head_finest_level``). Part of every run's key, so
    that a recipe whose meaning changed (a method's switches, ``color_jitter``, the decode rule) is
    trained again instead of reused."""
    from madm_pl.module import head_finest_level

    config = demo_config(task, run_options(task, method, 0, setup))
    model = active_model_options(config.model.init_args.as_dict())
    data = {k: v for k, v in config.data.init_args.as_dict().items() if k != "seed"}
    finest = head_finest_level(model["lplr_source"], model["lplr_target"])
    return json.loads(json.dumps({"model": model, "data": data, "head_finest_level": finest}, default=str))


def active_model_options(model: dict[str, Any]) -> dict[str, Any]:
    """``model.init_args`` without the seed and without the options ``MADMModule`` never reads under the
    given switches, so that editing one (say the demo's DPLG window) re-trains only the runs it changes:

    - ``dplg_t0``, ``dplg_t_end``: read only with ``dplg`` in mode ``madm`` (``pseudo_label_timestep``);
    - ``lplr_source_weight``: only with ``lplr_source`` outside mode ``oracle``; ``lplr_target_weight``
      only with ``lplr_target`` in mode ``madm`` (the switches themselves stay: they set the head);
    - ``ema_max_alpha``: only with a teacher (``ema`` in mode ``madm``);
    - ``pseudo_label_threshold``, ``color_jitter``, ``classmix``, ``ema``, ``dplg``: only in mode ``madm``
      (``_target_losses``); ``classmix_include_ignore`` only with ``classmix`` there.
    """
    model = {k: v for k, v in model.items() if k != "seed"}
    madm = model["mode"] == "madm"
    inert = set()
    if not (madm and model["dplg"]):
        inert |= {"dplg_t0", "dplg_t_end"}
    if not (model["lplr_source"] and model["mode"] != "oracle"):
        inert.add("lplr_source_weight")
    if not (madm and model["lplr_target"]):
        inert.add("lplr_target_weight")
    if not (madm and model["ema"]):
        inert.add("ema_max_alpha")
    if not madm:
        inert |= {"pseudo_label_threshold", "color_jitter", "classmix", "ema", "dplg"}
    if not (madm and model["classmix"]):
        inert.add("classmix_include_ignore")
    return {k: v for k, v in model.items() if k not in inert}


def method_switches(method: str, config: Namespace) -> dict[str, Any]:
    """The model options of ``method`` on a task whose parsed demo config is ``config``:
    ``METHODS[method]`` with ``lplr`` replaced by the two LPLR terms. With LPLR on they are the
    config's (the paper's per task: rgb2event regresses only the source palette, at weight 20), so
    MADM here is the task's recipe; off, both off.
    """
    switches = dict(METHODS[method])
    if switches.pop("lplr"):
        model = config.model.init_args
        switches |= {"lplr_source": model.lplr_source, "lplr_target": model.lplr_target}
    else:
        switches |= {"lplr_source": False, "lplr_target": False}
    return switches


def run_options(task: str, method: str, seed: int, setup: dict[str, Any]) -> list[str]:
    """The ``madm-pl fit`` options a run adds to its demo config: the method's switches, the seed, the
    backbone, the data folder's roots and the overrides (``--model.init_args.lr=0.001``, ...)."""
    config = demo_config(task)
    model_args = {**method_switches(method, config), "backbone": setup["backbone"], "seed": seed}
    data_args = {"seed": seed, "target_train_labels": True}
    roots = config.data.init_args
    for key in ("source_root", "target_root"):
        data_args[key] = str(Path(setup["data"], Path(roots[key]).name))
    for key, value in setup["overrides"].items():
        section, option = key.split(".")
        (model_args if section == "model" else data_args)[option] = value
    return [
        f"--{section}.init_args.{option}={value if isinstance(value, str) else json.dumps(value)}"
        for section, values in (("model", model_args), ("data", data_args))
        for option, value in values.items()
    ]


def build_run(job: dict[str, Any], module_class: type | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """The module, datamodule and Trainer arguments of one run: the demo config of ``job["task"]`` as
    ``madm-pl fit`` parses it (its model and data options, its DPLG end and EMA cap, its gradient clip)
    with the method's switches, the job's seed, backbone, data folder and overrides given as options on
    top, and ``setup["iterations"]``; the table's own bare Trainer (no logger, checkpoints or callbacks).

    The target training labels are always loaded: the oracle trains on them; for the other methods
    ``MADMModule`` only logs the teacher's pseudo-label accuracy with them (a diagnostic: no method
    reads them, and the data's random draws are the same either way). ``module_class`` replaces
    ``MADMModule`` (a diagnostic subclass; the same arguments).
    """
    from lightning.pytorch import seed_everything

    from madm_pl.cli import instantiate

    task, method, seed, setup = job["task"], job["method"], job["seed"], job["setup"]
    options = run_options(task, method, seed, setup)
    config = demo_config(task, options)
    seed_everything(seed, verbose=False)
    module = instantiate(config.model, module_class)
    data = instantiate(config.data)
    trainer_args = dict(
        accelerator="cpu",
        devices=1,
        max_steps=setup["iterations"],
        gradient_clip_val=config.trainer.gradient_clip_val,
        gradient_clip_algorithm=config.trainer.gradient_clip_algorithm,
        **BARE_TRAINER,
    )
    return module, data, trainer_args


def train_and_test(job: dict[str, Any], module_class: type | None = None) -> dict[str, Any]:
    """One run (``build_run``, with ``module_class``) with the target test mIoU every ``setup["every"]``
    iterations and at the end; returns its scores, the learning curve and the pseudo-label diagnostics
    per interval."""
    import torch  # imported in the worker, after OMP_NUM_THREADS is set
    from lightning.pytorch import Callback, Trainer

    torch.set_num_threads(1)
    module, data, trainer_args = build_run(job, module_class)
    every = job["setup"]["every"]
    curve: list[dict[str, Any]] = []
    window: dict[str, list[float]] = {}

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            for name in ("pseudo_label_accuracy", "pseudo_label_weight", "loss"):
                value = trainer.callback_metrics.get(f"train/{name}")
                if value is not None:
                    window.setdefault(name, []).append(float(value))

        def on_validation_end(self, trainer, pl_module) -> None:
            # after the module's on_validation_epoch_end, which scores the epoch (callbacks run later)
            point = {"iteration": trainer.global_step, "miou": 100 * float(pl_module.last_scores["miou"])}
            point.update({name: statistics.fmean(v) for name, v in window.items() if v})
            curve.append(point)
            window.clear()

    trainer_args.update(
        limit_val_batches=1.0, val_check_interval=every, check_val_every_n_epoch=None, callbacks=[Record()]
    )
    trainer = Trainer(**trainer_args)
    start = time.perf_counter()
    trainer.fit(module, data)
    train_seconds = time.perf_counter() - start
    if curve and curve[-1]["iteration"] == job["setup"]["iterations"]:
        scores = module.last_scores  # the last validation ran at the end: the same images, the same model
    else:
        trainer.test(module, data, verbose=False)  # the target test split
        scores = module.last_scores
        curve.append({"iteration": job["setup"]["iterations"], "miou": 100 * float(scores["miou"])})
    return {
        "key": job["key"],
        "task": job["task"],
        "method": job["method"],
        "seed": job["seed"],
        **job["setup"],
        "miou": 100 * float(scores["miou"]),
        "iou": {name: 100 * float(v) for name, v in zip(module.task.classes, scores["iou"], strict=True)},
        "curve": curve,
        "train_seconds": train_seconds,
    }


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def read_runs(path: Path) -> dict[str, dict[str, Any]]:
    """Every finished run in a JSON-lines file, by key (a later line wins)."""
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["key"]] = row
    return done


def run_all(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Train every requested (task, method, seed) not yet in ``--runs``; return every known run by key
    and the keys of the requested runs."""
    done = read_runs(args.runs)
    jobs = []
    for task in args.tasks:
        setup = run_setup(args, task)
        for method in args.methods:
            # A bad --set fails here, with the parser's message, not in a worker an hour later.
            recipe = resolved_recipe(task, method, setup)
            for seed in args.seeds:
                key = run_key(task, method, seed, setup, recipe)
                jobs.append({"task": task, "method": method, "seed": seed, "setup": setup, "key": key})
    missing = sorted((j for j in jobs if j["key"] not in done), key=lambda j: -_COST[j["method"]])
    print(f"{len(jobs)} runs, {len(jobs) - len(missing)} already done, {len(missing)} to train", flush=True)
    args.runs.parent.mkdir(parents=True, exist_ok=True)
    os.environ["OMP_NUM_THREADS"] = "1"  # the spawned workers inherit it before importing torch
    context = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    with context.Pool(args.workers, initializer=_init_worker, maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(train_and_test, missing):
            with args.runs.open("a") as handle:  # one line per finished run: resumable
                handle.write(json.dumps(row) + "\n")
            done[row["key"]] = row
            print(
                f"[{time.perf_counter() - start:6.0f} s] {row['task']} {row['method']} seed {row['seed']}: "
                f"mIoU {row['miou']:.1f} ({row['train_seconds']:.0f} s) curve "
                + " ".join(f"{p['miou']:.1f}" for p in row["curve"]),
                flush=True,
            )
    return done, [job["key"] for job in jobs]


def summarise(runs: list[dict[str, Any]], tasks: Sequence[str], methods: Sequence[str]) -> dict[str, Any]:
    """Per (task, method): mean, standard deviation, min, max of mIoU and the share of the gap closed.

    ``gap_closed`` is ``(mean - source-only mean) / (oracle mean - source-only mean)`` (None without
    both ends); ``rank_by_seed`` lists the methods per seed from best to worst, to judge stability.
    """
    cells: dict[str, dict[str, Any]] = {}
    for task in tasks:
        cells[task] = {}
        for method in methods:
            values = [r["miou"] for r in runs if r["task"] == task and r["method"] == method]
            if not values:
                continue
            cells[task][method] = {
                "seeds": sorted(r["seed"] for r in runs if r["task"] == task and r["method"] == method),
                "miou": values,
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "max": max(values),
            }
        low, high = cells[task].get("source-only"), cells[task].get("oracle")
        for cell in cells[task].values():
            cell["gap_closed"] = (
                (cell["mean"] - low["mean"]) / (high["mean"] - low["mean"])
                if low and high and high["mean"] != low["mean"]
                else None
            )
    ranks: dict[str, dict[int, list[str]]] = {}
    for task in tasks:
        seeds = sorted({r["seed"] for r in runs if r["task"] == task})
        ranks[task] = {}
        for seed in seeds:
            scored = {r["method"]: r["miou"] for r in runs if r["task"] == task and r["seed"] == seed}
            adaptation = [m for m in methods if m in scored and m not in ("source-only", "oracle")]
            ranks[task][seed] = sorted(adaptation, key=lambda m: -scored[m])
    return {"cells": cells, "rank_by_seed": ranks}


def seeds_note(runs: list[dict[str, Any]], tasks: Sequence[str]) -> str:
    """The seeds behind the table: ``seeds [0, 1]``, or per task when the tasks have different seeds
    (a one-task call with more seeds, next to the other tasks' earlier runs)."""
    per_task = {task: sorted({r["seed"] for r in runs if r["task"] == task}) for task in tasks}
    if len({tuple(seeds) for seeds in per_task.values()}) <= 1:
        return f"seeds {next(iter(per_task.values()), [])}"
    return "seeds " + ", ".join(f"{task} {seeds}" for task, seeds in per_task.items())


def markdown_table(summary: dict[str, Any], tasks: Sequence[str], methods: Sequence[str]) -> str:
    """Methods as rows, tasks as columns: ``mean ± std (gap closed %)``."""
    lines = [
        "| method | " + " | ".join(tasks) + " |",
        "| --- | " + " | ".join("---" for _ in tasks) + " |",
    ]
    full = max((len(c["seeds"]) for cells in summary["cells"].values() for c in cells.values()), default=0)
    for method in methods:
        row = []
        for task in tasks:
            cell = summary["cells"][task].get(method)
            if cell is None:
                row.append("-")
                continue
            text = _mean_and_spread(cell["mean"], cell["std"], cell["seeds"], "{:.1f}")
            if cell["gap_closed"] is not None and method not in ("source-only", "oracle"):
                text += f" ({100 * cell['gap_closed']:+.0f} %)"
            text += _fewer_seeds(cell["seeds"], full)
            row.append(text)
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _mean_and_spread(mean: float, std: float, seeds: Sequence[int], form: str) -> str:
    """``mean ± std``, or the mean alone where one seed gives no spread to show."""
    return form.format(mean) if len(seeds) < 2 else f"{form.format(mean)} ± {std:.1f}"


def _fewer_seeds(seeds: Sequence[int], full: int) -> str:
    """`` [seeds 0, 1]`` for a cell with fewer seeds than the table's fullest cell (else nothing)."""
    if len(seeds) >= full:
        return ""
    return " [seed{} {}]".format("s" if len(seeds) > 1 else "", ", ".join(map(str, seeds)))


def write_chart(summary: dict[str, Any], tasks: Sequence[str], methods: Sequence[str], path: Path) -> None:
    """Grouped bars: mIoU per method per task; whiskers from the lowest to the highest seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(methods)
    full = max((len(c["seeds"]) for cells in summary["cells"].values() for c in cells.values()), default=0)
    for i, method in enumerate(methods):
        xs, means, low, high, hatches = [], [], [], [], []
        for t, task in enumerate(tasks):
            cell = summary["cells"][task].get(method)
            if cell is None:
                continue
            xs.append(t + (i - (len(methods) - 1) / 2) * width)
            means.append(cell["mean"])
            low.append(cell["mean"] - cell["min"])
            high.append(cell["max"] - cell["mean"])
            hatches.append("//" if len(cell["seeds"]) < full else "")  # a cell with fewer seeds
        bars = ax.bar(xs, means, width, yerr=[low, high], capsize=2, label=method)
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("target test mIoU (%)")
    fewer = (
        " (hatched: fewer seeds)"
        if any(len(c["seeds"]) < full for cells in summary["cells"].values() for c in cells.values())
        else ""
    )
    ax.set_title(f"Synthetic world, tiny prior: mean over seeds, whiskers = min..max{fewer}")
    ax.legend(ncol=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save_figure(fig, path)


def _save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure to ``path`` as PNG with the package's atomic writer; close it."""
    import matplotlib.pyplot as plt

    from madm_pl.data.io import atomic_write

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        fig.savefig(file, format="png", dpi=120)
    plt.close(fig)


def replace_between_markers(document: str, content: str) -> str:
    """The text between MARK_START and MARK_END replaced by ``content`` (markers kept)."""
    return common_replace(document, content, SECTION)


def paired_differences(runs: list[dict[str, Any]], tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per task, each ingredient against its baseline, seed by seed (the same seed = the same data order,
    crops and initialisation): self-training - source-only, and +DPLG / +LPLR / MADM - self-training.

    Returns ``{task: {"+DPLG vs self-training": {"seeds", "differences", "mean", "std", "ci95",
    "excludes_zero"}, ...}}``; ``ci95`` is the 95 % t-interval of the mean difference over the seeds
    (None with one seed), ``excludes_zero`` whether it lies entirely above or below 0.
    """
    pairs = [("self-training", "source-only"), ("+DPLG", "self-training"), ("+LPLR", "self-training")]
    pairs.append(("MADM", "self-training"))
    result: dict[str, dict[str, Any]] = {}
    for task in tasks:
        scores = {(r["method"], r["seed"]): r["miou"] for r in runs if r["task"] == task}
        result[task] = {}
        for method, baseline in pairs:
            seeds = sorted(s for m, s in scores if m == method and (baseline, s) in scores)
            if not seeds:
                continue
            differences = [scores[(method, s)] - scores[(baseline, s)] for s in seeds]
            interval = t_interval(differences)
            result[task][f"{method} vs {baseline}"] = {
                "seeds": seeds,
                "differences": differences,
                "mean": statistics.fmean(differences),
                "std": statistics.stdev(differences) if len(differences) > 1 else 0.0,
                "ci95": interval,
                "excludes_zero": interval is not None and (interval[0] > 0 or interval[1] < 0),
            }
    return result


def differences_table(differences: dict[str, dict[str, Any]], tasks: Sequence[str]) -> str:
    """Rows: each comparison; columns: tasks; cells: ``mean ± std [95 % t-interval]`` of the paired
    per-seed differences, in bold where the interval excludes 0."""
    names = list(dict.fromkeys(name for task in tasks for name in differences.get(task, {})))
    full = max((len(c["seeds"]) for cells in differences.values() for c in cells.values()), default=0)
    lines = ["| paired difference (per seed), mean ± std [95 % t-interval] | " + " | ".join(tasks) + " |"]
    lines.append("| --- | " + " | ".join("---" for _ in tasks) + " |")
    for name in names:
        cells = []
        for task in tasks:
            cell = differences.get(task, {}).get(name)
            if cell is None:
                cells.append("-")
                continue
            text = _mean_and_spread(cell["mean"], cell["std"], cell["seeds"], "{:+.1f}")
            if cell.get("ci95") is not None:
                low, high = cell["ci95"]
                text += f" [{low:+.1f}, {high:+.1f}]"
                if cell["excludes_zero"]:
                    text = f"**{text}**"
            cells.append(text + _fewer_seeds(cell["seeds"], full))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves_table(runs: list[dict[str, Any]], tasks: Sequence[str], methods: Sequence[str]) -> str:
    """Learning curves as markdown: per task and method, the test mIoU every interval (mean ± std over the
    seeds), then q and the pseudo-label accuracy in the last interval (adapting methods only)."""
    points = sorted({p["iteration"] for r in runs for p in r.get("curve", [])})
    lines = [
        "| task, method (seeds) | "
        + " | ".join(str(i) for i in points)
        + " | q, last interval | pseudo-label "
        "accuracy, first / last interval |",
        "| --- |" + " --- |" * (len(points) + 2),
    ]
    for task in tasks:
        for method in methods:
            chosen = [r for r in runs if r["task"] == task and r["method"] == method and r.get("curve")]
            if not chosen:
                continue
            cells = []
            for iteration in points:
                values = [p["miou"] for r in chosen for p in r["curve"] if p["iteration"] == iteration]
                cells.append(
                    _mean_and_spread(statistics.fmean(values), _std(values), values, "{:.1f}")
                    if values
                    else "-"
                )
            for name, form in (("pseudo_label_weight", "{:.2f}"), ("pseudo_label_accuracy", "{:.2f}")):
                first = [r["curve"][0].get(name) for r in chosen]
                last = [r["curve"][-1].get(name) for r in chosen]
                if None in first + last:
                    cells.append("")
                    continue
                if name == "pseudo_label_weight":
                    cells.append(form.format(statistics.fmean(last)))
                else:
                    cells.append(
                        f"{form.format(statistics.fmean(first))} / {form.format(statistics.fmean(last))}"
                    )
            seeds = ", ".join(str(r["seed"]) for r in sorted(chosen, key=lambda r: r["seed"]))
            lines.append(f"| {task}, {method} ({seeds}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def write_curves_chart(runs: list[dict[str, Any]], task: str, methods: Sequence[str], path: Path) -> None:
    """Test mIoU against iteration for every method on one task: mean over seeds, band = min..max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method in methods:
        curves = [r["curve"] for r in runs if r["task"] == task and r["method"] == method and r.get("curve")]
        if not curves:
            continue
        iterations = sorted(set.intersection(*({p["iteration"] for p in c} for c in curves)))
        values = [[next(p["miou"] for p in c if p["iteration"] == i) for c in curves] for i in iterations]
        mean = [statistics.fmean(v) for v in values]
        (line,) = ax.plot(iterations, mean, marker="o", markersize=3, label=f"{method} ({len(curves)} seeds)")
        ax.fill_between(
            iterations, [min(v) for v in values], [max(v) for v in values], alpha=0.15, color=line.get_color()
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("target test mIoU (%)")
    ax.set_title(f"{task}: learning curves, mean over seeds, band = min..max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    done, _ = run_all(args)
    # The table covers every task with runs of its setup (this call's options), not only this call's tasks.
    # One setup per task: each is a parse of the task's config by the CLI's parser.
    all_setups = {task: run_setup(args, task) for task in TASKS}
    wanted = set()
    for task in TASKS:
        for method in METHODS:
            recipe = resolved_recipe(task, method, all_setups[task])
            wanted |= {run_key(task, method, seed, all_setups[task], recipe) for seed in args.seeds}
    setup_runs = sorted(
        (r for r in done.values() if r["key"] in wanted),
        key=lambda r: (TASKS.index(r["task"]), list(METHODS).index(r["method"]), r["seed"]),
    )
    tasks = [t for t in TASKS if any(r["task"] == t for r in setup_runs)]
    methods = [m for m in METHODS if any(r["method"] == m for r in setup_runs)]
    summary = summarise(setup_runs, tasks, methods)
    summary["paired_differences"] = paired_differences(setup_runs, tasks)
    minutes = sum(r["train_seconds"] for r in setup_runs) / 60
    recipe = "; ".join(
        f"{task}: {all_setups[task]['iterations']} iterations, backbone `{all_setups[task]['backbone']}`"
        for task in tasks
    )
    overrides = f", overrides {args.overrides}" if args.overrides else ""
    content = (
        f"The demo configs' small recipe ({recipe}{overrides}), {seeds_note(setup_runs, tasks)}; "
        f"{len(setup_runs)} runs, {minutes:.0f} CPU-minutes of training.\n\n"
        f"{markdown_table(summary, tasks, methods)}\n\n"
        f"{differences_table(summary['paired_differences'], tasks)}\n\n"
        "Learning curves: target test mIoU every interval (mean ± std over the seeds); q (the pseudo-label "
        "weight) and the teacher's pixel accuracy on the target crops, averaged over an interval.\n\n"
        f"{curves_table(setup_runs, tasks, methods)}"
    )
    print("\n" + content)
    record = {"setup": vars(args) | {"tasks": tasks}, "runs": setup_runs, **summary}
    write_atomic(args.json, json.dumps(record, indent=1, default=str) + "\n")
    write_chart(summary, tasks, methods, args.chart)
    if args.curves_task in tasks:
        write_curves_chart(setup_runs, args.curves_task, methods, args.curves_chart)
    if args.markdown.is_file():
        write_atomic(args.markdown, replace_between_markers(args.markdown.read_text(), content))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])

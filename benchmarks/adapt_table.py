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

    python benchmarks/adapt_table.py                          # 3 tasks x 6 methods x 2 seeds
    python benchmarks/adapt_table.py --tasks rgb2infrared --seeds 0 1 2

Outputs: ``--json`` (every run and every cell), ``--chart`` (PNG, mIoU per method per task, bars =
mean, whiskers = min and max over seeds) and the table between the markers in ``--markdown``.
"""

from __future__ import annotations

import argparse
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
from common import BARE_TRAINER

TASKS = ("rgb2depth", "rgb2infrared", "rgb2event")
_SELF_TRAINING = {"mode": "madm", "classmix": True, "ema": True}
_OFF = {"dplg": False, "lplr_source": False, "lplr_target": False}
# method -> model overrides of the demo config (every switch named, so no method inherits one)
METHODS: dict[str, dict[str, Any]] = {
    "source-only": {"mode": "source_only", "classmix": False, "ema": False, **_OFF},
    "oracle": {"mode": "oracle", "classmix": False, "ema": False, **_OFF},
    "self-training": {**_SELF_TRAINING, **_OFF},
    "+DPLG": {**_SELF_TRAINING, **_OFF, "dplg": True},
    "+LPLR": {**_SELF_TRAINING, **_OFF, "lplr_source": True, "lplr_target": True},
    "MADM": {**_SELF_TRAINING, "dplg": True, "lplr_source": True, "lplr_target": True},
}
# Relative cost per iteration (student passes, teacher, palette encodes), to start the long runs first.
_COST = {"source-only": 1, "oracle": 1, "self-training": 2.6, "+DPLG": 2.6, "+LPLR": 3.2, "MADM": 3.2}
MARK_START = "<!-- adapt-table:start -->"
MARK_END = "<!-- adapt-table:end -->"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--iterations",
        type=int,
        default=300,
        help="training iterations per run (DPLG keeps the demo config's end: 320, depth 200)",
    )
    parser.add_argument(
        "--ema-max-alpha",
        type=float,
        default=0.99,
        help="EMA decay cap: the paper's 0.999 averages ~1000 steps, a tenth of its 10k-step run; "
        "0.99 keeps that proportion for a few hundred steps",
    )
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"), help="the synthetic world")
    parser.add_argument("--backbone", default="priors/tiny", help="diffusion stack of every run")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/results/adapt_runs.jsonl"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/adapt.json"))
    parser.add_argument("--chart", type=Path, default=Path("docs/figures/adapt.png"))
    parser.add_argument("--markdown", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.workers < 1:
        parser.error("--iterations and --workers must be >= 1")
    if not (args.data / "synthetic.json").is_file():
        parser.error(f"--data {args.data}: no synthetic world there; run `make data` first")
    if args.markdown.is_file() and not {MARK_START, MARK_END} <= set(args.markdown.read_text().splitlines()):
        # checked before an hour of training, not after it
        parser.error(
            f"--markdown {args.markdown}: add the lines {MARK_START} and {MARK_END} where the table goes"
        )
    return args


def run_key(task: str, method: str, seed: int, setup: dict[str, Any]) -> str:
    """Identifies a run: a changed setup (iterations, backbone, EMA cap) never reuses an old result."""
    return json.dumps({"task": task, "method": method, "seed": seed, **setup}, sort_keys=True)


def build_run(job: dict[str, Any], target_train_labels: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """The module, datamodule and Trainer arguments of one run: the demo config of ``job["task"]``
    with the method's switches, the job's seed, backbone and EMA cap, and ``setup["iterations"]``.

    DPLG keeps the demo config's ``dplg_t_end`` (320 iterations; depth 200). The target training
    labels are loaded for the oracle, or when ``target_train_labels`` (a diagnostic: the other methods
    never read them, and the data's random draws are the same either way).
    """
    from lightning.pytorch import seed_everything

    from madm_pl.data import CrossModalityDataModule
    from madm_pl.module import MADMModule

    task, method, seed, setup = job["task"], job["method"], job["seed"], job["setup"]
    config = yaml.safe_load(Path("configs", "demo", f"{task}.yaml").read_text())
    model_args = {**config["model"]["init_args"], **METHODS[method]}
    model_args.update(task=task, backbone=setup["backbone"], seed=seed, ema_max_alpha=setup["ema_max_alpha"])
    data_args = dict(
        config["data"]["init_args"], seed=seed, target_train_labels=target_train_labels or method == "oracle"
    )
    for key in ("source_root", "target_root"):
        data_args[key] = str(Path(setup["data"], Path(data_args[key]).name))
    seed_everything(seed, verbose=False)
    module = MADMModule(**model_args)
    data = CrossModalityDataModule(**data_args)
    trainer_args = dict(
        accelerator="cpu",
        devices=1,
        max_steps=setup["iterations"],
        gradient_clip_val=config["trainer"]["gradient_clip_val"],
        gradient_clip_algorithm=config["trainer"]["gradient_clip_algorithm"],
        **BARE_TRAINER,
    )
    return module, data, trainer_args


def train_and_test(job: dict[str, Any]) -> dict[str, Any]:
    """One run (``build_run``), then the mIoU on the target test split; returns its scores."""
    import torch  # imported in the worker, after OMP_NUM_THREADS is set
    from lightning.pytorch import Trainer

    torch.set_num_threads(1)
    module, data, trainer_args = build_run(job)
    trainer = Trainer(**trainer_args)
    start = time.perf_counter()
    trainer.fit(module, data)
    train_seconds = time.perf_counter() - start
    trainer.test(module, data, verbose=False)  # the target test split (limit_val_batches is 0)
    scores = module.last_scores
    return {
        "key": job["key"],
        "task": job["task"],
        "method": job["method"],
        "seed": job["seed"],
        **job["setup"],
        "miou": 100 * float(scores["miou"]),
        "iou": {name: 100 * float(v) for name, v in zip(module.task.classes, scores["iou"], strict=True)},
        "train_seconds": train_seconds,
    }


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def run_all(args: argparse.Namespace, setup: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Train every requested (task, method, seed) not yet in ``--runs``; return every known run by key."""
    done = {}
    if args.runs.is_file():
        for line in args.runs.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["key"]] = row
    jobs = [
        {"task": t, "method": m, "seed": s, "setup": setup, "key": run_key(t, m, s, setup)}
        for t in args.tasks
        for m in args.methods
        for s in args.seeds
    ]
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
                f"mIoU {row['miou']:.1f} ({row['train_seconds']:.0f} s)",
                flush=True,
            )
    return done


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
    for method in methods:
        row = []
        for task in tasks:
            cell = summary["cells"][task].get(method)
            if cell is None:
                row.append("-")
                continue
            text = f"{cell['mean']:.1f} ± {cell['std']:.1f}"
            if cell["gap_closed"] is not None and method not in ("source-only", "oracle"):
                text += f" ({100 * cell['gap_closed']:+.0f} %)"
            row.append(text)
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_chart(summary: dict[str, Any], tasks: Sequence[str], methods: Sequence[str], path: Path) -> None:
    """Grouped bars: mIoU per method per task; whiskers from the lowest to the highest seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs, means, low, high = [], [], [], []
        for t, task in enumerate(tasks):
            cell = summary["cells"][task].get(method)
            if cell is None:
                continue
            xs.append(t + (i - (len(methods) - 1) / 2) * width)
            means.append(cell["mean"])
            low.append(cell["mean"] - cell["min"])
            high.append(cell["max"] - cell["mean"])
        ax.bar(xs, means, width, yerr=[low, high], capsize=2, label=method)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("target test mIoU (%)")
    ax.set_title("Synthetic world, tiny prior: mean over seeds, whiskers = min..max")
    ax.legend(ncol=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def replace_between_markers(document: str, content: str) -> str:
    """The text between MARK_START and MARK_END replaced by ``content`` (markers kept)."""
    if MARK_START not in document or MARK_END not in document:
        raise ValueError(f"the markdown file has no '{MARK_START}' ... '{MARK_END}' block to fill")
    head, rest = document.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    return f"{head}{MARK_START}\n{content}\n{MARK_END}{tail}"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup = {
        "iterations": args.iterations,
        "backbone": args.backbone,
        "ema_max_alpha": args.ema_max_alpha,
        "data": str(args.data),
    }
    done = run_all(args, setup)
    # The table covers every task and method with runs of this setup, not only those of this call.
    setup_runs = sorted(
        (r for r in done.values() if r["seed"] in args.seeds and all(r[k] == v for k, v in setup.items())),
        key=lambda r: (TASKS.index(r["task"]), list(METHODS).index(r["method"]), r["seed"]),
    )
    tasks = [t for t in TASKS if any(r["task"] == t for r in setup_runs)]
    methods = [m for m in METHODS if any(r["method"] == m for r in setup_runs)]
    summary = summarise(setup_runs, tasks, methods)
    table = markdown_table(summary, tasks, methods)
    minutes = sum(r["train_seconds"] for r in setup_runs) / 60
    content = (
        f"{args.iterations} iterations per run, {seeds_note(setup_runs, tasks)}, "
        f"backbone `{args.backbone}`, EMA cap "
        f"{args.ema_max_alpha}; {len(setup_runs)} runs, {minutes:.0f} CPU-minutes of training.\n\n{table}"
    )
    print("\n" + content)
    record = {"setup": vars(args) | {"tasks": tasks}, "runs": setup_runs, **summary}
    _write_atomic(args.json, json.dumps(record, indent=1, default=str) + "\n")
    write_chart(summary, tasks, methods, args.chart)
    if args.markdown.is_file():
        _write_atomic(args.markdown, replace_between_markers(args.markdown.read_text(), content))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])

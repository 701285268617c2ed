"""Why self-training helps or hurts on the synthetic world: pseudo-label accuracy and mIoU over a run.

Trains the adaptation table's runs (``adapt_table.py``: demo config, tiny prior, same seeds and sizes)
with the target training labels loaded, which the method never reads: ``MADMModule`` then logs the
accuracy of the teacher's pseudo-labels on the labelled target pixels (``train/pseudo_label_accuracy``)
next to the confidence weight q. The target test mIoU is measured every ``--every`` iterations.

    python benchmarks/pseudo_label_curves.py --task rgb2infrared --methods source-only self-training +DPLG

Prints one markdown table per method: iteration, test mIoU, and the mean pseudo-label accuracy and q
over the iterations since the previous row; ``--json`` keeps every logged value.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapt_table import METHODS, TASKS, build_run


def curve(job: dict[str, Any]) -> dict[str, Any]:
    """One run with the target labels loaded; returns its per-iteration logs and periodic test mIoU."""
    import torch
    from lightning.pytorch import Callback, Trainer

    torch.set_num_threads(1)
    module, data, trainer_args = build_run(job, target_train_labels=True)
    steps: list[dict[str, float]] = []
    tests: list[dict[str, float]] = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            metrics = trainer.callback_metrics
            row = {"iteration": trainer.global_step}
            for name in ("pseudo_label_accuracy", "pseudo_label_weight"):
                if f"train/{name}" in metrics:
                    row[name] = float(metrics[f"train/{name}"])
            steps.append(row)

        def on_validation_end(self, trainer, pl_module) -> None:
            # after the module's on_validation_epoch_end, which scores the epoch (callbacks run first)
            tests.append(
                {"iteration": trainer.global_step, "miou": float(trainer.callback_metrics["val/miou"])}
            )

    trainer_args.update(
        limit_val_batches=1.0,
        val_check_interval=job["every"],
        check_val_every_n_epoch=None,
        callbacks=[Record()],
    )
    trainer = Trainer(**trainer_args)
    trainer.fit(module, data)
    return {"method": job["method"], "task": job["task"], "seed": job["seed"], "steps": steps, "tests": tests}


def table(run: dict[str, Any]) -> str:
    lines = [
        f"{run['task']}, {run['method']}, seed {run['seed']}",
        "",
        "| iteration | test mIoU | pseudo-label accuracy | q |",
        "| --- | --- | --- | --- |",
    ]
    previous = 0
    for test in run["tests"]:
        window = [s for s in run["steps"] if previous < s["iteration"] <= test["iteration"]]
        cells = []
        for name in ("pseudo_label_accuracy", "pseudo_label_weight"):
            values = [s[name] for s in window if name in s]
            cells.append(f"{100 * sum(values) / len(values):.1f} %" if values else "-")
        lines.append(f"| {test['iteration']} | {test['miou']:.1f} | {cells[0]} | {cells[1]} |")
        previous = test["iteration"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=TASKS, default="rgb2infrared")
    parser.add_argument(
        "--methods", nargs="+", choices=tuple(METHODS), default=["source-only", "self-training"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--every", type=int, default=50, help="test mIoU every this many iterations")
    parser.add_argument("--ema-max-alpha", type=float, default=0.99)
    parser.add_argument("--backbone", default="priors/tiny")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    setup = {
        "iterations": args.iterations,
        "backbone": args.backbone,
        "ema_max_alpha": args.ema_max_alpha,
        "data": args.data,
    }
    jobs = [
        {"task": args.task, "method": m, "seed": args.seed, "setup": setup, "every": args.every}
        for m in args.methods
    ]
    os.environ["OMP_NUM_THREADS"] = "1"
    with multiprocessing.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        runs = pool.map(curve, jobs)
    for run in runs:
        print("\n" + table(run))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    return runs


if __name__ == "__main__":
    main(sys.argv[1:])

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
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.adapt.report import (
    MARK_END,
    MARK_START,
    SECTION,
    curves_table,
    differences_table,
    markdown_table,
    replace_between_markers,
    seeds_note,
    write_chart,
    write_curves_chart,
)
from benchmarks.adapt.runs import (
    METHODS,
    TASKS,
    parse_overrides,
    resolved_recipe,
    run_all,
    run_key,
    run_setup,
)
from benchmarks.adapt.stats import paired_differences, summarise
from benchmarks.common import has_markers, write_atomic


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
        help="change the recipe for every run, e.g. model.lr=1e-3 data.crop_size=[96,96] (model.X is madm-pl "
        "fit's --model.init_args.X, data.X likewise; its parser checks every key and value on each task's "
        "configs/demo/<task>.yaml before any run)",
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

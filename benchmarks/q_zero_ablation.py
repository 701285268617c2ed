"""Why self-training lost to source-only while q was 0 (issue 12, item 3): one ingredient of the ClassMix
pass removed at a time.

At a budget where the teacher is never confident enough (q = 0 at every iteration: the old demo recipe,
lr 1e-4, 300 iterations), the target pixels of every mixed image weigh 0 and self-training is source-only
plus a second, strongly augmented pass on ClassMix images in which only the pasted source pixels count.
Each variant changes one thing in that pass (``AblatedModule``), everything else is the adaptation
table's self-training run (``adapt_table.py``: demo config, same seeds, the same test images):

- ``no-strong-augmentation``: the mixed image is not colour-jittered or blurred.
- ``source-background``: the pasted source pixels keep their own source background instead of the
  target's (the mixed image is the source image; the labels and weights are the ClassMix ones).
- ``frozen-bn-statistics``: the mixed pass does not update the head's BatchNorm running statistics
  (evaluation normalises with statistics of source images only, as in source-only training).
- ``head-only``: the mixed pass trains only the head (its UNet features are detached).

    python -m benchmarks.q_zero_ablation --seeds 0 1 --set model.lr=1e-4 --iterations 300

Writes every run to ``--runs`` (JSON lines, resumable) and prints a table: mean mIoU over the seeds and
the paired difference to self-training.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.adapt.runs import (
    METHODS,
    parse_overrides,
    read_runs,
    resolved_recipe,
    run_key,
    train_and_test,
)

VARIANTS = ("no-strong-augmentation", "source-background", "frozen-bn-statistics", "head-only")


def ablated_module_class() -> type:
    """``MADMModule`` with one change to the student's pass on the mixed image (``self.ablation``), made
    through the module's seams of that pass (``mix_images``, ``augment``, ``segment_mixed``)."""
    import torch
    from torch import nn

    from madm_pl.models.backbone import BackboneOutput
    from madm_pl.module import MADMModule

    class AblatedModule(MADMModule):
        def __init__(self, ablation: str | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.ablation = ablation

        def augment(self, image, generator):
            if self.ablation == "no-strong-augmentation":
                return image
            return super().augment(image, generator)

        def mix_images(self, mask, source_image, target_image):
            if self.ablation == "source-background":
                return source_image  # the pasted pixels keep their source background
            return super().mix_images(mask, source_image, target_image)

        def segment_mixed(self, image):
            net = self.student
            if self.ablation == "frozen-bn-statistics":
                norms = [m for m in net.head.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
                saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
                for norm in norms:
                    norm.momentum = 0.0  # batch statistics normalise; running statistics stay as they are
                try:
                    return super().segment_mixed(image)
                finally:
                    for norm, (momentum, tracked) in zip(norms, saved):
                        norm.momentum = momentum
                        norm.num_batches_tracked.copy_(tracked)
            if self.ablation == "head-only":
                cond, time_offset = net.conditioning(self.backbone.uncond)
                with torch.no_grad():
                    out = self.backbone(image * 2 - 1, 0, cond, time_offset)
                out = BackboneOutput(
                    [f.detach() for f in out.features], out.latent.detach(), out.decoded, out.encoder_feature
                )
                return net.head(out.features, out.finest, image.shape[-2:]), out
            return super().segment_mixed(image)

    return AblatedModule


def run_variant(job: dict[str, Any]) -> dict[str, Any]:
    """One run: ``job["variant"]`` None is the plain method (source-only or self-training)."""
    import torch

    torch.set_num_threads(1)
    cls = ablated_module_class()
    variant = job["variant"]

    class Bound(cls):  # the variant as a default argument, so build_run's call stays the plain one
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(ablation=variant, **kwargs)

    row = train_and_test(job, Bound)
    return row | {"variant": variant}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="rgb2infrared")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--set", dest="overrides", nargs="+", default=["model.lr=1e-4"], metavar="KEY=VALUE")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--backbone", default="priors/tiny")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/results/q_zero_ablation.jsonl"))
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides, [args.task])
    except ValueError as error:
        parser.error(str(error))
    setup = {
        "iterations": args.iterations,
        "every": args.iterations,
        "backbone": args.backbone,
        "data": args.data,
        "overrides": dict(sorted(overrides.items())),
    }
    plan = [("source-only", None), ("self-training", None)] + [("self-training", v) for v in args.variants]
    jobs = []
    for method, variant in plan:
        for seed in args.seeds:
            recipe = resolved_recipe(args.task, method, setup)
            key = run_key(args.task, method, seed, setup | {"variant": variant}, recipe)
            jobs.append({"task": args.task, "method": method, "seed": seed, "setup": setup, "key": key,
                         "variant": variant})  # fmt: skip
    done = read_runs(args.runs)
    missing = [job for job in jobs if job["key"] not in done]
    print(f"{len(jobs)} runs, {len(missing)} to train", flush=True)
    os.environ["OMP_NUM_THREADS"] = "1"
    args.runs.parent.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(run_variant, missing):
            with args.runs.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            done[row["key"]] = row
            print(f"{row['method']} {row['variant']} seed {row['seed']}: {row['miou']:.1f}", flush=True)
    rows = [done[job["key"]] for job in jobs]
    baseline = {r["seed"]: r["miou"] for r in rows if r["method"] == "self-training" and r["variant"] is None}
    print("\n| run | mIoU (mean over seeds) | paired difference to self-training |")
    print("| --- | --- | --- |")
    for method, variant in plan:
        values = {r["seed"]: r["miou"] for r in rows if r["method"] == method and r["variant"] == variant}
        differences = [values[s] - baseline[s] for s in values if s in baseline]
        spread = f" ± {statistics.stdev(differences):.1f}" if len(differences) > 1 else ""
        name = variant or method
        print(f"| {name} | {statistics.fmean(values.values()):.1f} | "
              f"{statistics.fmean(differences):+.1f}{spread} |")  # fmt: skip
    assert set(METHODS) >= {"source-only", "self-training"}


if __name__ == "__main__":
    main(sys.argv[1:])

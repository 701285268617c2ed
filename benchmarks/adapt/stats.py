"""The statistics of the adaptation table (``benchmarks.adapt_table``): per (task, method) the mean,
spread and share of the source-only-to-oracle gap closed, the ranking per seed, and each ingredient's
paired per-seed difference to its baseline with its 95 % t-interval (``benchmarks.common.t_interval``)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from benchmarks.common import t_interval


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

"""The report of the adaptation table (``benchmarks.adapt_table``): the markdown tables (cells, paired
differences, learning curves), the section they fill between the markers of ``--markdown`` and the two
charts (mIoU per method per task; the learning curves of one task)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import markers
from benchmarks.common import replace_between_markers as common_replace

#: The section of ``--markdown`` this script fills.
SECTION = "adapt-table"
MARK_START, MARK_END = markers(SECTION)


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

"""What a demo run's score means: the recipe's measured numbers next to the run's own, at the end of the
run and in TensorBoard.

The numbers come from one committed file, ``benchmarks/results/demo.json`` (written by
``python -m benchmarks.demo_results``, which also writes the README's and BENCHMARKS.md's demo numbers
from it; a test checks it against the demo configs). Per task it holds:

- ``table``: the adaptation table's means for the same recipe (``benchmarks/results/adapt.json``):
  source-only, self-training, MADM, oracle, and the seeds they average;
- ``demo``: the measured ``make train`` run of the config (its curve and final mIoU), or null.

``RecipeComparison`` prints after ``fit`` (after the last validation's table) and after ``test``::

    this run, after iteration 600: mIoU 21.12 | make train, measured: 21.12 | the adaptation table (mean
    of seeds 0, 1, 2, 3, 4): source-only 11.2, self-training 18.3, MADM 21.7, oracle 32.6

and draws source-only, self-training and oracle beside ``val/miou`` in TensorBoard: each as the tag
``val/miou`` of its own run folder (``version_<n>/recipe_source-only`` ...), at every logging step and
validation, so the Time Series card ``val/miou`` and the Custom Scalars mIoU chart show the run and the
three levels as flat lines in distinct colours (TensorBoard colours by run), named in the legend of runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from madm_pl.callbacks.images import logger_step

#: The table's methods drawn beside val/miou in TensorBoard (the levels that say whether a run adapts).
DRAWN_METHODS = ("source-only", "self-training", "oracle")
#: The run folder of each drawn level, under the run's own folder.
RECIPE_RUN_PREFIX = "recipe_"


@dataclass(frozen=True)
class RecipeResults:
    """A task's entry of the results file.

    Attributes:
        table: method -> mean target mIoU (%) of the adaptation table for this recipe.
        seeds: the seeds the table's means average.
        demo_miou: the measured demo run's final target mIoU (%), or None (not measured).
        demo_iteration: the iteration of ``demo_miou``.
        demo_command: the command that made the demo run (``make train TASK=...``).
    """

    table: dict[str, float] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()
    demo_miou: float | None = None
    demo_iteration: int | None = None
    demo_command: str = ""


def load_recipe_results(path: str | Path, task: str) -> RecipeResults:
    """The entry of ``task`` in a results file (``benchmarks/results/demo.json``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not the results file's JSON, or holds no entry for ``task``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"comparison.results='{path}' does not exist: run from the repository root, or pass "
            "--comparison.results=null to print no comparison"
        )
    try:
        entry: dict[str, Any] = json.loads(path.read_text())["tasks"][task]
        table = entry["table"]
        demo = entry.get("demo") or {}
        curve = demo.get("curve") or []
        return RecipeResults(
            table={name: float(value) for name, value in table["miou"].items()},
            seeds=tuple(int(seed) for seed in table["seeds"]),
            demo_miou=float(curve[-1]["miou"]) if curve else None,
            demo_iteration=int(curve[-1]["iteration"]) if curve else None,
            demo_command=str(demo.get("command", "")),
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
        raise ValueError(
            f"comparison.results='{path}' has no readable entry for task {task!r} ({error!r}); "
            "regenerate it with python -m benchmarks.demo_results"
        ) from error


def format_comparison(miou: float, iteration: int, results: RecipeResults) -> str:
    """One line: the run's mIoU (two decimals, as the IoU table), the measured demo run, the table's means.

    Args:
        miou: this run's target mIoU in [0,1].
        iteration: the iteration it was measured after.
        results: the recipe's numbers (``load_recipe_results``).
    """
    parts = [f"this run, after iteration {iteration}: mIoU {100 * miou:.2f}"]
    if results.demo_miou is not None:
        parts.append(f"{results.demo_command or 'the demo'}, measured: {results.demo_miou:.2f}")
    if results.table:
        seeds = ", ".join(str(seed) for seed in results.seeds)
        means = ", ".join(f"{name} {value:.1f}" for name, value in results.table.items())
        parts.append(f"the adaptation table (mean of seeds {seeds}): {means}")
    return " | ".join(parts)


class RecipeComparison(Callback):
    """Puts a run's target mIoU next to the recipe's measured numbers (module docstring).

    Args:
        results: the results file (``benchmarks/results/demo.json`` in the demo configs), or None for
            no comparison (the paper recipes: nothing was measured for them here).
    """

    def __init__(self, results: str | None = None) -> None:
        self.results = results
        self._loaded: RecipeResults | None = None
        self._writers: dict[str, Any] = {}
        self._drawn_step: int | None = None

    def _recipe(self, pl_module: LightningModule) -> RecipeResults | None:
        if self.results is None:
            return None
        if self._loaded is None:
            try:
                self._loaded = load_recipe_results(self.results, pl_module.task.name)
            except (FileNotFoundError, ValueError) as error:
                rank_zero_warn(f"{error}; no comparison is printed")
                self.results = None
                return None
        return self._loaded

    def _print(self, pl_module: LightningModule) -> None:
        scores = getattr(pl_module, "last_scores", None)
        recipe = self._recipe(pl_module)
        if recipe is not None and scores:
            rank_zero_info(format_comparison(float(scores["miou"]), int(scores["iteration"]), recipe))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print(pl_module)  # after the last validation's table
        self._close()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print(pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._close()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # every logging step, so that the levels are flat lines across the chart: TensorBoard's "Ignore
        # outliers" (on by default) drops a chart's lowest and highest 5 % of points, and levels drawn
        # as densely as the training curves are never among them
        if trainer.global_step % trainer.log_every_n_steps == 0:
            self._draw(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._draw(trainer, pl_module)  # at the step of this validation's val/miou

    @rank_zero_only
    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = getattr(trainer.logger, "log_dir", None)
        step = logger_step(trainer)
        if log_dir is None or step == self._drawn_step:
            return
        recipe = self._recipe(pl_module)
        if recipe is None:
            return
        from torch.utils.tensorboard import SummaryWriter  # imported when there is something to draw

        for method in DRAWN_METHODS:
            value = recipe.table.get(method)
            if value is None or not math.isfinite(value):
                continue
            if method not in self._writers:
                self._writers[method] = SummaryWriter(str(Path(log_dir, f"{RECIPE_RUN_PREFIX}{method}")))
            self._writers[method].add_scalar("val/miou", value, step)
        self._drawn_step = step

    def _close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers, self._drawn_step = {}, None

"""The per-class IoU table printed at the end of validation and test (METHOD.md §6)."""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from madm_pl.evaluation import REFERENCE_PROTOCOL as REFERENCE_PROTOCOL_KEY

#: Column headers: the whole split (madm-pl's score) and the reference's rank-0 share.
WHOLE_SPLIT = "whole split"
REFERENCE_PROTOCOL = "reference protocol"


def _cell(value: float, width: int) -> str:
    return f"{'n/a':>{width}}" if math.isnan(value) else f"{100 * value:{width}.2f}"


def format_iou_table(
    classes: tuple[str, ...],
    iou: torch.Tensor,
    miou: float,
    title: str = "",
    reference: tuple[torch.Tensor, float] | None = None,
    reference_note: str = "",
) -> str:
    """A plain-text table: one row per class in the task's class order, then the mIoU.

    Without ``reference`` one column, "IoU (%)"; with it two, "whole split" (``iou``, ``miou``) and
    "reference protocol" (the reference's rank-0 share of the split, ``data/reference.py``).

    Args:
        classes: class names, index = train id.
        iou: (C,) float IoU in [0,1] over the whole split; NaN for a class absent from labels and
            predictions ("n/a").
        miou: mIoU in [0,1] by the rule of METHOD.md §6.
        title: first line.
        reference: (iou (C,), miou) of the reference's share, same conventions, or None.
        reference_note: a last line saying what the reference protocol scored.
    """
    headers = [WHOLE_SPLIT, REFERENCE_PROTOCOL] if reference is not None else ["IoU (%)"]
    columns = [(iou.tolist(), miou)] + ([(reference[0].tolist(), reference[1])] if reference else [])
    widths = [max(7, len(header)) for header in headers]
    name_width = max(len(name) for name in (*classes, "mIoU", "class"))
    rule = "-" * (name_width + sum(2 + width for width in widths))
    lines = [title] if title else []
    lines.append(f"{'class':<{name_width}}" + "".join(f"  {h:>{w}}" for h, w in zip(headers, widths)))
    lines.append(rule)
    for index, name in enumerate(classes):
        cells = "".join(f"  {_cell(values[index], w)}" for (values, _), w in zip(columns, widths))
        lines.append(f"{name:<{name_width}}{cells}")
    lines.append(rule)
    lines.append(
        f"{'mIoU':<{name_width}}" + "".join(f"  {_cell(m, w)}" for (_, m), w in zip(columns, widths))
    )
    if reference is not None and reference_note:
        lines.append(f"{REFERENCE_PROTOCOL}: {reference_note}")
    return "\n".join(lines)


class IoUTable(Callback):
    """Prints the per-class IoU table and the mIoU after each validation and test run.

    Next to the whole split it shows the reference protocol when the module scored it (the datasets
    of the paper; the datamodule's ``reference_share`` says which images). What the score means (the
    recipe's measured numbers) is ``comparison.RecipeComparison``'s line, printed after this table.
    """

    def _print(self, trainer: Trainer, pl_module: LightningModule) -> None:
        scores = getattr(pl_module, "last_scores", None)
        if trainer.sanity_checking or not scores:
            return
        title = f"{scores['stage']} after iteration {scores['iteration']} ({pl_module.task.name})"
        reference = scores.get(REFERENCE_PROTOCOL_KEY)
        share = getattr(trainer.datamodule, "reference_share", None) if reference is not None else None
        table = format_iou_table(
            pl_module.task.classes,
            scores["iou"],
            scores["miou"],
            title,
            reference=None if reference is None else (reference["iou"], reference["miou"]),
            reference_note="" if share is None else share.describe(),
        )
        rank_zero_info("\n" + table)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print(trainer, pl_module)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print(trainer, pl_module)

"""The per-class IoU table printed at the end of validation and test (SPEC section 6)."""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info


def format_iou_table(classes: tuple[str, ...], iou: torch.Tensor, miou: float, title: str = "") -> str:
    """A plain-text table: one row per class in the task's class order, then the mIoU.

    Args:
        classes: class names, index = train id.
        iou: (C,) float IoU in [0,1]; NaN for a class absent from labels and predictions (skipped).
        miou: mIoU in [0,1] by the rule of SPEC section 6.
        title: first line.
    """
    width = max(len(name) for name in (*classes, "mIoU"))
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  IoU (%)")
    lines.append("-" * (width + 9))
    for name, value in zip(classes, iou.tolist(), strict=True):
        shown = "    n/a" if math.isnan(value) else f"{100 * value:7.2f}"
        lines.append(f"{name:<{width}}  {shown}")
    lines.append("-" * (width + 9))
    lines.append(f"{'mIoU':<{width}}  {100 * miou:7.2f}")
    return "\n".join(lines)


class IoUTable(Callback):
    """Prints the per-class IoU table and the mIoU after each validation and test run."""

    def _print(self, trainer: Trainer, pl_module: LightningModule) -> None:
        scores = getattr(pl_module, "last_scores", None)
        if trainer.sanity_checking or not scores:
            return
        title = f"{scores['stage']} after iteration {scores['iteration']} ({pl_module.task.name})"
        rank_zero_info("\n" + format_iou_table(pl_module.task.classes, scores["iou"], scores["miou"], title))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print(trainer, pl_module)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print(trainer, pl_module)

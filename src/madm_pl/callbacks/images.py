"""TensorBoard image grids of a training step, in palette colours (SPEC section 5: every 250 iterations)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from madm_pl.labels import colorize

# Columns of the grid, left to right; a column is skipped when the step did not compute it (e.g. no
# ClassMix in source-only mode).
COLUMNS = (
    "source_image",
    "source_label",
    "source_prediction",
    "lplr_label_image",
    "target_image",
    "pseudo_label",
    "mixed_image",
    "mixed_label",
    "mixed_prediction",
)


def _to_rgb(name: str, value: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """One visual as (B,3,H,W) uint8: images in [0,1], the LPLR image in [-1,1], labels, logits."""
    if name == "lplr_label_image":
        return ((value.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if name.endswith("_image"):
        return (value.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if name.endswith("_prediction"):
        value = value.argmax(1)
    return colorize(value, palette.cpu().numpy())


def training_grid(
    visuals: dict[str, torch.Tensor], palette: torch.Tensor, max_images: int = 4
) -> torch.Tensor:
    """A grid of one training step: one row per sample, one column per available visual.

    Args:
        visuals: tensors from ``MADMModule.training_step`` (images (B,3,H,W), labels (B,H,W) int64,
            predictions (B,C,H,W) logits), all at the crop size.
        palette: (C,3) uint8.
        max_images: rows at most.

    Returns:
        (3, rows*H, columns*W) uint8.
    """
    columns = [
        _to_rgb(name, visuals[name][:max_images].cpu(), palette) for name in COLUMNS if name in visuals
    ]
    rows = torch.cat(columns, dim=3)  # (B,3,H,columns*W)
    return torch.cat(list(rows), dim=1)


class ImageLogger(Callback):
    """Writes a training grid to TensorBoard every ``every_n_steps`` optimiser steps.

    Args:
        every_n_steps: interval in iterations (paper: 250).
        max_images: samples (rows) per grid.
    """

    def __init__(self, every_n_steps: int = 250, max_images: int = 4) -> None:
        if every_n_steps <= 0:
            raise ValueError(f"ImageLogger.every_n_steps must be positive, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.max_images = max_images

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(outputs, dict) or "visuals" not in outputs:
            return
        # After the last micro-batch of an optimiser step, global_step counts that step: log iterations
        # 0, N, 2N, ... once each, whatever the gradient accumulation.
        last_micro_batch = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if not last_micro_batch or (trainer.global_step - 1) % self.every_n_steps != 0:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        grid = training_grid(outputs["visuals"], pl_module.palette, self.max_images)
        for logger in loggers:
            logger.experiment.add_image("train/grid", grid, trainer.global_step)

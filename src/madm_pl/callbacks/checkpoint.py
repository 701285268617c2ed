"""Refuses to write a checkpoint whose weights are not finite."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class FiniteWeightsGuard(Callback):
    """Raises before a checkpoint with NaN/Inf weights is written.

    Non-finite steps are already skipped by the module; this is the last line of defence, so a bad
    checkpoint never replaces a good one (the write itself is atomic: Lightning saves local files
    through an fsspec transaction, i.e. a temporary file moved into place).
    """

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        bad = [
            name
            for name, value in checkpoint["state_dict"].items()
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()
        ]
        if bad:
            raise RuntimeError(
                f"refusing to save a checkpoint at iteration {trainer.global_step}: non-finite weights in "
                f"{bad[:5]}{' ...' if len(bad) > 5 else ''}; the previous checkpoints are left untouched"
            )

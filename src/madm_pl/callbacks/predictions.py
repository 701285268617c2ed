"""Writes predicted label maps and palette-coloured masks for a folder of target images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from madm_pl.labels import colorize


class PredictionWriter(BasePredictionWriter):
    """For each image ``<name>``: ``<output_dir>/labels/<name>.png`` (train ids, uint8) and
    ``<output_dir>/colour/<name>.png`` (palette RGB), at the image's original size.

    Args:
        output_dir: folder to write into (created; existing files of other names are left alone).
    """

    def __init__(self, output_dir: str = "predictions") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, Any],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        (self.output_dir / "labels").mkdir(parents=True, exist_ok=True)
        (self.output_dir / "colour").mkdir(parents=True, exist_ok=True)
        palette = pl_module.task.palette
        for label, name, size in zip(
            prediction["prediction"], prediction["name"], prediction["size"], strict=True
        ):
            height, width = (int(v) for v in size)
            # Nearest resize back to the original image size: labels must stay class ids.
            label = F.interpolate(label[None, None].float(), size=(height, width), mode="nearest")[0, 0]
            label_np = label.to(torch.uint8).cpu().numpy()
            stem = Path(name).stem
            _write_png(self.output_dir / "labels" / f"{stem}.png", label_np)
            _write_png(self.output_dir / "colour" / f"{stem}.png", colorize(label_np, palette))


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write through a temporary file so an interrupted run never leaves a truncated PNG."""
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(array).save(tmp)
    tmp.replace(path)

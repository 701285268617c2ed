"""Writes predicted label maps and palette-coloured masks for a folder of target images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image

from madm_pl.data.io import atomic_write
from madm_pl.labels import colorize


def output_name(name: str) -> str:
    """The output file of an input: its relative path and full name, ``.png`` added unless it ends so.

    ``a.png -> a.png``, ``a.jpg -> a.jpg.png``, ``sub/frame.001.png -> sub/frame.001.png``: inputs of
    different names never share an output (but ``a.jpg`` and ``a.jpg.png`` would; the writer refuses).
    """
    return name if name.lower().endswith(".png") else f"{name}.png"


class PredictionWriter(BasePredictionWriter):
    """For each input image ``<relative path>``: ``<output_dir>/labels/<relative path>`` (train ids,
    uint8) and ``<output_dir>/colour/<relative path>`` (palette RGB), at the image's original size,
    as PNG (``.png`` is appended to other suffixes: ``a.jpg -> a.jpg.png``).

    Each PNG is written atomically (``io.atomic_write``). A file that cannot be read is skipped with a
    warning, and the skipped files are listed at the end.

    Args:
        output_dir: folder to write into (created).
        overwrite: allow a non-empty ``output_dir``: outputs of the same names are replaced, other
            files are left alone. False refuses to start on a non-empty folder.
    """

    def __init__(self, output_dir: str = "predictions", overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.written: dict[Path, str] = {}
        self.skipped: list[str] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        self.written, self.skipped = {}, []
        if self.overwrite or not self.output_dir.is_dir():
            return
        existing = [path for path in self.output_dir.rglob("*") if path.is_file()]
        if existing:
            raise FileExistsError(
                f"prediction_writer.output_dir='{self.output_dir}' is not empty ({len(existing)} files, e.g. "
                f"'{existing[0]}'): choose an empty folder, or pass --prediction_writer.overwrite=true "
                "to replace outputs of the same names"
            )

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
        palette = pl_module.task.palette
        errors = batch.get("error", [""] * len(prediction["name"]))
        for label, name, size, error in zip(
            prediction["prediction"], prediction["name"], prediction["size"], errors, strict=True
        ):
            if error:
                rank_zero_warn(f"predict: skipped '{name}': {error}")
                self.skipped.append(name)
                continue
            relative = output_name(name)
            target = self.output_dir / "labels" / relative
            if target in self.written:
                raise ValueError(
                    f"predict: inputs '{self.written[target]}' and '{name}' would both be written to "
                    f"'{target}'; rename one of them"
                )
            self.written[target] = name
            height, width = (int(v) for v in size)
            # Nearest resize back to the original image size: labels must stay class ids.
            label = F.interpolate(label[None, None].float(), size=(height, width), mode="nearest")[0, 0]
            label_np = label.to(torch.uint8).cpu().numpy()
            _write_png(target, label_np)
            _write_png(self.output_dir / "colour" / relative, colorize(label_np, palette))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        summary = (
            f"predict: wrote {len(self.written)} label maps (class ids) to {self.output_dir / 'labels'} and "
            f"their palette colours to {self.output_dir / 'colour'}"
        )
        if self.skipped:
            listing = "\n  ".join(self.skipped)
            summary += f"; skipped {len(self.skipped)} unreadable files:\n  {listing}"
        rank_zero_info(summary)


def _write_png(path: Path, array: np.ndarray) -> None:
    """An interrupted or failed write never leaves a truncated PNG (``io.atomic_write``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        Image.fromarray(array).save(file, format="PNG")

"""TensorBoard pictures of training steps: titled grids in palette colours (METHOD.md §5: every 250
iterations), and the grid painter the validation pictures share.

TensorBoard fits every image to its card (about 330 px wide by default), so a step is split into three
grids of at most four columns, and small panels are enlarged with nearest-neighbour upscaling, which keeps
label edges sharp where the browser's own smoothing would blur them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image, ImageDraw, ImageFont

from madm_pl.labels import colorize
from madm_pl.lightning_private import batches_that_stepped

#: Panel titles of the visuals ``MADMModule.training_step`` returns.
PANEL_TITLES = {
    "source_image": "source image",
    "source_label": "source label",
    "source_prediction": "source prediction",
    "lplr_label_image": "decoded LPLR image",
    "target_image": "target image",
    "pseudo_label": "pseudo-label",
    "confidence_mask": "confidence mask",
    "target_label": "target label",
    "target_prediction": "target prediction",
    "mixed_image": "mixed image",
    "mixed_label": "mixed label",
    "mixed_prediction": "mixed prediction",
}
#: TensorBoard tag -> visuals, left to right; a visual the step did not compute is skipped (source-only
#: runs have no target grid; the oracle's target grid is target image | target label | target prediction).
TRAINING_GRIDS = {
    "visual_train/source": ("source_image", "source_label", "source_prediction", "lplr_label_image"),
    "visual_train/target": (
        "target_image",
        "pseudo_label",
        "confidence_mask",
        "target_label",
        "target_prediction",
    ),
    "visual_train/mixed": ("mixed_image", "mixed_label", "mixed_prediction"),
}
#: White space between panels, in pixels.
GAP = 2
_MIN_FONT_SIZE = 8


def visual_to_rgb(name: str, value: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """One visual as pictures.

    Args:
        name: a key of ``PANEL_TITLES`` (or any name ending in ``_image``, ``_prediction``, ``_label``).
        value: images (B,3,H,W) float in [0,1]; the decoded LPLR image (B,3,H,W) float in [-1,1]
            (clamped: the head reads it unclipped); predictions (B,C,H,W) logits (argmax); labels
            (B,H,W) int64 train ids or 255 (black); the confidence mask (B,H,W) bool (white = confident).
        palette: (C,3) uint8.

    Returns:
        (B,3,H,W) uint8.
    """
    value = value.detach().cpu()
    if name == "lplr_label_image":
        return ((value.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if name == "confidence_mask":
        return (value.to(torch.uint8) * 255)[:, None].expand(-1, 3, -1, -1).contiguous()
    if name.endswith("_image"):
        return (value.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if name.endswith("_prediction"):
        value = value.argmax(1)
    return colorize(value, palette.cpu().numpy())


def upscale_factor(height: int, width: int, min_size: int) -> int:
    """The integer factor that brings the shorter side of a panel to at least ``min_size`` (>= 1)."""
    return max(1, math.ceil(min_size / min(height, width)))


def nearest_upscale(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(B,3,H,W) -> (B,3,factor*H,factor*W): every pixel repeated, no new colours (labels stay exact)."""
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def title_font_size(panel_width: int) -> int:
    """Title size in pixels, proportional to the panel width (a ninth, 12 to 48), so the titles stay
    legible when TensorBoard shrinks a wide grid to its card."""
    return min(48, max(12, panel_width // 9))


def title_height(panel_width: int) -> int:
    """Height in pixels of the white title bar above panels ``panel_width`` pixels wide."""
    return title_font_size(panel_width) * 3 // 2


def _font(title: str, width: int, draw: ImageDraw.ImageDraw) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The largest font (up to ``title_font_size``) in which ``title`` fits a panel ``width`` pixels wide."""
    for size in range(title_font_size(width), _MIN_FONT_SIZE - 1, -1):
        font = ImageFont.load_default(size=size)
        if draw.textlength(title, font=font) <= width - 4:
            return font
    return font


def titled_grid(columns: Sequence[tuple[str, torch.Tensor]], min_size: int = 192) -> torch.Tensor:
    """Panels in a grid, one column per kind with its title on top, one row per sample.

    Layout: panels are upscaled by f = ``upscale_factor(H, W, min_size)`` (nearest) and separated by
    ``GAP`` white pixels, under a white title bar T = ``title_height(f*W)`` pixels high. The panel of
    row r, column c starts at y = T + r * (f*H + GAP), x = c * (f*W + GAP).

    Args:
        columns: (title, pictures (B,3,H,W) uint8) pairs, all of one shape.
        min_size: the shorter side of a panel is upscaled to at least this many pixels.

    Returns:
        (3, T + B*f*H + (B-1)*GAP, K*f*W + (K-1)*GAP) uint8 for K columns.

    Raises:
        ValueError: when no columns are given or their shapes differ.
    """
    if not columns:
        raise ValueError("titled_grid: no columns to draw")
    shapes = {tuple(pictures.shape) for _, pictures in columns}
    if len(shapes) != 1:
        raise ValueError(f"titled_grid: the columns must have one shape (B,3,H,W), got {sorted(shapes)}")
    rows, _, height, width = next(iter(shapes))
    factor = upscale_factor(height, width, min_size)
    panel_height, panel_width = factor * height, factor * width
    grid_width = len(columns) * panel_width + (len(columns) - 1) * GAP
    top = title_height(panel_width)
    grid_height = top + rows * panel_height + (rows - 1) * GAP
    canvas = Image.new("RGB", (grid_width, grid_height), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (title, pictures) in enumerate(columns):
        left = index * (panel_width + GAP)
        font = _font(title, panel_width, draw)
        draw.text((left + panel_width / 2, top / 2), title, fill="black", font=font, anchor="mm")
        upscaled = nearest_upscale(pictures, factor).permute(0, 2, 3, 1).numpy()
        for row in range(rows):
            canvas.paste(Image.fromarray(upscaled[row]), (left, top + row * (panel_height + GAP)))
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def class_legend(classes: Sequence[str], palette: np.ndarray, width: int, font_size: int = 14) -> np.ndarray:
    """A legend strip of a palette: a colour swatch and the class name for each class, then "ignored"
    in black, laid out in rows that fit ``width``.

    Args:
        classes: class names, index = train id.
        palette: (C,3) uint8 RGB, the colours ``labels.colorize`` paints with.
        width: the strip's width in pixels (a picture's).
        font_size: text height in pixels; the swatches are as tall.

    Returns:
        (H, width, 3) uint8, white background.
    """
    entries = [(name, tuple(int(v) for v in palette[index])) for index, name in enumerate(classes)]
    entries.append(("ignored", (0, 0, 0)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = ImageFont.load_default(size=font_size)
    pad, swatch = font_size // 2, font_size
    cells = [
        (name, colour, swatch + pad // 2 + int(probe.textlength(name, font=font)) + 2 * pad)
        for name, colour in entries
    ]
    rows: list[list[tuple[str, tuple[int, ...], int]]] = [[]]
    for cell in cells:
        if rows[-1] and sum(c[2] for c in rows[-1]) + cell[2] > width:
            rows.append([])
        rows[-1].append(cell)
    row_height = font_size + pad
    canvas = Image.new("RGB", (width, len(rows) * row_height + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for row_index, row in enumerate(rows):
        x, y = pad, pad + row_index * row_height
        for name, colour, cell_width in row:
            draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=colour, outline=(128, 128, 128))
            draw.text((x + swatch + pad // 2, y + swatch / 2), name, fill="black", font=font, anchor="lm")
            x += cell_width
    return np.asarray(canvas).copy()


def training_grids(
    visuals: dict[str, torch.Tensor], palette: torch.Tensor, max_images: int = 2, min_size: int = 192
) -> dict[str, torch.Tensor]:
    """The titled grids of one training step, by TensorBoard tag (``TRAINING_GRIDS``).

    Args:
        visuals: tensors from ``MADMModule.training_step`` (images (B,3,H,W), labels (B,H,W) int64,
            predictions (B,C,H,W) logits, the confidence mask (B,H,W) bool), all at the crop size.
        palette: (C,3) uint8.
        max_images: rows (samples) at most.
        min_size: see ``titled_grid``.

    Returns:
        ``{tag: (3,H',W') uint8}`` for each grid with at least one visual present.
    """
    grids = {}
    for tag, names in TRAINING_GRIDS.items():
        columns = [
            (PANEL_TITLES[name], visual_to_rgb(name, visuals[name][:max_images], palette))
            for name in names
            if name in visuals
        ]
        if columns:
            grids[tag] = titled_grid(columns, min_size)
    return grids


def logger_step(trainer: Trainer) -> int:
    """The x-axis step Lightning gives the scalars logged at this moment, for pictures to sit beside them.

    It is the 0-based index of the current iteration in training hooks, and that of the last trained
    iteration during a validation inside ``fit`` (Lightning increments it after the validation), so
    the pictures of the validation after iteration 200 share step 199 with its ``val/miou``.
    """
    return batches_that_stepped(trainer)


def tensorboard_writers(trainer: Trainer) -> list[Any]:
    """The SummaryWriters of the trainer's TensorBoard loggers, on the global-zero process only."""
    if not trainer.is_global_zero:
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


class ImageLogger(Callback):
    """Writes the titled grids of a training step to TensorBoard every ``every_n_steps`` iterations.

    Tags ``visual_train/source`` (source image | source label | source prediction | decoded LPLR
    image), ``visual_train/target`` (target image | pseudo-label | confidence mask; the oracle: target
    image | target label | target prediction) and ``visual_train/mixed`` (mixed image | mixed label |
    mixed prediction), one row per sample.

    Args:
        every_n_steps: interval in iterations (paper: 250).
        max_images: samples (rows) per grid.
        min_panel_size: panels are upscaled (nearest, by an integer factor) until their shorter side
            has at least this many pixels: a 64x64 crop becomes 192x192; 512x512 crops stay as they are.
    """

    def __init__(self, every_n_steps: int = 250, max_images: int = 2, min_panel_size: int = 192) -> None:
        if every_n_steps <= 0:
            raise ValueError(f"image_logger.every_n_steps must be positive, got {every_n_steps}")
        if max_images <= 0:
            raise ValueError(f"image_logger.max_images must be positive, got {max_images}")
        if min_panel_size <= 0:
            raise ValueError(f"image_logger.min_panel_size must be positive, got {min_panel_size}")
        self.every_n_steps = every_n_steps
        self.max_images = max_images
        self.min_panel_size = min_panel_size

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
        writers = tensorboard_writers(trainer)
        if not writers:
            return
        grids = training_grids(outputs["visuals"], pl_module.palette, self.max_images, self.min_panel_size)
        for writer in writers:
            for tag, grid in grids.items():
                writer.add_image(tag, grid, logger_step(trainer))

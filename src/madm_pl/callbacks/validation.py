"""TensorBoard pictures of each validation: fixed target test images and the confusion matrix.

The same test images (chosen by index) are drawn at every validation, so the slider of TensorBoard's
image card steps through the predictions of one image set over the iterations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassConfusionMatrix

from madm_pl.callbacks.images import logger_step, tensorboard_writers, titled_grid, visual_to_rgb

STUDENT_TAG = "visual_val/student_prediction"
PSEUDO_LABEL_TAG = "visual_val/teacher_pseudo_label"
CONFUSION_TAG = "visual_val/confusion_matrix"


def evenly_spaced(length: int, count: int) -> list[int]:
    """``count`` indices spread over ``range(length)``, first and last included (all when count >= length).

    >>> evenly_spaced(5, 3)
    [0, 2, 4]
    """
    if count >= length:
        return list(range(length))
    if count == 1:
        return [0]
    return [round(i * (length - 1) / (count - 1)) for i in range(count)]


def _iteration(trainer: Trainer, pl_module: LightningModule) -> int:
    """Iterations trained before this validation (a checkpoint's own count under ``validate``)."""
    return int(getattr(pl_module, "last_scores", {}).get("iteration", trainer.global_step))


class ValidationImages(Callback):
    """After every validation: ``num_images`` fixed target test images with the model's predictions.

    Tags (rows = images, in index order):
      * ``visual_val/student_prediction``: image | student prediction | ground truth;
      * ``visual_val/teacher_pseudo_label`` (``model.mode: madm`` only): image | pseudo-label |
        confidence mask | ground truth, from the network that makes the training pseudo-labels (the
        EMA teacher, or the student with ``ema: false``) at the DPLG timestep of the next iteration
        (t0 = ``dplg_t0``; 0 from ``dplg_t_end`` on, and always with ``dplg: false``): the
        pseudo-labels the student is learning from at that point, on images whose ground truth is
        known. Both networks run in eval mode, as the validation does (BatchNorm running statistics,
        no dropout).

    Args:
        num_images: test images shown, evenly spaced over the test split (index 0 and the last one
            included; all of them when the split is smaller).
        min_panel_size: panels are upscaled (nearest, integer factor) until their shorter side has at
            least this many pixels.
    """

    def __init__(self, num_images: int = 4, min_panel_size: int = 192) -> None:
        if num_images <= 0:
            raise ValueError(f"validation_images.num_images must be positive, got {num_images}")
        if min_panel_size <= 0:
            raise ValueError(f"validation_images.min_panel_size must be positive, got {min_panel_size}")
        self.num_images = num_images
        self.min_panel_size = min_panel_size
        self._batch: dict[str, Any] | None = None

    def chosen_batch(self, trainer: Trainer) -> dict[str, Any]:
        """The chosen test items, collated once: ``{"image": (N,3,H,W) in [0,1], "label": (N,H,W)}``."""
        if self._batch is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            dataset = loader.dataset
            indices = evenly_spaced(len(dataset), self.num_images)
            self._batch = loader.collate_fn([dataset[i] for i in indices])
        return self._batch

    @torch.no_grad()
    def pictures(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, torch.Tensor]:
        """The grids by tag, each (3,H',W') uint8 (``titled_grid``)."""
        batch = self.chosen_batch(trainer)
        palette = pl_module.palette
        image = trainer.precision_plugin.convert_input(batch["image"].to(pl_module.device))
        with trainer.precision_plugin.val_step_context():
            student_logits = pl_module(image)
        shown_image = visual_to_rgb("target_image", batch["image"], palette)
        ground_truth = visual_to_rgb("target_label", batch["label"], palette)
        grids = {
            STUDENT_TAG: titled_grid(
                [
                    ("image", shown_image),
                    ("student prediction", visual_to_rgb("target_prediction", student_logits, palette)),
                    ("ground truth", ground_truth),
                ],
                self.min_panel_size,
            )
        }
        if getattr(pl_module, "mode", None) == "madm":
            with trainer.precision_plugin.val_step_context():
                pseudo, timestep = pl_module.pseudo_labels(image, _iteration(trainer, pl_module))
            grids[PSEUDO_LABEL_TAG] = titled_grid(
                [
                    ("image", shown_image),
                    (f"pseudo-label (t={timestep})", visual_to_rgb("pseudo_label", pseudo.label, palette)),
                    ("confidence mask", visual_to_rgb("confidence_mask", pseudo.confident, palette)),
                    ("ground truth", ground_truth),
                ],
                self.min_panel_size,
            )
        return grids

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # on_validation_end, not _epoch_end: the module scores its epoch after the callbacks' epoch-end
        # hooks, and the iteration under `validate` comes with those scores. The module is still in eval mode.
        writers = tensorboard_writers(trainer)
        if trainer.sanity_checking or not writers or not trainer.val_dataloaders:
            return
        for tag, grid in self.pictures(trainer, pl_module).items():
            for writer in writers:
                writer.add_image(tag, grid, logger_step(trainer))


def row_normalised(confusion: torch.Tensor) -> torch.Tensor:
    """Each row (a ground-truth class) divided by its pixel count: the diagonal is the per-class recall.

    Args:
        confusion: (C,C) int pixel counts, rows = ground truth, columns = prediction.

    Returns:
        (C,C) float32 in [0,1]; a row of a class absent from the ground truth is all 0.
    """
    confusion = confusion.float()
    return confusion / confusion.sum(dim=1, keepdim=True).clamp(min=1)


def confusion_figure(confusion: torch.Tensor, classes: tuple[str, ...], title: str) -> np.ndarray:
    """The row-normalised confusion matrix drawn by torchmetrics' ``plot`` (matplotlib, Agg canvas).

    Args:
        confusion: (C,C) int pixel counts, rows = ground truth.
        classes: C class names.
        title: the figure's title.

    Returns:
        (800, 800, 3) uint8.
    """
    figure = Figure(figsize=(8, 8), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)  # no pyplot: no global figure state, no GUI backend
    axis = figure.add_subplot()
    metric = MulticlassConfusionMatrix(num_classes=len(classes))
    metric.plot(val=row_normalised(confusion), ax=axis, labels=list(classes))
    axis.set_title(title)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class ConfusionMatrixImage(Callback):
    """After every validation: the target confusion matrix (rows = ground truth, normalised to 1, so
    the diagonal is each class's recall) as ``visual_val/confusion_matrix``."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        scores = getattr(pl_module, "last_scores", None)
        writers = tensorboard_writers(trainer)
        if trainer.sanity_checking or not writers or not scores or "confusion" not in scores:
            return
        title = f"target confusion matrix, iteration {scores['iteration']} (rows: ground truth, sum 1)"
        picture = confusion_figure(scores["confusion"], pl_module.task.classes, title)
        for writer in writers:
            writer.add_image(CONFUSION_TAG, picture, logger_step(trainer), dataformats="HWC")

"""Scoring the target test split (METHOD.md §6): the confusion matrices, the reference protocol, the logs.

``MADMModule`` keeps one ``SegmentationScores`` per stage (``val_scores``, ``test_scores``), updates it
with each evaluation batch and, at the end of the stage, logs what it computes (``log_scores``) and
hands it to the callbacks as ``last_scores`` (docs/ARCHITECTURE.md, "Module -> callbacks contracts").

``SegmentationScores`` is a torchmetrics ``Metric``: its counts are summed over the processes before
scoring (every test image is scored once, ``CrossModalityDataModule``'s evaluation sampler), so the mIoU
of several GPUs is the one-process mIoU; the reference scored shards (``data/reference.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from madm_pl.labels import IGNORE_INDEX
from madm_pl.method.metrics import miou_from_confusion

#: Suffix of the metrics of the reference's rank-0 share of the test split (data/reference.py), and the
#: key of its scores in ``SegmentationScores.compute()``.
REFERENCE_PROTOCOL = "reference_protocol"


def confusion_counts(prediction: Tensor, label: Tensor, num_classes: int) -> Tensor:
    """Pixel counts of (ground truth, prediction) pairs, ignored pixels (255) left out.

    Args:
        prediction: (...) int64 class ids in [0, num_classes).
        label: (...) int64 class ids or ``IGNORE_INDEX``, the shape of ``prediction``.
        num_classes: C.

    Returns:
        (C,C) int64, rows = ground truth (torchmetrics' ``MulticlassConfusionMatrix`` layout).
    """
    valid = label != IGNORE_INDEX
    pairs = label[valid] * num_classes + prediction[valid]
    return torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


class SegmentationScores(Metric):
    """The confusion matrix of a test split and of the reference's rank-0 share of it.

    ``update(prediction, label, in_reference_share)`` adds a batch; ``compute()`` gives ``{"miou": float
    in [0,1], "iou": (C,) float64 (nan: a class absent from labels and predictions), "confusion": (C,C)
    int64 pixel counts, rows = ground truth}`` and, when any batch carried ``in_reference_share`` (DELIVER,
    FMB and DSEC test splits), ``"reference_protocol": {"miou", "iou"}`` of the share's images.

    Args:
        num_classes: C.
    """

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.add_state("confusion", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("reference_confusion", default=zeros.clone(), dist_reduce_fx="sum")
        # Batches that carried the share; summed over the processes, so all of them agree on scoring it.
        self.add_state("reference_batches", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, prediction: Tensor, label: Tensor, in_reference_share: Tensor | None = None) -> None:
        """Add a batch.

        Args:
            prediction: (B,H,W) int64 class ids.
            label: (B,H,W) int64 class ids or 255.
            in_reference_share: (B,) bool, the images of the reference's rank-0 share, or None when the
                split has none (your own images: the reference never ran on them).
        """
        self.confusion += confusion_counts(prediction, label, self.num_classes)
        if in_reference_share is not None:
            share = in_reference_share.to(prediction.device)
            self.reference_confusion += confusion_counts(prediction[share], label[share], self.num_classes)
            self.reference_batches += 1

    def compute(self) -> dict[str, Any]:
        miou, iou = miou_from_confusion(self.confusion)
        scores: dict[str, Any] = {"miou": miou, "iou": iou.cpu(), "confusion": self.confusion.cpu()}
        if int(self.reference_batches) > 0:
            miou, iou = miou_from_confusion(self.reference_confusion)
            scores[REFERENCE_PROTOCOL] = {"miou": miou, "iou": iou.cpu()}
        return scores


def log_scores(log: Callable[..., Any], stage: str, classes: Sequence[str], scores: dict[str, Any]) -> None:
    """Log ``<stage>/miou`` and ``<stage>_iou/<class>`` in percent (absent classes skipped), and the same
    with the suffix ``_reference_protocol`` when ``scores`` has the share's.

    Rounded once to two decimals, as the IoU table prints them: the bar, TensorBoard, the checkpoint
    name and the table show the same digits (float32 logging would otherwise round 19.695 up).
    The per-class curves have their own group, so that ``val/miou`` is the first card of ``val/``.

    Args:
        log: ``LightningModule.log``.
        stage: ``"val"`` or ``"test"``.
        classes: the task's class names, index = train id.
        scores: ``SegmentationScores.compute()``.
    """
    parts = [("", scores)]
    if REFERENCE_PROTOCOL in scores:
        parts.append((f"_{REFERENCE_PROTOCOL}", scores[REFERENCE_PROTOCOL]))
    for suffix, part in parts:
        log(f"{stage}/miou{suffix}", round(part["miou"] * 100, 2), prog_bar=not suffix, sync_dist=False)
        for name, value in zip(classes, part["iou"].tolist(), strict=True):
            if not math.isnan(value):
                log(f"{stage}_iou/{name.replace(' ', '_')}{suffix}", round(value * 100, 2))

"""Evaluation numbers: the reference's mIoU rule and the pseudo-labels' pixel accuracy (METHOD.md §6)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from madm_pl.labels import IGNORE_INDEX


def miou_from_confusion(confusion: Tensor) -> tuple[float, Tensor]:
    """mIoU by the reference's rule from a confusion matrix with ground truth in rows.

    IoU = TP / (TP + FP + FN). mIoU = sum of IoU over classes present in the labels, divided by
    the number of classes present in the labels OR the predictions: a class predicted but absent
    from the labels counts 0; a class absent from both is skipped. (torchmetrics'
    ``MulticlassConfusionMatrix(ignore_index=255)`` has this layout: rows = target.)

    Args:
        confusion: (C,C) integer counts, ``confusion[gt, pred]``, ignored pixels excluded.

    Returns:
        miou: float in [0, 1], nan when no class occurs at all.
        iou: (C,) float64 per class; 0 for a class only predicted, nan for a class absent from both.
    """
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"miou_from_confusion: confusion must be (C,C), got {tuple(confusion.shape)}")
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    in_labels = confusion.sum(dim=1)
    in_predictions = confusion.sum(dim=0)
    union = in_labels + in_predictions - true_positive
    occurs = union > 0
    iou = torch.where(occurs, true_positive / union.clamp(min=1), torch.full_like(union, math.nan))
    if not occurs.any():
        return math.nan, iou
    miou = iou[in_labels > 0].sum() / occurs.sum()
    return float(miou), iou


@torch.no_grad()
def pixel_accuracy(prediction: Tensor, label: Tensor) -> Tensor:
    """Share of the labelled pixels (label != 255) where ``prediction == label``; NaN with none.

    Args:
        prediction: (B,H,W) int64 class ids.
        label: (B,H,W) int64 class ids or 255.

    Returns:
        Scalar float32 in [0, 1].
    """
    valid = label != IGNORE_INDEX
    return ((prediction == label) & valid).sum().float() / valid.sum().float()

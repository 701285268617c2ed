"""The mIoU rule (METHOD.md §6) against torchmetrics, and the pixel accuracy."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from madm_pl.method.metrics import miou_from_confusion, pixel_accuracy


def test_miou_rule():
    confusion = torch.tensor([[3, 1, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])  # rows = gt
    miou, iou = miou_from_confusion(confusion)
    assert iou[0].item() == pytest.approx(3 / 5)  # TP 3, FN 2, FP 0
    assert iou[1].item() == pytest.approx(2 / 3)  # TP 2, FN 0, FP 1
    assert iou[2].item() == 0.0  # predicted, absent from the labels: counts 0
    assert math.isnan(iou[3].item())  # absent from both: skipped
    assert miou == pytest.approx((3 / 5 + 2 / 3) / 3)
    assert math.isnan(miou_from_confusion(torch.zeros(3, 3, dtype=torch.int64))[0])


def test_miou_with_torchmetrics_confusion_and_ignore():
    target = torch.tensor([[0, 0, 1, 255, 255]])
    preds = torch.tensor([[0, 2, 1, 3, 0]])  # predictions on ignored pixels are dropped
    confusion = MulticlassConfusionMatrix(num_classes=4, ignore_index=255)
    confusion.update(preds, target)
    matrix = confusion.compute()
    assert matrix.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]  # rows = target
    miou, iou = miou_from_confusion(matrix)
    assert miou == pytest.approx((0.5 + 1.0) / 3)
    assert iou[2].item() == 0.0 and math.isnan(iou[3].item())
    # torchmetrics' per-class IoU reports 0 (zero_division) for a class absent from both; its macro
    # average skips such classes, so it agrees with the rule here.
    per_class = MulticlassJaccardIndex(num_classes=4, average=None, ignore_index=255)
    assert per_class(preds, target).tolist() == [0.5, 1.0, 0.0, 0.0]
    macro = MulticlassJaccardIndex(num_classes=4, average="macro", ignore_index=255)
    assert macro(preds, target).item() == pytest.approx(miou)


def test_pixel_accuracy_counts_labelled_pixels_only() -> None:
    prediction = torch.tensor([[[0, 1], [2, 3]]])
    label = torch.tensor([[[0, 1], [255, 0]]])  # 3 labelled pixels, 2 right; the 255 one is skipped
    assert pixel_accuracy(prediction, label).item() == pytest.approx(2 / 3)
    assert pixel_accuracy(prediction, torch.full_like(label, 255)).isnan()

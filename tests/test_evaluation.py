"""evaluation.py: the scores of a test split and of the reference's share, and what is logged."""

from __future__ import annotations

import math

import pytest
import torch

from madm_pl.evaluation import REFERENCE_PROTOCOL, SegmentationScores, confusion_counts, log_scores


def test_confusion_counts_rows_are_the_ground_truth_and_ignore_255():
    label = torch.tensor([[0, 0, 1, 255]])
    prediction = torch.tensor([[0, 1, 1, 0]])
    assert confusion_counts(prediction, label, 3).tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_scores_of_the_split_and_of_the_reference_share():
    scores = SegmentationScores(num_classes=2)
    label = torch.tensor([[[0, 0]], [[1, 1]]])  # two 1x2 images
    prediction = torch.tensor([[[0, 0]], [[0, 1]]])
    scores.update(prediction, label, in_reference_share=torch.tensor([True, False]))
    result = scores.compute()
    # class 0: TP 2, FP 1 -> 2/3; class 1: TP 1, FN 1 -> 1/2
    assert result["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert result["confusion"].tolist() == [[2, 0], [1, 1]]
    # the share is image 0 only: class 0 perfect, class 1 absent from labels and predictions
    share = result[REFERENCE_PROTOCOL]
    assert share["miou"] == pytest.approx(1.0) and math.isnan(share["iou"][1])
    scores.reset()
    scores.update(prediction, label)  # a split without a share (your own images)
    assert REFERENCE_PROTOCOL not in scores.compute()


def test_log_scores_in_percent_rounded_once_absent_classes_skipped():
    logged: dict[str, float] = {}
    scores = {
        "miou": 0.196951,
        "iou": torch.tensor([0.39390, math.nan], dtype=torch.float64),
        REFERENCE_PROTOCOL: {"miou": 0.5, "iou": torch.tensor([0.5, 0.5], dtype=torch.float64)},
    }

    def log(key: str, value: float, **kwargs: object) -> None:
        logged[key] = value

    log_scores(log, "val", ("sky", "traffic sign"), scores)
    assert logged == {
        "val/miou": 19.7,
        "val_iou/sky": 39.39,
        "val/miou_reference_protocol": 50.0,
        "val_iou/sky_reference_protocol": 50.0,
        "val_iou/traffic_sign_reference_protocol": 50.0,
    }

"""The linear probe's score follows the project's mIoU rule (a class only predicted counts 0)."""

import pytest
import torch

from benchmarks import prior_probe


def test_probe_miou_counts_a_class_only_predicted_as_zero() -> None:
    prediction = torch.tensor([0, 0, 1, 2])
    target = torch.tensor([0, 1, 1, 1])
    # class 0: IoU 1/2; class 1: 1/3; class 2 predicted but absent from the labels: 0, in the mean
    assert prior_probe.miou(prediction, target) == pytest.approx(100 * (1 / 2 + 1 / 3) / 3)

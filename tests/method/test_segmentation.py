"""The pixel-weighted cross-entropy (METHOD.md §4.2 and §4.5) by hand."""

from __future__ import annotations

import math

import pytest
import torch

from madm_pl.labels import IGNORE_INDEX
from madm_pl.method.segmentation import segmentation_loss


def test_segmentation_loss_by_hand():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, 0, 0] = 2.0  # [2, 0], label 0: log(1 + e^-2)
    logits[0, 1, 1, 1] = 1.0  # [0, 1], label 0: log(1 + e)
    label = torch.tensor([[[0, 1], [IGNORE_INDEX, 0]]])  # (0,1): [0, 0], label 1: log 2
    l00, l01, l11 = math.log(1 + math.exp(-2)), math.log(2), math.log(1 + math.e)
    # Mean over all 4 pixels, the ignored one counting 0.
    assert segmentation_loss(logits, label).item() == pytest.approx((l00 + l01 + l11) / 4, rel=1e-6)
    weight = torch.tensor([[[1.0, 0.5], [1.0, 0.25]]])
    expected = (l00 + 0.5 * l01 + 0.25 * l11) / 4
    assert segmentation_loss(logits, label, weight).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="resolution"):
        segmentation_loss(torch.zeros(1, 2, 4, 4), label)

"""LPLR (METHOD.md §4.2): the painted label and the masked L1 between latents."""

from __future__ import annotations

import pytest
import torch

from madm_pl.labels import get_task
from madm_pl.method.lplr import lplr_loss, painted_label


def test_painted_label_known_pixels_to_known_colours():
    palette = torch.tensor([[255, 0, 0], [0, 255, 0], [70, 130, 180]], dtype=torch.uint8)
    painted = painted_label(torch.tensor([[[0, 1], [255, 2]]]), palette)
    assert painted.shape == (1, 3, 2, 2) and painted.dtype == torch.float32 and painted.is_contiguous()
    assert painted[0, :, 0, 0].tolist() == [1.0, -1.0, -1.0]
    assert painted[0, :, 0, 1].tolist() == [-1.0, 1.0, -1.0]
    assert painted[0, :, 1, 0].tolist() == [-1.0, -1.0, -1.0]  # ignore is black
    assert torch.allclose(painted[0, :, 1, 1], torch.tensor([70, 130, 180]) / 255 * 2 - 1)
    # Ids past the palette are black too; the task palettes (numpy) are accepted.
    task = get_task("rgb2infrared")
    beyond = painted_label(torch.tensor([[[task.num_classes]]]), task.palette)
    assert beyond.flatten().tolist() == [-1.0, -1.0, -1.0]


def test_lplr_loss_normalisation_by_hand():
    # Label (2,4) -> latent (1,2), nearest: samples label[0,0] (valid) and label[0,2] (ignored).
    label = torch.tensor([[[0, 255, 255, 1], [1, 1, 1, 1]], [[2, 2, 2, 2], [2, 2, 2, 2]]])
    pred = torch.arange(16.0).reshape(2, 4, 1, 2)
    target = torch.zeros(2, 4, 1, 2)
    # Sample 0 keeps column 0 of each channel: 0 + 2 + 4 + 6; sample 1 keeps all: 8 + ... + 15.
    kept0, kept1 = 0 + 2 + 4 + 6, sum(range(8, 16))
    denominator = 2 * 4 * 1 * 2  # B * 4 * h * w, not the mask sum
    assert lplr_loss(pred, target, label).item() == pytest.approx((kept0 + kept1) / denominator)
    weighted = lplr_loss(pred, target, label, weight=torch.tensor([0.5, 0.25]))
    assert weighted.item() == pytest.approx((0.5 * kept0 + 0.25 * kept1) / denominator)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    lplr_loss(pred, target, label).backward()
    assert target.grad is None  # the painted label is a target, never a gradient path
    assert pred.grad[0, :, 0, 1].abs().sum() == 0  # ignored cell
    with pytest.raises(ValueError):
        lplr_loss(pred, target[:, :3], label)

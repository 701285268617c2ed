"""Pseudo-labels, their weight q and the mixed label's weight (METHOD.md §4.4)."""

from __future__ import annotations

import math

import pytest
import torch

from madm_pl.method.pseudo_label import mixed_weight, pseudo_label, pseudo_labels


def test_pseudo_label_weight_per_sample():
    logits = torch.zeros(2, 2, 2, 2)
    logits[0, 1] = torch.tensor([[10.0, 10.0], [10.0, 0.0]])  # p = 0.99995 on 3 pixels, 0.5 on one
    logits[1, 0] = 1.0  # p = 0.731 everywhere
    label, weight = pseudo_label(logits)
    assert label.dtype == torch.int64
    assert label[0].tolist() == [[1, 1], [1, 0]]  # ties go to the first class
    assert label[1].tolist() == [[0, 0], [0, 0]]
    assert weight.tolist() == [0.75, 0.0]
    # The threshold is inclusive: softmax of equal logits is exactly 0.5.
    assert pseudo_label(torch.zeros(1, 2, 2, 2), threshold=0.5)[1].tolist() == [1.0]


def test_the_confident_pixels_are_the_pixels_counted_in_q():
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1] = torch.tensor([math.log(3.0), math.log(4.0), 0.0])  # p = 0.75, 0.8, 0.5
    labels = pseudo_labels(logits, threshold=0.76)
    assert labels.confident.dtype == torch.bool and labels.confident.tolist() == [[[False, True, False]]]
    assert labels.label.tolist() == [[[1, 1, 0]]]  # the tie (p = 0.5) goes to the first class
    assert labels.weight.item() == pytest.approx(1 / 3) == pseudo_label(logits, threshold=0.76)[1].item()
    assert pseudo_labels(logits, threshold=0.5).confident.tolist() == [[[True, True, True]]]  # inclusive


def test_pseudo_labels_take_one_softmax(monkeypatch: pytest.MonkeyPatch):
    calls = []
    softmax = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda *a, **k: calls.append(1) or softmax(*a, **k))
    pseudo_labels(torch.zeros(1, 2, 2, 2), threshold=0.5)
    assert len(calls) == 1


def test_mixed_weight():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    weight = mixed_weight(mask, torch.tensor([0.3, 0.0]))
    assert torch.allclose(weight[0], torch.tensor([[1.0, 0.3], [0.3, 1.0]]))
    assert torch.allclose(weight[1], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))

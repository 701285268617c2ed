"""``datasets/fmb.py``: unlabelled train split, mapped test labels, single channel repeated."""

from __future__ import annotations

import torch

from madm_pl.data.datasets import FMBInfraredDataset
from tests.fake_trees import FakeTree, image_value, label_halves


def test_fmb_train_unlabelled_and_test_mapped(fmb_tree: FakeTree) -> None:
    train = FMBInfraredDataset(fmb_tree.root, "train", "rgb2infrared")
    assert len(train) == 3
    assert set(train[0]) == {"image", "name"}
    assert train.load(1).label is None
    image = train[1]["image"]
    assert image.shape == (3, 16, 32)  # single channel repeated
    assert torch.allclose(image, torch.full_like(image, image_value(1) / 255))
    test = FMBInfraredDataset(fmb_tree.root, "test", "rgb2infrared")
    # FMB road|car -> 4|7, sky|pole -> 0|3
    assert [label_halves(test[i]["label"]) for i in range(2)] == [(4, 7), (0, 3)]
    assert test[1]["name"] == "test/Infrared/00101"

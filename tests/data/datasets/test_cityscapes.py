"""``datasets/cityscapes.py``: the source labels remapped with the task."""

from __future__ import annotations

import torch

from madm_pl.data.datasets import CityscapesDataset
from tests.fake_trees import FakeTree, image_value, label_halves


def test_cityscapes_remaps_with_the_task(cityscapes_tree: FakeTree) -> None:
    depth = CityscapesDataset(cityscapes_tree.root, "train", "rgb2depth")
    infrared = CityscapesDataset(cityscapes_tree.root, "train", "rgb2infrared")
    assert len(depth) == 3
    # road|car -> 5|8 (11 classes), 4|7 (9 classes); building|bicycle -> 1|8 and 1|7
    assert label_halves(depth[0]["label"]) == (5, 8)
    assert label_halves(infrared[0]["label"]) == (4, 7)
    assert label_halves(infrared[2]["label"]) == (1, 7)
    assert label_halves(depth.load(1, remap_label=False).label) == (10, 11)  # stored train ids
    item = depth[2]
    assert set(item) == {"image", "label", "name"}
    assert item["image"].shape == (3, 32, 64)
    assert item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64
    assert torch.allclose(item["image"], torch.full((3, 32, 64), image_value(2) / 255))
    assert item["name"] == "leftImg8bit/train/aachen/aachen_000002_000019_leftImg8bit"

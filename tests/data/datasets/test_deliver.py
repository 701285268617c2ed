"""``datasets/deliver.py``: every condition scanned, labels from channel 0 minus 1."""

from __future__ import annotations

from madm_pl.data.datasets import DeliverDepthDataset
from tests.fake_trees import FakeTree, label_halves


def test_deliver_uses_channel0_minus_one(deliver_tree: FakeTree) -> None:
    train = DeliverDepthDataset(deliver_tree.root, "train", "rgb2depth")
    assert [
        p.relative_to(deliver_tree.root).as_posix() for p in train.image_paths
    ] == deliver_tree.train_images
    test = DeliverDepthDataset(deliver_tree.root, "test", "rgb2depth")
    assert len(test) == 2
    # conditions sort cloud < sun: stored 1|13 (cloud) -> building|sky = 1|0; 7|255 (sun) -> road|ignore
    assert label_halves(test[0]["label"]) == (1, 0)
    assert label_halves(test[1]["label"]) == (5, 255)
    assert test[0]["name"].startswith("depth/cloud/test/MAP_1_point102/")

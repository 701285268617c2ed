"""Fake Cityscapes, the source of every task."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.fake_trees.common import FakeTree, fake_image, write_png


def write_cityscapes(
    root: Path, labels: list[np.ndarray], split: str = "train", city: str = "aachen"
) -> FakeTree:
    """Cityscapes: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` + ``gtFine/...labelTrainIds.png``.

    Args:
        root: dataset root.
        labels: one (H,W) uint8 array of Cityscapes train ids per image.
    """
    tree = FakeTree(root)
    for i, label in enumerate(labels):
        stem = f"{city}_{i:06d}_000019"
        image = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
        label_path = f"gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png"
        write_png(root / image, fake_image(label.shape, i))
        write_png(root / label_path, label)
        tree.train_images.append(image)
        tree.train_labels.append(label_path)
    return tree

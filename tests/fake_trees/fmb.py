"""Fake FMB infrared, the target of rgb2infrared."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.fake_trees.common import FakeTree, fake_image, write_png


def write_fmb(
    root: Path, test_labels: list[np.ndarray], train_count: int = 2, size: tuple[int, int] = (16, 32)
) -> FakeTree:
    """FMB: ``train/Infrared/*.png``; ``test/Infrared/*.png`` + ``test/Label/*.png`` (ids 0..14).

    Infrared images are single-channel ("L").
    """
    tree = FakeTree(root)
    for i in range(train_count):
        name = f"train/Infrared/{i + 1:05d}.png"
        write_png(root / name, fake_image(size, i, channels=1))
        tree.train_images.append(name)
    for i, label in enumerate(test_labels):
        name = f"{100 + i:05d}.png"
        write_png(root / "test/Infrared" / name, fake_image(label.shape, i, channels=1))
        write_png(root / "test/Label" / name, label)
        tree.test_images.append(f"test/Infrared/{name}")
        tree.test_labels.append(f"test/Label/{name}")
    return tree

"""Fake DSEC edge images, the target of rgb2event."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.fake_trees.common import FakeTree, fake_image, write_png


def write_dsec(
    root: Path,
    test_labels: list[np.ndarray],
    train_count: int = 2,
    size: tuple[int, int] = (16, 32),
    train_sequence: str = "zurich_city_00_a",
    test_sequence: str = "zurich_city_13_a",
) -> FakeTree:
    """DSEC: ``69mask_train_edges/<seq>/*.png``; ``69mask_test_edges/<seq>/*.png`` with
    ``test_semantic_labels/<seq>/11classes/*.png`` (11-class ids). Edge images are RGBA (alpha 255)."""
    tree = FakeTree(root)
    for i in range(train_count):
        name = f"69mask_train_edges/{train_sequence}/{2 * (i + 1):06d}.png"
        write_png(root / name, fake_image(size, i, channels=4))
        tree.train_images.append(name)
    for i, label in enumerate(test_labels):
        name = f"{i + 1:06d}.png"
        image = f"69mask_test_edges/{test_sequence}/{name}"
        label_path = f"test_semantic_labels/{test_sequence}/11classes/{name}"
        write_png(root / image, fake_image(label.shape, i, channels=4))
        write_png(root / label_path, label)
        tree.test_images.append(image)
        tree.test_labels.append(label_path)
    return tree

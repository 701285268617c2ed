"""A fake folder of your own images (``ImageFolderDataset``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.fake_trees.common import FakeTree, fake_image, write_png


def write_image_folder(
    root: Path,
    test_labels: list[np.ndarray] | None = None,
    train_count: int = 2,
    size: tuple[int, int] = (16, 32),
    train_suffix: str = ".jpg",
) -> FakeTree:
    """Your own modality: ``train/*<train_suffix>``; ``test/images/*.png`` + ``test/labels/*.png``
    with raw ids. No test folders when ``test_labels`` is None."""
    tree = FakeTree(root)
    for i in range(train_count):
        name = f"train/cam/frame_{i:03d}{train_suffix}"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fake_image(size, i)).save(path)
        tree.train_images.append(name)
    for i, label in enumerate(test_labels or []):
        write_png(root / f"test/images/frame_{i:03d}.png", fake_image(label.shape, i))
        write_png(root / f"test/labels/frame_{i:03d}.png", label)
        tree.test_images.append(f"test/images/frame_{i:03d}.png")
        tree.test_labels.append(f"test/labels/frame_{i:03d}.png")
    return tree

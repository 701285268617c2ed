"""Fake DELIVER depth, the target of rgb2depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.fake_trees.common import FakeTree, fake_image, write_png


def write_deliver(
    root: Path,
    test_labels: list[np.ndarray],
    train_count: int = 2,
    size: tuple[int, int] = (16, 32),
    conditions: tuple[str, ...] = ("cloud", "sun"),
) -> FakeTree:
    """DELIVER: ``depth/<cond>/<split>/MAP_1_point102/<id>_depth_front.png``; test labels
    ``semantic/<cond>/test/MAP_1_point102/<id>_semantic_front.png`` as RGB with channel 0 = the given
    stored ids (DELIVER id + 1) and channels 1, 2 = 7 (must be ignored).

    Images are spread over ``conditions`` in turn; the returned lists are sorted as a scan sorts them.
    """
    tree = FakeTree(root)
    for i in range(train_count):
        condition = conditions[i % len(conditions)]
        name = f"depth/{condition}/train/MAP_1_point102/{1000 + 50 * i:06d}_depth_front.png"
        write_png(root / name, fake_image(size, i))
        tree.train_images.append(name)
    pairs = []
    for i, label in enumerate(test_labels):
        condition = conditions[i % len(conditions)]
        stem = f"{2000 + 50 * i:06d}"
        image = f"depth/{condition}/test/MAP_1_point102/{stem}_depth_front.png"
        label_path = f"semantic/{condition}/test/MAP_1_point102/{stem}_semantic_front.png"
        write_png(root / image, fake_image(label.shape, i))
        other = np.full(label.shape, 7, dtype=np.uint8)
        write_png(root / label_path, np.stack([label, other, other], axis=-1))
        pairs.append((image, label_path))
    tree.train_images.sort()
    for image, label_path in sorted(pairs):
        tree.test_images.append(image)
        tree.test_labels.append(label_path)
    return tree

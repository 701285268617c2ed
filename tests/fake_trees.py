"""Tiny fake datasets in the real on-disk layouts (SPEC section 1), with chosen label ids.

Every writer returns a ``FakeTree``: the root and the written image / label paths relative to it, in
sorted order (the order a folder scan gives). Image ``i`` of a split is filled with the grey value
``image_value(i)`` (all channels), so a test can tell which file was read; labels are written as
given (8-bit ids). Nothing here imports madm_pl: the trees are independent of the code under test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class FakeTree:
    """A written fake dataset: paths relative to ``root``."""

    root: Path
    train_images: list[str] = field(default_factory=list)
    train_labels: list[str] = field(default_factory=list)
    test_images: list[str] = field(default_factory=list)
    test_labels: list[str] = field(default_factory=list)


def image_value(index: int) -> int:
    """Grey value of fake image ``index`` (distinct for 0..9)."""
    return 30 + 20 * index


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write an 8-bit (H,W), (H,W,3) or (H,W,4) array as PNG (L, RGB, RGBA)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def fake_image(shape: tuple[int, int], index: int, channels: int = 3) -> np.ndarray:
    """(H,W,channels) or (H,W) for channels=1, uint8, every pixel ``image_value(index)``; alpha 255."""
    value = np.full(shape, image_value(index), dtype=np.uint8)
    if channels == 1:
        return value
    planes = [value] * 3 + ([np.full(shape, 255, np.uint8)] if channels == 4 else [])
    return np.stack(planes, axis=-1)


def _label_shape(labels: list[np.ndarray], default: tuple[int, int]) -> tuple[int, int]:
    return tuple(labels[0].shape[:2]) if labels else default


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


def write_file_list(
    path: Path,
    source: tuple[list[str], list[str]] | None = None,
    target_images: list[str] | None = None,
    target_labels: list[str] | None = None,
) -> Path:
    """A reference-format JSON list: ``source_data`` RGB/label, ``target_data`` second_modality/label."""
    content: dict = {}
    if source is not None:
        content["source_data"] = {"RGB": source[0], "label": source[1]}
    if target_images is not None:
        content["target_data"] = {"second_modality": target_images}
        if target_labels is not None:
            content["target_data"]["label"] = target_labels
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def split_label(shape: tuple[int, int], left: int, right: int, column: int | None = None) -> np.ndarray:
    """(H,W) uint8: ``left`` id left of ``column`` (default W/2), ``right`` id from there on."""
    label = np.full(shape, left, dtype=np.uint8)
    label[:, shape[1] // 2 if column is None else column :] = right
    return label

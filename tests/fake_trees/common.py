"""What every fake tree shares: the ``FakeTree`` record, the grey image values, the PNG writer, the
reference's JSON file lists, and labels split into a left and a right id (written and read back)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch


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


def label_halves(label: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(left-top id, right-bottom id) of a (H,W) label: the two ids of ``split_label`` read back."""
    return int(label[0, 0]), int(label[-1, -1])

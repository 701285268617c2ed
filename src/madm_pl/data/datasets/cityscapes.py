"""Cityscapes, the labelled RGB source of every task."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from madm_pl.data.datasets.base import Sample, SegmentationDataset, swap_prefix


class CityscapesDataset(SegmentationDataset):
    """Cityscapes RGB, the labelled source (METHOD.md §1).

    Layout: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png`` (19 train ids + 255). Labels are mapped
    with ``task.source_map``; ``load(i, remap_label=False)`` keeps the 19 train ids (for RCS).
    With ``file_list``, the ``source_data`` lists ``RGB`` and ``label`` are read. Both splits are
    labelled.

    Items: ``image`` (3,H,W) float32 in [0,1] (the 8-bit RGB), ``label`` (H,W) int64 task train ids
    (0..C-1, the task's 9 or 11 classes) or 255, ``name`` e.g.
    ``"leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit"``.
    """

    dataset_name = "Cityscapes"
    splits = ("train", "val")
    labelled_splits = ("train", "val")
    file_list_section = "source_data"
    file_list_image_key = "RGB"

    def _label_table(self) -> np.ndarray:
        return self.task.source_map

    def _folders(self) -> list[str]:
        return [f"leftImg8bit/{self.split}", f"gtFine/{self.split}"]

    def _scan(self) -> list[Path]:
        return sorted((self.root / "leftImg8bit" / self.split).glob("*/*_leftImg8bit.png"))

    def _label_of(self, relative_image: Path) -> Path:
        relative = swap_prefix(relative_image, ("leftImg8bit",), ("gtFine",))
        name = relative.name.removesuffix("_leftImg8bit.png") + "_gtFine_labelTrainIds.png"
        return relative.with_name(name)

    def load(self, index: int, remap_label: bool = True) -> Sample:
        """As ``SegmentationDataset.load``; with ``remap_label=False`` the label keeps the stored
        Cityscapes train ids 0..18 / 255 (still checked against the map)."""
        return self._load(index, decode=remap_label)

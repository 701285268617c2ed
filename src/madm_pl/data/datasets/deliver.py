"""DELIVER depth, the target of rgb2depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from madm_pl.data.datasets.base import TargetDataset, swap_prefix
from madm_pl.labels import deliver_semantic_to_11

DELIVER_CONDITIONS: tuple[str, ...] = ("cloud", "fog", "night", "rain", "sun")


class DeliverDepthDataset(TargetDataset):
    """DELIVER depth, target of rgb2depth (METHOD.md §1).

    Layout: ``depth/{cloud,fog,night,rain,sun}/{train,test}/MAP_*/<id>_depth_front.png``; labels
    ``semantic/<condition>/<split>/MAP_*/<id>_semantic_front.png`` (read for test, and for train when
    ``labelled=True``), channel 0 minus 1, then mapped to the 11 classes
    (``labels.deliver_semantic_to_11``; stored 255 stays ignore, channels 1 and 2 are not read).
    The conditions are ``DELIVER_CONDITIONS``; a scan sorts the images of all of them together.

    Items: ``image`` (3,H,W) float32 in [0,1] (the depth PNG as ``io.read_image`` gives it: grey
    repeated to 3 channels, more than 8 bits by the ``image_scaling`` rule), ``label`` (H,W) int64
    11-class train ids or 255 (labelled splits only), ``name`` e.g.
    ``"depth/cloud/test/MAP_1_point102/002000_depth_front"``.
    """

    dataset_name = "DELIVER"
    kind = "deliver"
    reference_protocol = True

    def _folders(self) -> list[str]:
        return ["depth", "semantic"] if self.has_labels else ["depth"]

    def _scan(self) -> list[Path]:
        found: list[Path] = []
        for condition in DELIVER_CONDITIONS:
            found += (self.root / "depth" / condition / self.split).glob("*/*_depth_front.png")
        return sorted(found)

    def _label_of(self, relative_image: Path) -> Path:
        relative = swap_prefix(relative_image, ("depth",), ("semantic",))
        return relative.with_name(relative.name.replace("_depth_front", "_semantic_front"))

    def _decode_label(self, stored: np.ndarray, path: Path) -> np.ndarray:
        try:
            return deliver_semantic_to_11(stored)
        except ValueError as error:
            raise ValueError(
                f"label '{path}': {error} (after DELIVER's minus 1); fix the label file"
            ) from None

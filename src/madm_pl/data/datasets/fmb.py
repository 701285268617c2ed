"""FMB infrared, the target of rgb2infrared."""

from __future__ import annotations

from pathlib import Path

from madm_pl.data.datasets.base import TargetDataset


class FMBInfraredDataset(TargetDataset):
    """FMB infrared, target of rgb2infrared (METHOD.md §1).

    Layout: ``{train,test}/Infrared/*.png`` with ``{train,test}/Label/*.png`` (ids 0..14, mapped by
    ``labels.FMB_TO_9``, 0 "unlabeled" to 255; read for test, and for train when ``labelled=True``).

    Items: ``image`` (3,H,W) float32 in [0,1] (a single-channel infrared image repeated to 3
    channels), ``label`` (H,W) int64 9-class train ids or 255 (labelled splits only), ``name`` e.g.
    ``"test/Infrared/00043"``.
    """

    dataset_name = "FMB"
    kind = "fmb"
    reference_protocol = True

    def _folders(self) -> list[str]:
        folders = [f"{self.split}/Infrared"]
        return [*folders, f"{self.split}/Label"] if self.has_labels else folders

    def _scan(self) -> list[Path]:
        return sorted((self.root / self.split / "Infrared").glob("*.png"))

    def _label_of(self, relative_image: Path) -> Path:
        return relative_image.parent.parent / "Label" / relative_image.name

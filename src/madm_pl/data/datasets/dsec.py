"""DSEC events as edge images, the target of rgb2event."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from madm_pl.data.datasets.base import DataOption, TargetDataset
from madm_pl.data.io import ImageScaling
from madm_pl.data.reference import DSEC_FRAME_CHOICES, DSEC_REFERENCE_RULES, is_dsec_reference_frame
from madm_pl.labels import Task


class DSECEventDataset(TargetDataset):
    """DSEC events as edge images, target of rgb2event (METHOD.md §1).

    Layout: ``69mask_{train,test}_edges/<sequence>/<frame>.png`` (6-digit frame numbers) with
    ``{train,test}_semantic_labels/<sequence>/11classes/<same name>.png`` (already 11-class ids; read for
    test, and for train when ``labelled=True``). ``test_semantic_labels`` is the reference's folder;
    ``train_semantic_labels`` mirrors it and is unverified against a real DSEC download (the synthetic
    world writes it). A scan takes every sequence folder present; with ``frames="reference"`` it keeps
    only the frames the reference's lists hold (``reference.DSEC_REFERENCE_FRAMES``: train the even
    frames from 000002, test every frame from 000001) and counts the others in ``frames_dropped``. A
    file list is used as it is (it is the selection).

    Items: ``image`` (3,H,W) float32 in [0,1] (the edge image's RGB; an alpha channel is dropped),
    ``label`` (H,W) int64 11-class train ids or 255, as stored (labelled splits only), ``name``
    e.g. ``"69mask_test_edges/zurich_city_13_a/000001"``.

    Args:
        root, split, task, file_list, option, labelled, image_scaling, strict: as
            ``SegmentationDataset``.
        frames: ``"all"`` (every frame found) or ``"reference"`` (the reference's frame rule); the
            datamodule's ``data.dsec_frames`` (``data_options``).
    """

    dataset_name = "DSEC"
    kind = "dsec"
    reference_protocol = True
    data_options: ClassVar[dict[str, str]] = {"dsec_frames": "frames"}

    def __init__(
        self,
        root: str | Path,
        split: str,
        task: Task | str,
        file_list: str | Path | None = None,
        *,
        option: str = "root",
        labelled: bool | None = None,
        image_scaling: ImageScaling | None = None,
        strict: bool = True,
        frames: str = "all",
    ) -> None:
        self.check_option(DataOption("dsec_frames", frames, "data.dsec_frames"))
        self.frames = frames
        #: Frames found by the scan but not in the reference's rule (0 for "all" and for file lists).
        self.frames_dropped = 0
        super().__init__(
            root,
            split,
            task,
            file_list,
            option=option,
            labelled=labelled,
            image_scaling=image_scaling,
            strict=strict,
        )

    @classmethod
    def check_option(cls, option: DataOption) -> None:
        if option.name == "dsec_frames" and option.value not in DSEC_FRAME_CHOICES:
            raise ValueError(f"{option.option}={option.value!r}: expected one of {list(DSEC_FRAME_CHOICES)}")

    def _edges(self) -> str:
        return f"69mask_{self.split}_edges"

    def _labels(self) -> str:
        return f"{self.split}_semantic_labels"

    def _folders(self) -> list[str]:
        return [self._edges(), self._labels()] if self.has_labels else [self._edges()]

    def _scan(self) -> list[Path]:
        found = sorted((self.root / self._edges()).glob("*/*.png"))
        if self.frames == "all" or not found:
            return found
        for path in found:
            if not path.stem.isdigit():
                raise ValueError(
                    f"DSEC frame '{path}' has no frame number: data.dsec_frames='reference' selects by the "
                    "6-digit frame number of the file name; rename the file or use data.dsec_frames='all'"
                )
        kept = [path for path in found if is_dsec_reference_frame(int(path.stem), self.split)]
        self.frames_dropped = len(found) - len(kept)
        if not kept:
            raise ValueError(
                f"data.dsec_frames='reference' keeps none of the {len(found)} DSEC {self.split} frames under "
                f"{self.option}='{self.root}' (it keeps {DSEC_REFERENCE_RULES[self.split]} of each "
                "sequence); check the folder or use data.dsec_frames='all'"
            )
        return kept

    def _label_of(self, relative_image: Path) -> Path:
        sequence = relative_image.parent.name
        return Path(self._labels(), sequence, "11classes", relative_image.name)

    def frame_selection(self) -> str | None:
        """What ``frames="reference"`` kept and dropped, in one line; None when it selected nothing."""
        if self.frames != "reference" or self.file_list is not None:
            return None
        return (
            f"DSEC {self.split}: kept {len(self)} frames, dropped {self.frames_dropped} (data.dsec_frames="
            f"'reference': {DSEC_REFERENCE_RULES[self.split]} of each sequence, as the reference's list)"
        )

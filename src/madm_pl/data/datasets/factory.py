"""The target dataset of a task, by ``data.target_kind``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from madm_pl.data.datasets.base import SegmentationDataset, as_task
from madm_pl.data.datasets.deliver import DeliverDepthDataset
from madm_pl.data.datasets.dsec import DSECEventDataset
from madm_pl.data.datasets.fmb import FMBInfraredDataset
from madm_pl.data.datasets.folder import ImageFolderDataset
from madm_pl.data.io import ImageScaling
from madm_pl.labels import Task

TARGET_KINDS: dict[str, type[SegmentationDataset]] = {
    "deliver": DeliverDepthDataset,
    "fmb": FMBInfraredDataset,
    "dsec": DSECEventDataset,
    "folder": ImageFolderDataset,
}


def build_target_dataset(
    task: Task | str,
    root: str | Path,
    split: str,
    kind: str | None = None,
    file_list: str | Path | None = None,
    label_map: str | Path | None = None,
    option: str = "data.target_root",
    labelled: bool | None = None,
    dsec_frames: str = "all",
    image_scaling: ImageScaling | None = None,
    strict: bool = True,
) -> SegmentationDataset:
    """The target dataset of a task.

    Args:
        task: task name or ``labels.Task``.
        root: target data root.
        split: ``"train"`` (unlabelled unless ``labelled``) or ``"test"`` (labelled).
        kind: ``"deliver"``, ``"fmb"``, ``"dsec"`` or ``"folder"``; None = the task's dataset.
        file_list: reference JSON list, or None to scan.
        label_map: YAML label map, only for ``kind="folder"``.
        option: config option of ``root``, named in errors.
        labelled: as ``SegmentationDataset``; True reads the train split's labels too (set by
            ``data.target_train_labels``, which errors about missing labels then name).
        dsec_frames: ``"all"`` or ``"reference"``, the frame rule of ``DSECEventDataset``; only for
            ``kind="dsec"``.
        image_scaling, strict: as ``SegmentationDataset``.

    Returns:
        The dataset.

    Raises:
        ValueError: unknown kind, a label map given for a real dataset, or ``dsec_frames`` other than
            "all" for another kind than DSEC.
        FileNotFoundError: as the dataset classes (with ``labelled``, naming data.target_train_labels).
    """
    task = as_task(task)
    kind = task.target_dataset if kind is None else kind
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown data.target_kind {kind!r}: expected one of {sorted(TARGET_KINDS)}")
    if kind != "folder" and label_map is not None:
        raise ValueError(f"data.label_map applies only to data.target_kind='folder', not {kind!r}; remove it")
    if kind != "dsec" and dsec_frames != "all":
        raise ValueError(
            f"data.dsec_frames={dsec_frames!r} applies only to DSEC (data.target_kind='dsec'), not {kind!r}; "
            "set data.dsec_frames='all'"
        )
    extra: dict[str, Any] = {"label_map": label_map} if kind == "folder" else {}
    if kind == "dsec":
        extra["frames"] = dsec_frames
    try:
        return TARGET_KINDS[kind](
            root,
            split,
            task,
            file_list,
            option=option,
            labelled=labelled,
            image_scaling=image_scaling,
            strict=strict,
            **extra,
        )
    except (FileNotFoundError, ValueError) as error:
        if not labelled or split != "train":
            raise
        kind_of_error = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
        raise kind_of_error(
            f"{error} (data.target_train_labels=true reads the target training labels too: add them, "
            "or set data.target_train_labels=false)"
        ) from None

"""The target dataset of a task, by ``data.target_kind``: the registry (each dataset class's ``kind``),
the class of a kind or of a dotted path, and ``build_target_dataset``.

The checks of the options are the dataset classes' own (``TargetDataset.init_options``); nothing here
knows a kind by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from madm_pl.data.datasets.base import DataOption, SegmentationDataset, TargetDataset, as_task

# The built-in target datasets register themselves by being defined (TargetDataset.registry).
from madm_pl.data.datasets.deliver import DeliverDepthDataset  # noqa: F401
from madm_pl.data.datasets.dsec import DSECEventDataset  # noqa: F401
from madm_pl.data.datasets.fmb import FMBInfraredDataset  # noqa: F401
from madm_pl.data.datasets.folder import ImageFolderDataset  # noqa: F401
from madm_pl.data.io import ImageScaling
from madm_pl.labels import Task

#: kind -> class of every target dataset defined so far (the same dict as ``TargetDataset.registry``,
#: so a dataset of your own, imported through its dotted ``data.target_kind``, is in it too).
TARGET_KINDS: dict[str, type[TargetDataset]] = TargetDataset.registry


def target_dataset_class(kind: str) -> type[TargetDataset]:
    """The dataset class of ``data.target_kind``: a registered kind (``"fmb"``) or the dotted path of a
    ``TargetDataset`` subclass (``"my_package.radar.RadarDataset"``: your own modality in one file).

    Raises:
        ValueError: an unknown kind, a path that does not import, or not a ``TargetDataset`` with a kind.
    """
    if kind in TARGET_KINDS:
        return TARGET_KINDS[kind]
    expected = f"expected one of {sorted(TARGET_KINDS)} or the dotted path of a TargetDataset subclass"
    if "." not in kind:
        raise ValueError(f"unknown data.target_kind {kind!r}: {expected}")
    module, _, name = kind.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"data.target_kind {kind!r} does not import ({error}); {expected}") from None
    if not (isinstance(found, type) and issubclass(found, TargetDataset) and "kind" in vars(found)):
        raise ValueError(
            f"data.target_kind {kind!r} is not a TargetDataset subclass that sets its kind; {expected}"
        )
    return found


def build_target_dataset(
    task: Task | str,
    root: str | Path,
    split: str,
    *,
    kind: str | None = None,
    file_list: str | Path | None = None,
    options: Sequence[DataOption] = (),
    init_args: Mapping[str, Any] | None = None,
    labelled: bool | None = None,
    image_scaling: ImageScaling | None = None,
    strict: bool = True,
    **named_options: Any,
) -> SegmentationDataset:
    """The target dataset of a task, under ``data.target_root``.

    Args:
        task: task name or ``labels.Task``.
        root: target data root (``data.target_root``).
        split: ``"train"`` (unlabelled unless ``labelled``) or ``"test"`` (labelled).
        kind: as ``data.target_kind`` (``target_dataset_class``); None = the task's dataset.
        file_list: reference JSON list, or None to scan.
        options: the datamodule's options for target datasets (``DataOption``).
        init_args: the dataset's own keyword arguments (``data.target_kind``'s ``init_args``).
        labelled: as ``SegmentationDataset``; True reads the train split's labels too (set by
            ``data.target_train_labels``, which errors about missing labels then name).
        image_scaling, strict: as ``SegmentationDataset``.
        **named_options: more datamodule options by name (``label_map="map.yaml"``,
            ``dsec_frames="reference"``), as ``options``.

    Returns:
        The dataset.

    Raises:
        ValueError: unknown kind, or an option the dataset does not take or a bad value
            (``TargetDataset.init_options``).
        FileNotFoundError: as the dataset classes (with ``labelled``, naming data.target_train_labels).
    """
    task = as_task(task)
    dataset = target_dataset_class(task.target_dataset if kind is None else kind)
    given = [*options, *(DataOption(name, value, f"data.{name}") for name, value in named_options.items())]
    arguments = dataset.init_options(task, given, init_args)
    try:
        return dataset(
            root,
            split,
            task,
            file_list,
            option="data.target_root",
            labelled=labelled,
            image_scaling=image_scaling,
            strict=strict,
            **arguments,
        )
    except (FileNotFoundError, ValueError) as error:
        if not labelled or split != "train":
            raise
        kind_of_error = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
        raise kind_of_error(
            f"{error} (data.target_train_labels=true reads the target training labels too: add them, "
            "or set data.target_train_labels=false)"
        ) from None

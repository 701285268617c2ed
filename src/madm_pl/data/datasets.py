"""Datasets in their real on-disk layouts (SPEC section 1), plus a folder of your own images.

Every dataset lists its files at construction, either by scanning the layout (sorted, so the order
is deterministic) or, given ``file_list``, exactly the files of a reference JSON list (paths relative
to ``root``)::

    {"source_data": {"RGB": [...], "label": [...]},                    # Cityscapes (train lists)
     "target_data": {"second_modality": [...], "label": [...]}}        # target ("label": labelled splits)

``dataset[i]`` is the contract item of docs/ARCHITECTURE.md at the stored size:
``{"image": (3,H,W) float32 in [0,1], "label": (H,W) int64 task train ids or 255, "name": str}``
(no "label" for unlabelled splits; a target's train split is unlabelled unless built with
``labelled=True``, for an oracle). ``dataset.load(i)`` gives the same as numpy arrays
(a ``Sample``) for the transforms of the datamodule. ``name`` is the image path relative to
``root`` without its suffix, e.g. ``"test/Infrared/00043"`` (``UnlabelledImages``, read for
``predict``, keeps the suffix: ``"sub/frame.001.png"``). Images with more than 8 bits per pixel are
mapped to [0,1] by the ``image_scaling`` rule (``io.ImageScaling``). ``dataset.check(i)`` lists every
problem of one item without raising (``madm-pl prepare``).

Datasets only read; nothing is written under ``root``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml
from torch.utils.data import Dataset

from madm_pl.data.io import IMAGE_SUFFIXES, ImageScaling, read_image, read_label
from madm_pl.data.reference import DSEC_FRAME_CHOICES, DSEC_REFERENCE_RULES, is_dsec_reference_frame
from madm_pl.data.transforms import image_to_tensor, label_to_tensor
from madm_pl.labels import IGNORE_INDEX, UNMAPPED, Task, deliver_semantic_to_11, get_task, remap

DELIVER_CONDITIONS: tuple[str, ...] = ("cloud", "fog", "night", "rain", "sun")


@dataclass(frozen=True)
class Sample:
    """One item as numpy arrays.

    Attributes:
        image: (H,W,3) uint8 in [0,255].
        label: (H,W) uint8 ids (task train ids or 255, unless loaded with ``remap_label=False``), or
            None for unlabelled items.
        name: image path relative to the root, without suffix.
    """

    image: np.ndarray
    label: np.ndarray | None
    name: str


def _as_task(task: Task | str) -> Task:
    return task if isinstance(task, Task) else get_task(task)


def _remap_file(label: np.ndarray, table: np.ndarray, path: Path) -> np.ndarray:
    try:
        return remap(label, table)
    except ValueError as error:
        raise ValueError(f"label '{path}': {error}; fix the label file or the label map") from None


def _scan_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


#: Problems named one per line in a single error, at most this many (then a count of the rest).
MAX_LISTED = 20


def list_problems(problems: list[str], fix: str) -> str:
    """One message for several problems: a count, one line each (at most ``MAX_LISTED``), the fix."""
    if len(problems) == 1:
        return f"{problems[0]}; {fix}"
    shown = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{len(problems)} problems:\n  " + "\n  ".join(shown) + more + f"\n{fix}"


def read_file_list(
    path: str | Path, section: str, image_key: str, label_key: str | None
) -> tuple[list, list]:
    """Read the relative paths of one section of a reference JSON file list.

    Args:
        path: the JSON file.
        section: ``"source_data"`` or ``"target_data"``.
        image_key: ``"RGB"`` or ``"second_modality"``.
        label_key: ``"label"``, or None when the split has no labels.

    Returns:
        (image paths, label paths or ``[]``), as strings relative to the data root.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the JSON lacks the keys or the two lists differ in length.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file list '{path}' not found; fix the file list option")
    try:
        content = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"file list '{path}' is not valid JSON ({error})") from None
    wanted = [image_key] + ([label_key] if label_key else [])
    part = content.get(section) if isinstance(content, dict) else None
    if not isinstance(part, dict) or any(not isinstance(part.get(k), list) for k in wanted):
        raise ValueError(
            f"file list '{path}' has no {section}.{' and '.join(wanted)} lists: expected "
            f'{{"{section}": {{{", ".join(repr(k) for k in wanted)}: [paths relative to the root]}}}}'
        )
    images = [str(p) for p in part[image_key]]
    labels = [str(p) for p in part[label_key]] if label_key else []
    if label_key and len(images) != len(labels):
        raise ValueError(
            f"file list '{path}': {section}.{image_key} has {len(images)} entries but "
            f"{section}.{label_key} has {len(labels)}; every image needs its label"
        )
    return images, labels


class SegmentationDataset(Dataset, ABC):
    """Base of the datasets: a sorted list of image files and, for labelled splits, their labels.

    Subclasses describe their layout with ``_folders`` (which must exist), ``_scan`` (image files)
    and ``_label_of`` (the label file of an image), and set the label table.

    Args:
        root: the dataset root folder.
        split: e.g. ``"train"`` or ``"test"`` (see ``splits``).
        task: task name or ``labels.Task``; gives the label map.
        file_list: a reference JSON file list, or None to scan the layout.
        option: the config option that set ``root``, named in error messages.
        labelled: load labels; None = as the split is by default (``labelled_splits``), True also
            for an unlabelled-by-default split (a target's train labels), False never.
        image_scaling: the rule for images with more than 8 bits per pixel (``io.ImageScaling``);
            None = full range of a 16-bit image.
        strict: raise when images have no label file (all of them named in one error); False keeps
            the matched pairs and records the others in ``unmatched`` (for ``madm-pl prepare``).

    Attributes:
        unmatched: one message per image without its label (empty unless ``strict=False``).

    Raises:
        FileNotFoundError: the root or an expected folder or listed file is missing, or images have
            no label file (all named).
        ValueError: bad split, empty folder, malformed file list, task/dataset mismatch.
    """

    dataset_name: ClassVar[str] = "dataset"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    labelled_splits: ClassVar[tuple[str, ...]] = ("test",)
    file_list_section: ClassVar[str] = "target_data"
    file_list_image_key: ClassVar[str] = "second_modality"

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
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.task = _as_task(task)
        self.option = option
        self.labelled = labelled
        self.file_list = None if file_list is None else Path(file_list)
        self.image_scaling = image_scaling
        self.strict = strict
        self.unmatched: list[str] = []
        if split not in self.splits:
            raise ValueError(
                f"{self.dataset_name} has no split {split!r}: expected one of {list(self.splits)}"
            )
        self.label_table = self._label_table()
        folders = self._folders()
        expected = " and ".join(f"{f}/" for f in folders)
        if not self.root.is_dir() or any(not (self.root / f).is_dir() for f in folders):
            missing = [f for f in folders if not (self.root / f).is_dir()]
            raise FileNotFoundError(
                f"{self.dataset_name} not found under {option}='{self.root}': expected {expected}"
                f" (missing: {', '.join(missing) if self.root.is_dir() else 'the root itself'}); fix {option}"
            )
        if file_list is None:
            self.image_paths = self._scan()
            if not self.image_paths:
                raise ValueError(
                    f"no {self.dataset_name} {split} images under {option}='{self.root}' "
                    f"(looked in {expected}); the folder is empty or the layout differs"
                )
            self.label_paths = self._paired_labels() if self.has_labels else None
        else:
            self.image_paths, self.label_paths = self._listed(Path(file_list))

    # ----------------------------------------------------------------------------------- layout
    @property
    def has_labels(self) -> bool:
        """Whether labels are loaded: ``labelled``, or by default whether the split is labelled."""
        return self.split in self.labelled_splits if self.labelled is None else self.labelled

    def _label_table(self) -> np.ndarray:
        return self.task.target_map

    @abstractmethod
    def _folders(self) -> list[str]:
        """Folders under ``root`` that this split must have (checked with a clear error)."""

    @abstractmethod
    def _scan(self) -> list[Path]:
        """The split's image files, sorted (used when no file list is given)."""

    @abstractmethod
    def _label_of(self, relative_image: Path) -> Path:
        """The label file of an image, both relative to ``root``."""

    def _paired_labels(self) -> list[Path]:
        """The label of every scanned image; images without one are all named (see ``strict``)."""
        labels = [self.root / self._label_of(image.relative_to(self.root)) for image in self.image_paths]
        missing = [
            f"{self.dataset_name} image '{image}' has no label: expected '{label}'"
            for image, label in zip(self.image_paths, labels)
            if not label.is_file()
        ]
        if missing and self.strict:
            raise FileNotFoundError(list_problems(missing, "add the labels or remove the images"))
        if missing:
            self.unmatched = missing
            kept = [(image, label) for image, label in zip(self.image_paths, labels) if label.is_file()]
            self.image_paths = [image for image, _ in kept]
            labels = [label for _, label in kept]
        return labels

    def _listed(self, file_list: Path) -> tuple[list[Path], list[Path] | None]:
        label_key = "label" if self.has_labels else None
        images, labels = read_file_list(
            file_list, self.file_list_section, self.file_list_image_key, label_key
        )
        if not images:
            raise ValueError(f"file list '{file_list}' lists no {self.file_list_section} images")
        image_paths = [self.root / p.lstrip("/") for p in images]
        label_paths = [self.root / p.lstrip("/") for p in labels] if label_key else None
        missing = [
            f"'{path}' (listed in '{file_list}') does not exist"
            for path in image_paths + (label_paths or [])
            if not path.is_file()
        ]
        if missing and self.strict:
            raise FileNotFoundError(list_problems(missing, f"fix {self.option} or the file list"))
        for image, label in zip(image_paths, label_paths or []):
            expected = self.root / self._label_of(image.relative_to(self.root))
            if label != expected:
                raise ValueError(
                    f"file list '{file_list}': label '{label}' does not belong to image '{image}' "
                    f"(expected '{expected}'); the lists must be in the same order"
                )
        if missing:
            self.unmatched = missing
            pairs = list(zip(image_paths, label_paths or [None] * len(image_paths)))
            pairs = [(i, lb) for i, lb in pairs if i.is_file() and (lb is None or lb.is_file())]
            image_paths = [i for i, _ in pairs]
            label_paths = [lb for _, lb in pairs] if label_key else None
        return image_paths, label_paths

    # ----------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.image_paths)

    def name_of(self, index: int) -> str:
        """Image path relative to the root, without suffix, e.g. ``"test/Infrared/00043"``."""
        return self.image_paths[index].relative_to(self.root).with_suffix("").as_posix()

    def relative_paths(self) -> list[str]:
        """Every image path relative to the root, with suffix and ``/`` separators, in index order."""
        return [path.relative_to(self.root).as_posix() for path in self.image_paths]

    def _decode_label(self, stored: np.ndarray, path: Path) -> np.ndarray:
        """Stored ids (channel 0) to task train ids."""
        return _remap_file(stored, self.label_table, path)

    def load(self, index: int) -> Sample:
        """Read one item at its stored size.

        Args:
            index: in ``[0, len)``.

        Returns:
            ``Sample`` with image (H,W,3) uint8 and label (H,W) uint8 task ids or 255 (None when the
            split is unlabelled).

        Raises:
            ValueError: unreadable file, label ids outside the map, image and label sizes differ.
        """
        return self._load(index, decode=True)

    def check(self, index: int) -> list[str]:
        """Every problem of item ``index`` that ``load`` would raise on, without raising.

        The image and the label are read independently, so a bad image does not hide a bad label.

        Returns:
            One message per problem (empty when the item loads): an undecodable image or label,
            label ids outside the map, image and label sizes that differ.
        """
        problems: list[str] = []
        image = label = None
        try:
            image = read_image(self.image_paths[index], self.image_scaling)
        except (FileNotFoundError, ValueError) as error:
            problems.append(str(error))
        if self.label_paths is not None:
            label_path = self.label_paths[index]
            try:
                label = self._decode_label(read_label(label_path), label_path)
            except (FileNotFoundError, ValueError) as error:
                problems.append(str(error))
            if image is not None and label is not None and label.shape != image.shape[:2]:
                problems.append(self._size_mismatch(self.image_paths[index], image, label_path, label))
        return problems

    @staticmethod
    def _size_mismatch(image_path: Path, image: np.ndarray, label_path: Path, label: np.ndarray) -> str:
        return (
            f"image '{image_path}' is {image.shape[0]}x{image.shape[1]} but its label '{label_path}' "
            f"is {label.shape[0]}x{label.shape[1]}; image and label must have the same size"
        )

    def _load(self, index: int, decode: bool) -> Sample:
        image_path = self.image_paths[index]
        image = read_image(image_path, self.image_scaling)
        label = None
        if self.label_paths is not None:
            label_path = self.label_paths[index]
            stored = read_label(label_path)
            decoded = self._decode_label(stored, label_path)  # also checks the ids
            label = decoded if decode else stored
            if label.shape != image.shape[:2]:
                raise ValueError(self._size_mismatch(image_path, image, label_path, label))
        return Sample(image, label, self.name_of(index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The contract item at the stored size.

        Returns:
            ``{"image": (3,H,W) float32 in [0,1], "label": (H,W) int64, "name": str}``; no "label"
            for unlabelled splits.
        """
        sample = self.load(index)
        item: dict[str, Any] = {"image": image_to_tensor(sample.image), "name": sample.name}
        if sample.label is not None:
            item["label"] = label_to_tensor(sample.label)
        return item


def _swap_prefix(relative: Path, old: tuple[str, ...], new: tuple[str, ...]) -> Path:
    parts = relative.parts
    if parts[: len(old)] != old:
        return Path(*new, *parts)  # cannot happen for scanned files; a listed odd path then fails later
    return Path(*new, *parts[len(old) :])


class CityscapesDataset(SegmentationDataset):
    """Cityscapes RGB, the labelled source (SPEC section 1).

    Layout: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png`` (19 train ids + 255). Labels are mapped
    with ``task.source_map``; ``load(i, remap_label=False)`` keeps the 19 train ids (for RCS).
    With ``file_list``, the ``source_data`` lists ``RGB`` and ``label`` are read.
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
        relative = _swap_prefix(relative_image, ("leftImg8bit",), ("gtFine",))
        name = relative.name.removesuffix("_leftImg8bit.png") + "_gtFine_labelTrainIds.png"
        return relative.with_name(name)

    def load(self, index: int, remap_label: bool = True) -> Sample:
        """As ``SegmentationDataset.load``; with ``remap_label=False`` the label keeps the stored
        Cityscapes train ids 0..18 / 255 (still checked against the map)."""
        return self._load(index, decode=remap_label)


class _TargetDataset(SegmentationDataset):
    """A real target dataset: checks the task's target dataset is this one."""

    kind: ClassVar[str] = ""

    def _label_table(self) -> np.ndarray:
        if self.task.target_dataset != self.kind:
            raise ValueError(
                f"task {self.task.name!r} adapts to {self.task.target_dataset!r}, not to {self.kind!r} "
                f"({self.dataset_name}); pick the matching task or data.target_kind"
            )
        return self.task.target_map


class DeliverDepthDataset(_TargetDataset):
    """DELIVER depth, target of rgb2depth (SPEC section 1).

    Layout: ``depth/{cloud,fog,night,rain,sun}/{train,test}/MAP_*/<id>_depth_front.png``; labels
    ``semantic/<condition>/<split>/MAP_*/<id>_semantic_front.png`` (read for test, and for train when
    ``labelled=True``), channel 0 minus 1, then mapped to the 11 classes
    (``labels.deliver_semantic_to_11``).
    """

    dataset_name = "DELIVER"
    kind = "deliver"

    def _folders(self) -> list[str]:
        return ["depth", "semantic"] if self.has_labels else ["depth"]

    def _scan(self) -> list[Path]:
        found: list[Path] = []
        for condition in DELIVER_CONDITIONS:
            found += (self.root / "depth" / condition / self.split).glob("*/*_depth_front.png")
        return sorted(found)

    def _label_of(self, relative_image: Path) -> Path:
        relative = _swap_prefix(relative_image, ("depth",), ("semantic",))
        return relative.with_name(relative.name.replace("_depth_front", "_semantic_front"))

    def _decode_label(self, stored: np.ndarray, path: Path) -> np.ndarray:
        try:
            return deliver_semantic_to_11(stored)
        except ValueError as error:
            raise ValueError(
                f"label '{path}': {error} (after DELIVER's minus 1); fix the label file"
            ) from None


class FMBInfraredDataset(_TargetDataset):
    """FMB infrared, target of rgb2infrared (SPEC section 1).

    Layout: ``{train,test}/Infrared/*.png`` with ``{train,test}/Label/*.png`` (ids 0..14, mapped by
    ``labels.FMB_TO_9``; read for test, and for train when ``labelled=True``).
    """

    dataset_name = "FMB"
    kind = "fmb"

    def _folders(self) -> list[str]:
        folders = [f"{self.split}/Infrared"]
        return [*folders, f"{self.split}/Label"] if self.has_labels else folders

    def _scan(self) -> list[Path]:
        return sorted((self.root / self.split / "Infrared").glob("*.png"))

    def _label_of(self, relative_image: Path) -> Path:
        return relative_image.parent.parent / "Label" / relative_image.name


class DSECEventDataset(_TargetDataset):
    """DSEC events as edge images, target of rgb2event (SPEC section 1).

    Layout: ``69mask_{train,test}_edges/<sequence>/<frame>.png`` (6-digit frame numbers) with
    ``{train,test}_semantic_labels/<sequence>/11classes/<same name>.png`` (already 11-class ids; read for
    test, and for train when ``labelled=True``). ``test_semantic_labels`` is the reference's folder;
    ``train_semantic_labels`` mirrors it and is unverified against a real DSEC download (the synthetic
    world writes it). A scan takes every sequence folder present; with ``frames="reference"`` it keeps
    only the frames the reference's lists hold (``reference.DSEC_REFERENCE_FRAMES``: train the even
    frames from 000002, test every frame from 000001) and counts the others in ``frames_dropped``. A
    file list is used as it is (it is the selection).

    Args:
        root, split, task, file_list, option, labelled, image_scaling, strict: as
            ``SegmentationDataset``.
        frames: ``"all"`` (every frame found) or ``"reference"`` (the reference's frame rule).
    """

    dataset_name = "DSEC"
    kind = "dsec"

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
        if frames not in DSEC_FRAME_CHOICES:
            raise ValueError(f"data.dsec_frames={frames!r}: expected one of {list(DSEC_FRAME_CHOICES)}")
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


def load_label_map(path: str | Path, task: Task | str) -> np.ndarray:
    """Read a YAML label map ``{raw id: class name, train id, or "ignore"}`` of your own labels.

    Example for an 11-class task::

        0: ignore        # or 255
        1: road
        2: car
        7: 3             # a train id (here "person")

    Raw ids not listed are errors when met (255 maps to ignore unless listed).

    Args:
        path: the YAML file.
        task: gives the class names and their train ids.

    Returns:
        (256,) int16 table for ``labels.remap``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a mapping, a raw id outside [0,255], or an unknown class / train id.
    """
    task = _as_task(task)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label map '{path}' not found; fix data.label_map")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"label map '{path}' is not valid YAML ({error})") from None
    if not isinstance(content, dict) or not content:
        raise ValueError(f"label map '{path}' must be a mapping {{raw id: class name or train id}}")
    table = np.full(256, UNMAPPED, dtype=np.int16)
    table[IGNORE_INDEX] = IGNORE_INDEX
    names = {name: i for i, name in enumerate(task.classes)}
    for raw, target in content.items():
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 255:
            raise ValueError(f"label map '{path}': key {raw!r} is not a raw id in [0, 255]")
        if isinstance(target, str) and target in names:
            table[raw] = names[target]
        elif isinstance(target, str) and target == "ignore":
            table[raw] = IGNORE_INDEX
        elif (
            isinstance(target, int)
            and not isinstance(target, bool)
            and (0 <= target < task.num_classes or target == IGNORE_INDEX)
        ):
            table[raw] = target
        else:
            raise ValueError(
                f"label map '{path}': {raw}: {target!r} is not a class of task {task.name!r}; use one of "
                f"{list(task.classes)}, a train id 0..{task.num_classes - 1}, 255 or 'ignore'"
            )
    return table


class ImageFolderDataset(SegmentationDataset):
    """Your own target modality: a folder of images, no code needed.

    Layout under ``root``::

        train/**/*.{png,jpg,jpeg,bmp,tif,tiff}    unlabelled training images
        test/images/**/<stem>.<ext>              optional labelled test images
        test/labels/**/<stem>.png                their labels, same relative path and stem

    A labelled train split (``labelled=True``, for an oracle) is laid out as the test split:
    ``train/images/`` and ``train/labels/``. Labels are mapped by the YAML ``label_map`` (see
    ``load_label_map``); without one they must already hold the task's train ids (0..C-1, 255). With
    ``file_list``, ``target_data`` is read.

    Args:
        root, split, task, file_list, option, labelled, image_scaling, strict: as
            ``SegmentationDataset``.
        label_map: path of a YAML label map, or None for labels already in train ids.
    """

    dataset_name = "image folder"

    def __init__(
        self,
        root: str | Path,
        split: str,
        task: Task | str,
        file_list: str | Path | None = None,
        *,
        label_map: str | Path | None = None,
        option: str = "root",
        labelled: bool | None = None,
        image_scaling: ImageScaling | None = None,
        strict: bool = True,
    ) -> None:
        self.label_map = label_map
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

    def _label_table(self) -> np.ndarray:
        if self.label_map is not None:
            return load_label_map(self.label_map, self.task)
        table = np.full(256, UNMAPPED, dtype=np.int16)
        table[: self.task.num_classes] = np.arange(self.task.num_classes)
        table[IGNORE_INDEX] = IGNORE_INDEX
        return table

    def _folders(self) -> list[str]:
        return [f"{self.split}/images", f"{self.split}/labels"] if self.has_labels else [self.split]

    def _scan(self) -> list[Path]:
        return _scan_images(self.root / (f"{self.split}/images" if self.has_labels else self.split))

    def _label_of(self, relative_image: Path) -> Path:
        relative = _swap_prefix(relative_image, (self.split, "images"), (self.split, "labels"))
        return relative.with_suffix(".png")


class UnlabelledImages(Dataset):
    """Every image under a folder (recursive, sorted), e.g. for prediction.

    Args:
        root: the folder.
        option: the config option that set ``root``, named in error messages.
        image_scaling: as ``SegmentationDataset``.

    ``dataset[i]`` is ``{"image": (3,H,W) float32 in [0,1], "name": str}``; ``load(i)`` a ``Sample``.
    ``name`` is the file's path relative to ``root`` with its full name (``"sub/frame.001.png"``), so
    that ``a.png``, ``a.jpg`` and ``sub/a.png`` stay distinct.
    """

    def __init__(
        self, root: str | Path, *, option: str = "root", image_scaling: ImageScaling | None = None
    ) -> None:
        self.root = Path(root)
        self.image_scaling = image_scaling
        if not self.root.is_dir():
            raise FileNotFoundError(f"no folder {option}='{self.root}'; fix {option}")
        self.image_paths = _scan_images(self.root)
        if not self.image_paths:
            raise ValueError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) under {option}='{self.root}'; fix {option}"
            )

    def __len__(self) -> int:
        return len(self.image_paths)

    def name_of(self, index: int) -> str:
        """The file's path relative to the root, suffix included, e.g. ``"sub/frame.001.png"``."""
        return self.image_paths[index].relative_to(self.root).as_posix()

    def load(self, index: int) -> Sample:
        """Image (H,W,3) uint8; no label; name = relative path with the suffix."""
        return Sample(read_image(self.image_paths[index], self.image_scaling), None, self.name_of(index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load(index)
        return {"image": image_to_tensor(sample.image), "name": sample.name}


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
    task = _as_task(task)
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

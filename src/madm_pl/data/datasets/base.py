"""What every dataset shares: the ``Sample``, the base class, file lists, one error for
many problems.

``SegmentationDataset`` lists its files at construction, either by scanning the subclass's layout
(sorted, so the order is deterministic) or, given ``file_list``, exactly the files of a reference
JSON list (``read_file_list``). ``dataset[i]`` is ``{"image": (3,H,W) float32 in [0,1], "label": (H,W)
int64 task train ids or 255, "name": str}`` at the stored size (no "label" for unlabelled splits);
``dataset.load(i)`` gives the same as numpy arrays (a ``Sample``); ``dataset.check(i)`` lists every
problem of one item without raising. ``TargetDataset`` is the base of every target dataset: it
registers the dataset under its ``kind`` and owns the dataset's options and checks.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch.utils.data import Dataset

from madm_pl.data.io import ImageScaling, read_image, read_label
from madm_pl.data.transforms import image_to_tensor, label_to_tensor
from madm_pl.labels import Task, get_task, remap


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


def as_task(task: Task | str) -> Task:
    """The ``labels.Task`` of a task name (a ``Task`` is returned as it is)."""
    return task if isinstance(task, Task) else get_task(task)


def _remap_file(label: np.ndarray, table: np.ndarray, path: Path) -> np.ndarray:
    try:
        return remap(label, table)
    except ValueError as error:
        raise ValueError(f"label '{path}': {error}; fix the label file or the label map") from None


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
        self.task = as_task(task)
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


def swap_prefix(relative: Path, old: tuple[str, ...], new: tuple[str, ...]) -> Path:
    """``relative`` with its leading folders ``old`` replaced by ``new`` (image path to label path)."""
    parts = relative.parts
    if parts[: len(old)] != old:
        return Path(*new, *parts)  # cannot happen for scanned files; a listed odd path then fails later
    return Path(*new, *parts[len(old) :])


@dataclass(frozen=True)
class DataOption:
    """One datamodule option for target datasets (``data.label_map``, ``data.dsec_frames``) as set.

    Attributes:
        name: the option's name, e.g. ``"dsec_frames"``.
        value: its value.
        option: the config option, named in errors, e.g. ``"data.dsec_frames"``.
    """

    name: str
    value: Any
    option: str


#: Keywords the datamodule sets itself on every dataset (not a dataset's own ``init_args``).
_COMMON_KEYWORDS = ("option", "labelled", "image_scaling", "strict")


class TargetDataset(SegmentationDataset):
    """A target modality's dataset; it owns its options and their checks (torchgeo-style).

    A subclass names its ``kind`` (the value of ``data.target_kind``; the real datasets' kinds are the
    tasks' ``labels.Task.target_dataset``) and says whether the reference's published numbers score a
    share of its test split (``reference_protocol``): defining the class registers it under its kind
    (``registry``), and ``data.target_kind`` takes the kind or the class's dotted path. A subclass may
    take datamodule options (``data_options``: option name -> keyword of ``__init__``; each value is
    checked by ``check_option``), serve other tasks than the one whose target it is (``fits``), and
    have no test split (``has_test_split``). ``init_options`` checks a datamodule's options against it,
    once, for the datamodule and ``factory.build_target_dataset``.

    Labels are mapped with ``task.target_map`` unless the subclass overrides ``_label_table``.

    Raises:
        ValueError: the task does not fit this dataset (at construction).
    """

    #: ``data.target_kind`` of this dataset (a real dataset: its task's ``labels.Task.target_dataset``).
    kind: ClassVar[str] = ""
    #: Whether the reference's evaluation protocol applies (its rank-0 share of the test split,
    #: ``reference.reference_share``): True only for datasets the reference ran on. No default: each
    #: dataset says it (a new one inheriting True would score a share the reference never had).
    reference_protocol: ClassVar[bool]
    #: The datamodule options this dataset takes: option name -> keyword argument of ``__init__``.
    data_options: ClassVar[dict[str, str]] = {}
    #: Every dataset that names its kind, by kind (filled as the classes are defined).
    registry: ClassVar[dict[str, type[TargetDataset]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            return
        if not isinstance(cls.__dict__.get("reference_protocol"), bool):
            raise TypeError(
                f"{cls.__qualname__} (kind {cls.kind!r}) must set reference_protocol: True only if the "
                "reference's evaluation protocol (its rank-0 test share) applies to it, else False"
            )
        known = TargetDataset.registry.get(cls.kind)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(
                f"{cls.__qualname__}: kind {cls.kind!r} is taken by {known.__module__}.{known.__qualname__}; "
                "give the dataset another kind"
            )
        TargetDataset.registry[cls.kind] = cls

    # ------------------------------------------------------------------------------ its options
    @classmethod
    def fits(cls, task: Task) -> bool:
        """Whether this dataset can be the target of ``task``: by default only of the task whose
        ``target_dataset`` is this kind."""
        return task.target_dataset == cls.kind

    @classmethod
    def check_option(cls, option: DataOption) -> None:
        """Check the value of one of ``data_options`` (given anywhere, so that a bad value is named
        even for another kind).

        Raises:
            ValueError: a bad value (the message names ``option.option`` and the fix).
        """

    @classmethod
    def has_test_split(cls, root: str | Path, file_list: str | Path | None) -> bool:
        """Whether there is a test split under ``root`` (or in ``file_list``): always, by default."""
        return True

    @classmethod
    def option_default(cls, name: str) -> Any:
        """The value of datamodule option ``name`` (one of ``data_options``) that means "not set": the
        default of its keyword in ``__init__``."""
        return inspect.signature(cls.__init__).parameters[cls.data_options[name]].default

    @classmethod
    def init_options(
        cls, task: Task | str, options: Sequence[DataOption] = (), init_args: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Check that this dataset fits ``task``, takes every option set and every ``init_args``; the
        keyword arguments of ``__init__`` they give.

        Args:
            task: task name or ``labels.Task``.
            options: the datamodule's options for target datasets. Each value is checked by the datasets
                that take it (``check_option``); one at the default of those datasets counts as not set.
            init_args: keyword arguments of this dataset's own (``data.target_kind``'s ``init_args``).

        Raises:
            ValueError: the task does not fit, an option's value is bad, an option is set that this
                dataset does not take (naming the kinds that take it and the fix), or an unknown
                ``init_args`` name.
        """
        task = as_task(task)
        arguments: dict[str, Any] = {}
        for option in options:
            takers = [dataset for dataset in cls.registry.values() if option.name in dataset.data_options]
            for dataset in takers:
                dataset.check_option(option)
            if option.name in cls.data_options:
                arguments[cls.data_options[option.name]] = option.value
                continue
            default = takers[0].option_default(option.name) if takers else None
            if option.value != default:
                where = " or ".join(repr(dataset.kind) for dataset in takers)
                shown = "" if default is None else f"={option.value!r}"
                fix = "remove it" if default is None else f"set {option.option}={default!r}"
                raise ValueError(
                    f"{option.option}{shown} applies only to data.target_kind={where}, not {cls.kind!r}; "
                    f"{fix}"
                )
        cls.check_task(task)
        parameters = inspect.signature(cls.__init__).parameters
        own = [name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        for name, value in (init_args or {}).items():
            if name not in own or name in _COMMON_KEYWORDS:
                raise ValueError(
                    f"data.target_kind.init_args.{name}: {cls.__qualname__} takes no option {name!r} "
                    f"(its own: {[n for n in own if n not in _COMMON_KEYWORDS]}); fix or remove it"
                )
            arguments[name] = value
        return arguments

    @classmethod
    def check_task(cls, task: Task) -> None:
        """Raise ``ValueError`` (naming data.target_kind and the fix) unless this dataset ``fits`` task."""
        if not cls.fits(task):
            fitting = " or ".join(repr(kind) for kind, dataset in cls.registry.items() if dataset.fits(task))
            raise ValueError(
                f"data.target_kind={cls.kind!r} does not fit task {task.name!r}: task {task.name!r} adapts "
                f"to {task.target_dataset!r}, not to {cls.kind!r} ({cls.dataset_name}); use data.target_kind="
                f"{fitting} or the matching task"
            )

    def _label_table(self) -> np.ndarray:
        self.check_task(self.task)
        return self.task.target_map

"""Your own images: ``ImageFolderDataset``, a target modality of your own in a plain
folder layout with a YAML label map (``load_label_map``), and ``UnlabelledImages``, any folder of
images to predict on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml
from torch.utils.data import Dataset

from madm_pl.data.datasets.base import Sample, TargetDataset, as_task, swap_prefix
from madm_pl.data.io import IMAGE_SUFFIXES, ImageScaling, read_image
from madm_pl.data.transforms import image_to_tensor
from madm_pl.labels import IGNORE_INDEX, UNMAPPED, Task


def _scan_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursive, by suffix ``IMAGE_SUFFIXES``), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


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
    task = as_task(task)
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


class ImageFolderDataset(TargetDataset):
    """Your own target modality: a folder of images, no code needed.

    Layout under ``root``::

        train/**/*.{png,jpg,jpeg,bmp,tif,tiff}    unlabelled training images
        test/images/**/<stem>.<ext>              optional labelled test images
        test/labels/**/<stem>.png                their labels, same relative path and stem

    A labelled train split (``labelled=True``, for an oracle) is laid out as the test split:
    ``train/images/`` and ``train/labels/``. Labels are mapped by the YAML ``label_map`` (see
    ``load_label_map``); without one they must already hold the task's train ids (0..C-1, 255). With
    ``file_list``, ``target_data`` is read.

    Items: ``image`` (3,H,W) float32 in [0,1] (grey repeated to 3 channels, alpha dropped, more than
    8 bits by the ``image_scaling`` rule), ``label`` (H,W) int64 task train ids or 255 (labelled
    splits only), ``name`` e.g. ``"train/cam/frame_000"``.

    Args:
        root, split, task, file_list, option, labelled, image_scaling, strict: as
            ``SegmentationDataset``.
        label_map: path of a YAML label map, or None for labels already in train ids.
    """

    dataset_name = "image folder"
    kind = "folder"
    reference_protocol = False  # the reference never ran on your own images
    data_options: ClassVar[dict[str, str]] = {"label_map": "label_map"}

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

    @classmethod
    def fits(cls, task: Task) -> bool:
        return True  # the label map (or labels in train ids) puts your classes into any task's

    @classmethod
    def has_test_split(cls, root: str | Path, file_list: str | Path | None) -> bool:
        """Whether there is a test split: a test file list, or ``test/images/`` under ``root``."""
        return file_list is not None or (Path(root) / "test" / "images").is_dir()

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
        relative = swap_prefix(relative_image, (self.split, "images"), (self.split, "labels"))
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

"""The one home of task names, class names, palettes and label maps (METHOD.md §1).

Every other module imports these facts from here. Label maps are lookup tables of length 256 indexed
by the raw id stored in a dataset's label PNG; entries are the task's train ids, ``IGNORE_INDEX`` for
ids the task ignores, and ``UNMAPPED`` for ids that must never occur (``remap`` raises on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = 255
UNMAPPED = -1

CLASSES_11: tuple[str, ...] = (
    "sky",
    "building",
    "fence",
    "person",
    "pole",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
)
CLASSES_9: tuple[str, ...] = (
    "sky",
    "building",
    "person",
    "pole",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "traffic sign",
)
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "sky": (70, 130, 180),
    "building": (70, 70, 70),
    "fence": (190, 153, 153),
    "person": (220, 20, 60),
    "pole": (153, 153, 153),
    "road": (128, 64, 128),
    "sidewalk": (244, 35, 232),
    "vegetation": (107, 142, 35),
    "car": (0, 0, 142),
    "wall": (102, 102, 156),
    "traffic sign": (250, 170, 30),
}

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
FMB_CLASSES: tuple[str, ...] = (
    "unlabeled",
    "road",
    "sidewalk",
    "building",
    "traffic lamp",
    "traffic sign",
    "vegetation",
    "sky",
    "person",
    "car",
    "truck",
    "bus",
    "motorcycle",
    "bicycle",
    "pole",
)
# DELIVER semantic ids after the "channel 0 minus 1" step (25 classes).
DELIVER_CLASSES: tuple[str, ...] = (
    "building",
    "fence",
    "other",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "vehicles",
    "wall",
    "traffic sign",
    "sky",
    "ground",
    "bridge",
    "rail track",
    "guard rail",
    "traffic light",
    "static",
    "dynamic",
    "water",
    "terrain",
    "two-wheeler",
    "bus",
    "truck",
)


def _table(pairs: dict[int, int], default: int = UNMAPPED) -> np.ndarray:
    """A (256,) int16 lookup table; ``IGNORE_INDEX`` always maps to itself."""
    table = np.full(256, default, dtype=np.int16)
    for raw, mapped in pairs.items():
        table[raw] = mapped
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table


_VEHICLES = range(13, 19)
CITYSCAPES_TO_11 = _table(
    {0: 5, 1: 6, 2: 1, 3: 9, 4: 2, 5: 4, 6: 10, 7: 10, 8: 7, 9: 7, 10: 0, 11: 3, 12: 3}
    | dict.fromkeys(_VEHICLES, 8)
)
CITYSCAPES_TO_9 = _table(
    {0: 4, 1: 5, 2: 1, 3: IGNORE_INDEX, 4: IGNORE_INDEX, 5: 3, 6: 8, 7: 8, 8: 6, 9: 6, 10: 0, 11: 2, 12: 2}
    | dict.fromkeys(_VEHICLES, 7)
)
FMB_TO_9 = _table(
    {0: IGNORE_INDEX, 1: 4, 2: 5, 3: 1, 4: 8, 5: 8, 6: 6, 7: 0, 8: 2, 9: 7, 14: 3}
    | dict.fromkeys(range(10, 14), 7)
)
# Applied to DELIVER's channel 0 after subtracting 1 (255 stays 255), see ``deliver_semantic_to_11``.
DELIVER_TO_11 = _table(
    {0: 1, 1: 2, 2: IGNORE_INDEX, 3: 3, 4: 4, 5: 5, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9, 11: 10, 12: 0, 17: 10}
    | dict.fromkeys(range(13, 17), IGNORE_INDEX)
    | dict.fromkeys(range(18, 21), IGNORE_INDEX)
    | {21: 7, 22: 8, 23: 8, 24: 8}
)
IDENTITY_11 = _table({i: i for i in range(11)})

# --- the synthetic world (madm_pl.synthetic) in the real datasets' stored id spaces --------------------
# World layouts hold Cityscapes 19 train ids, 255 void; the world's writer stores each target's labels
# in that dataset's own ids, so that the real loaders and their label maps above read them.
_CITYSCAPES_ID = {name: i for i, name in enumerate(CITYSCAPES_CLASSES)}


def _world_table(pairs: dict[str, str], classes: tuple[str, ...], offset: int = 0) -> np.ndarray:
    """(256,) int16 table from world (Cityscapes 19) ids to another dataset's stored ids."""
    table = np.full(256, UNMAPPED, dtype=np.int16)
    for world_name, target_name in pairs.items():
        table[_CITYSCAPES_ID[world_name]] = classes.index(target_name) + offset
    return table


WORLD_FMB_PAIRS: dict[str, str] = {
    "road": "road",
    "sidewalk": "sidewalk",
    "building": "building",
    "wall": "unlabeled",  # FMB has no wall/fence; the 9-class task ignores them
    "fence": "unlabeled",
    "pole": "pole",
    "traffic light": "traffic lamp",
    "traffic sign": "traffic sign",
    "vegetation": "vegetation",
    "terrain": "vegetation",  # the 9-class task folds terrain into vegetation
    "sky": "sky",
    "person": "person",
    "rider": "person",
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "train": "bus",
    "motorcycle": "motorcycle",
    "bicycle": "bicycle",
}
WORLD_TO_FMB = _world_table(WORLD_FMB_PAIRS, FMB_CLASSES)
WORLD_TO_FMB[IGNORE_INDEX] = FMB_CLASSES.index("unlabeled")

WORLD_DELIVER_PAIRS: dict[str, str] = {
    "road": "road",
    "sidewalk": "sidewalk",
    "building": "building",
    "wall": "wall",
    "fence": "fence",
    "pole": "pole",
    "traffic light": "traffic light",
    "traffic sign": "traffic sign",
    "vegetation": "vegetation",
    "terrain": "terrain",
    "sky": "sky",
    "person": "pedestrian",
    "rider": "pedestrian",
    "car": "vehicles",
    "truck": "truck",
    "bus": "bus",
    "train": "vehicles",
    "motorcycle": "two-wheeler",
    "bicycle": "two-wheeler",
}
# Values as stored in channel 0 of ``*_semantic_front.png``: DELIVER id + 1; void → "other" (ignored).
WORLD_TO_DELIVER_PNG = _world_table(WORLD_DELIVER_PAIRS, DELIVER_CLASSES, offset=1)
WORLD_TO_DELIVER_PNG[IGNORE_INDEX] = DELIVER_CLASSES.index("other") + 1
# DSEC's test labels are already 11-class task ids: the world maps with the source's 11-class map.
WORLD_TO_DSEC = CITYSCAPES_TO_11.copy()
WORLD_TO_CITYSCAPES = np.full(256, UNMAPPED, dtype=np.int16)
WORLD_TO_CITYSCAPES[: len(CITYSCAPES_CLASSES)] = np.arange(len(CITYSCAPES_CLASSES))
WORLD_TO_CITYSCAPES[IGNORE_INDEX] = IGNORE_INDEX


@dataclass(frozen=True)
class Task:
    """One published task: a labelled RGB source and an unlabelled target modality (METHOD.md §1).

    Attributes:
        name: task name, e.g. ``"rgb2infrared"``.
        modality: the target modality (``"depth"``, ``"infrared"``, ``"event"``).
        target_dataset: the real dataset of the target (``"deliver"``, ``"fmb"``, ``"dsec"``).
        classes: class names, index = train id.
        source_map: (256,) table from Cityscapes 19-class train ids to the task's ids.
        target_map: (256,) table from the target dataset's stored label ids to the task's ids.
    """

    name: str
    modality: str
    target_dataset: str
    classes: tuple[str, ...]
    source_map: np.ndarray
    target_map: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def palette(self) -> np.ndarray:
        """(C,3) uint8 RGB colour per train id."""
        return palette_for(self.classes)


def palette_for(classes: tuple[str, ...]) -> np.ndarray:
    """(C,3) uint8 RGB palette for a list of class names (colours of METHOD.md §1)."""
    return np.array([CLASS_COLOURS[name] for name in classes], dtype=np.uint8)


TASKS: dict[str, Task] = {
    "rgb2depth": Task("rgb2depth", "depth", "deliver", CLASSES_11, CITYSCAPES_TO_11, DELIVER_TO_11),
    "rgb2infrared": Task("rgb2infrared", "infrared", "fmb", CLASSES_9, CITYSCAPES_TO_9, FMB_TO_9),
    "rgb2event": Task("rgb2event", "event", "dsec", CLASSES_11, CITYSCAPES_TO_11, IDENTITY_11),
}


def get_task(name: str) -> Task:
    """The task called ``name``; a clear error lists the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: expected one of {sorted(TASKS)}")
    return TASKS[name]


def remap(label: np.ndarray | torch.Tensor, table: np.ndarray) -> np.ndarray | torch.Tensor:
    """Map every raw label id through a (256,) lookup table, vectorised.

    Args:
        label: integer array or tensor of any shape with ids in [0, 255].
        table: (256,) int table from ``labels``; ``UNMAPPED`` entries mark ids that must not occur.

    Returns:
        The mapped labels, same shape; uint8 for numpy input, int64 for tensor input.

    Raises:
        ValueError: when ``label`` holds an id outside [0, 255] or one the table does not map.
    """
    is_tensor = isinstance(label, torch.Tensor)
    array = label.cpu().numpy() if is_tensor else np.asarray(label)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"label ids must lie in [0, 255], found [{array.min()}, {array.max()}]")
    mapped = table[array.astype(np.intp, copy=False)]
    if (mapped == UNMAPPED).any():
        bad = sorted(np.unique(array[mapped == UNMAPPED]).tolist())
        raise ValueError(f"label ids {bad} are outside the label map (mapped ids: {mapped_ids(table)})")
    if is_tensor:
        return torch.from_numpy(mapped.astype(np.int64)).to(label.device)
    return mapped.astype(np.uint8)


def mapped_ids(table: np.ndarray) -> list[int]:
    """The raw ids that ``table`` accepts."""
    return [int(i) for i in np.flatnonzero(table != UNMAPPED)]


def deliver_semantic_to_11(channel0: np.ndarray) -> np.ndarray:
    """DELIVER semantic PNG channel 0 to 11-class ids: minus 1 (255 stays 255), then ``DELIVER_TO_11``.

    Args:
        channel0: (H,W) uint8, the first channel of ``*_semantic_front.png``.
    """
    shifted = np.where(channel0 == IGNORE_INDEX, IGNORE_INDEX, channel0.astype(np.int16) - 1)
    # id 0 in the PNG becomes -1: DELIVER never stores it; treat as unlabelled rather than crash.
    shifted = np.where(shifted < 0, IGNORE_INDEX, shifted)
    return remap(shifted.astype(np.uint8), DELIVER_TO_11)


def colorize(
    label: np.ndarray | torch.Tensor, palette: np.ndarray | torch.Tensor
) -> np.ndarray | torch.Tensor:
    """Paint train ids with a palette; ``IGNORE_INDEX`` (and any id past the palette) is black.

    The one palette painter: pictures, prediction PNGs and LPLR's painted label all use it.

    Args:
        label: (..., H, W) integer train ids in [0, 255] (ids past 255 are black for a tensor).
        palette: (C,3) uint8 RGB with C <= 255, numpy or a tensor on any device.

    Returns:
        (..., H, W, 3) uint8 numpy for numpy input; (..., 3, H, W) uint8 on ``label.device`` for
        tensor input.

    Raises:
        ValueError: when the palette is not (C,3) with C <= 255 (``IGNORE_INDEX`` must stay black).
    """
    if len(palette.shape) != 2 or palette.shape[1] != 3 or palette.shape[0] > IGNORE_INDEX:
        raise ValueError(f"colorize: palette must be (C,3) with C <= 255, got {tuple(palette.shape)}")
    if isinstance(label, torch.Tensor):
        lut = torch.zeros(256, 3, dtype=torch.uint8, device=label.device)
        lut[: palette.shape[0]] = torch.as_tensor(palette).to(device=label.device, dtype=torch.uint8)
        return lut[label.long().clamp(0, 255)].movedim(-1, -3)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette.cpu() if isinstance(palette, torch.Tensor) else palette)
    return lut[np.asarray(label).astype(np.intp)]

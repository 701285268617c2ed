"""The synthetic world's codes: split and modality codes, scene seeds, the world's class ids and material
kinds, and the small random-draw helpers every part of the world shares.

Every scene draws from its own ``np.random.SeedSequence([seed, split_code, modality_code, index])``
(``scene_seed_sequence``), so the source, target-train and target-test sets (and the prior's pool with its
own split code) never share a layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from madm_pl.labels import CITYSCAPES_CLASSES, IGNORE_INDEX

# --- public constants -------------------------------------------------------------------------------

SPLIT_SOURCE = 0
SPLIT_TARGET_TRAIN = 1
SPLIT_TARGET_TEST = 2
SPLIT_PRIOR = 3  # reserved for the diffusion prior's own pool of scenes
MODALITY_CODES: dict[str, int] = {"rgb": 0, "depth": 1, "infrared": 2, "event": 3}
MODALITIES: tuple[str, ...] = tuple(MODALITY_CODES)
TARGET_MODALITIES: tuple[str, ...] = ("depth", "infrared", "event")
SKY_DEPTH_M = 1000.0  # CARLA's far plane: encodes to 255

_CS = {name: i for i, name in enumerate(CITYSCAPES_CLASSES)}
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = (
    _CS[n] for n in ("road", "sidewalk", "building", "wall", "fence", "pole")
)
TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY = (
    _CS[n] for n in ("traffic light", "traffic sign", "vegetation", "terrain", "sky")
)
PERSON, RIDER, CAR, TRUCK, BUS = (_CS[n] for n in ("person", "rider", "car", "truck", "bus"))
MOTORCYCLE, BICYCLE = _CS["motorcycle"], _CS["bicycle"]
VOID = IGNORE_INDEX


def scene_seed_sequence(seed: int, split_code: int, modality: str, index: int) -> np.random.SeedSequence:
    """The seed sequence of one scene: ``SeedSequence([seed, split_code, MODALITY_CODES[modality], index])``.

    Scenes of different splits (``SPLIT_*``), modalities or indices never share a layout.
    """
    return np.random.SeedSequence([seed, split_code, MODALITY_CODES[modality], index])


def _child_rng(seed_seq: np.random.SeedSequence, key: int) -> np.random.Generator:
    # Built from the spawn key rather than ``seed_seq.spawn`` (which is stateful), so that the stream of
    # each modality does not depend on which modalities were rendered before.
    child = np.random.SeedSequence(seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, key))
    return np.random.default_rng(child)


# --- the world: times of day, weathers, material kinds -----------------------------------------------

TIMES_OF_DAY: tuple[str, ...] = ("day", "dusk", "night")
WEATHERS: tuple[str, ...] = ("clear", "overcast", "fog", "rain")

# White, black, silver, red, blue, dark grey: the usual car colours.
_VEHICLE_PAINTS = (
    (0.9, 0.9, 0.9),
    (0.08, 0.08, 0.09),
    (0.55, 0.56, 0.58),
    (0.6, 0.1, 0.08),
    (0.12, 0.2, 0.45),
    (0.3, 0.32, 0.3),
)
# Texture kinds of a material: how ``Scene._clean_rgb`` patterns it (``_LAMP``, ``_SKY``: not at all).
_FLAT, _SKY, _FACADE, _BLOCKS, _FENCE, _FOLIAGE, _ROAD, _TILES, _GRASS, _GLASS, _LAMP = range(11)


def _draw(rng: np.random.Generator, probs: Sequence[float], size: int | None = None) -> np.ndarray | int:
    """Index drawn with probabilities ``probs`` (faster than ``Generator.choice`` for small draws)."""
    cumulative = np.cumsum(probs)
    index = np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right")
    return np.minimum(index, len(probs) - 1) if size is not None else int(min(index, len(probs) - 1))


def _index_of(values: Sequence[int], items: np.ndarray) -> np.ndarray:
    """Position of each of ``items`` in ``values``."""
    lookup = np.zeros(256, np.int64)
    lookup[np.asarray(values)] = np.arange(len(values))
    return lookup[items]

"""Procedural four-modality street world: madm-pl's built-in data (console script ``madm-pl-data``).

A scene is ONE semantic layout in the Cityscapes 19-class train-id space (``labels.CITYSCAPES_CLASSES``;
``labels.IGNORE_INDEX`` = 255 for void clutter) with a per-pixel depth in metres from a pinhole camera
looking down a straight street: a ground plane (road with markings, sidewalks, terrain strips), vertical
façade planes parallel to the street at two distances (buildings, walls, fences, hedges, gaps), an
optional cross façade closing the street or a far skyline, billboard objects standing at their distance
(cars, trucks, buses, people, cyclists, motorcyclists, poles, street lamps, traffic signs and lights,
trees, void clutter) and the sky at ``SKY_DEPTH_M``. The layout is rendered four ways:

- ``rgb``: per-instance plausible colours, procedural textures (windows, blocks, tiles, foliage, road
  markings), side lighting, time of day (day/dusk/night with lit windows and lamps) and weather
  (haze, overcast, fog by depth, rain streaks), sensor noise.
- ``depth``: **assumption** — DELIVER's depth PNGs come from CARLA; we take them to be 8-bit CARLA
  "logarithmic depth": ``round(255 * clip(1 + ln(d / 1000) / 5.70378, 0, 1))`` with ``d`` in metres
  (5.70378 = ln 300, so 3.33 m..1000 m span 0..255 and the sky is 255), stored as a 3-channel PNG with
  equal channels.
- ``infrared``: a temperature per material (people and running engines/tyres hot, sky cold, road warm
  by day, vegetation cool), thermal blur, automatic gain, vignetting, column non-uniformity and sensor
  noise; single-channel 8-bit like FMB.
- ``event``: the log-luminance change between the clean RGB frame and a copy warped by a small
  ego-motion (forward translation, depth-dependent zoom, plus a pan), thresholded into sparse
  polarity counts: 128 = no event, brighter = positive, darker = negative, like DSEC's edge images.

Every scene draws from its own ``np.random.SeedSequence([seed, split_code, modality_code, index])``
(``scene_seed_sequence``), so the source, target-train and target-test sets (and a future pool with
another split code) never share a layout. ``generate`` / ``main`` write the scenes in the folder
layouts and label id spaces of the real datasets (SPEC section 1), so the real loaders read them. Every
scene is labelled, the target-train scenes too (real FMB, DELIVER and DSEC ship train labels), so that
an oracle can train on target labels; adaptation ignores them:

- ``cityscapes/leftImg8bit/train/<city>/<city>_<seq>_000019_leftImg8bit.png`` and
  ``cityscapes/gtFine/train/<city>/<city>_<seq>_000019_gtFine_labelTrainIds.png`` (19 train ids);
- ``deliver/depth/<cond>/{train,test}/MAP_<k>_point<m>/<id>_depth_front.png`` and
  ``deliver/semantic/<cond>/{train,test}/MAP_<k>_point<m>/<id>_semantic_front.png`` (R = DELIVER id + 1,
  G = B = 0; void as "other"); the condition cycles over the five with the scene index and only names the
  folder: depth does not see weather;
- ``fmb/{train,test}/Infrared/<5 digits>.png`` and ``fmb/{train,test}/Label/<5 digits>.png`` (FMB ids
  0..14; wall, fence and void as 0 "unlabeled");
- ``dsec/69mask_train_edges/zurich_city_XX_a/<6 digits>.png``, ``dsec/69mask_test_edges/<seq>/...`` and
  ``dsec/{train,test}_semantic_labels/<seq>/11classes/<6 digits>.png`` (11-class task ids). **Unverified:**
  ``test_semantic_labels`` is the reference's test-label folder; the train-label folder name
  ``train_semantic_labels`` is our mirror of it, not checked against a real DSEC download.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from functools import cached_property, lru_cache
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from madm_pl.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_TO_11,
    DELIVER_CLASSES,
    FMB_CLASSES,
    IGNORE_INDEX,
    UNMAPPED,
)

# --- public constants -------------------------------------------------------------------------------

SPLIT_SOURCE = 0
SPLIT_TARGET_TRAIN = 1
SPLIT_TARGET_TEST = 2
SPLIT_PRIOR = 3  # reserved for the diffusion prior's own pool of scenes
MODALITY_CODES: dict[str, int] = {"rgb": 0, "depth": 1, "infrared": 2, "event": 3}
MODALITIES: tuple[str, ...] = tuple(MODALITY_CODES)
TARGET_MODALITIES: tuple[str, ...] = ("depth", "infrared", "event")
SKY_DEPTH_M = 1000.0  # CARLA's far plane: encodes to 255
# Bump when the written files change, so old folders are not mistaken for current ones. 2: target-train
# labels are written too.
FORMAT_VERSION = 2

CITIES: tuple[str, ...] = ("synthetica", "rendertown", "pixelburg")
DELIVER_CONDITIONS: tuple[str, ...] = ("cloud", "fog", "night", "rain", "sun")
DELIVER_MAPS: tuple[int, ...] = (1, 3, 10)
DSEC_TRAIN_SEQUENCES: tuple[str, ...] = tuple(f"zurich_city_{n:02d}_a" for n in (0, 1, 2, 4, 5, 6, 7, 8))
DSEC_TEST_SEQUENCES: tuple[str, ...] = ("zurich_city_13_a", "zurich_city_14_c", "zurich_city_15_a")
PNG_COMPRESSION = 1  # fixed so that files are byte-identical run to run; 1 is fast and still compact

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


def _inverse_table(pairs: dict[str, str], classes: tuple[str, ...], offset: int = 0) -> np.ndarray:
    """(256,) int16 table from world (Cityscapes 19) ids to another dataset's stored ids."""
    table = np.full(256, UNMAPPED, dtype=np.int16)
    for world_name, target_name in pairs.items():
        table[_CS[world_name]] = classes.index(target_name) + offset
    return table


_FMB_PAIRS = {
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
WORLD_TO_FMB = _inverse_table(_FMB_PAIRS, FMB_CLASSES)
WORLD_TO_FMB[VOID] = FMB_CLASSES.index("unlabeled")

_DELIVER_PAIRS = {
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
WORLD_TO_DELIVER_PNG = _inverse_table(_DELIVER_PAIRS, DELIVER_CLASSES, offset=1)
WORLD_TO_DELIVER_PNG[VOID] = DELIVER_CLASSES.index("other") + 1
# DSEC's test labels are already 11-class task ids: the world maps with the source's 11-class map.
WORLD_TO_DSEC = CITYSCAPES_TO_11.copy()
WORLD_TO_CITYSCAPES = np.full(256, UNMAPPED, dtype=np.int16)
WORLD_TO_CITYSCAPES[: len(CITYSCAPES_CLASSES)] = np.arange(len(CITYSCAPES_CLASSES))
WORLD_TO_CITYSCAPES[VOID] = VOID


def encode_depth(depth_m: np.ndarray) -> np.ndarray:
    """CARLA 8-bit logarithmic depth, as we assume DELIVER stores it (see the module docstring).

    Args:
        depth_m: (H,W) float depth in metres, > 0.

    Returns:
        (H,W,3) uint8, equal channels; 0 at <= 3.33 m, 255 at >= 1000 m.
    """
    log_depth = 1.0 + np.log(np.maximum(depth_m, 1e-3) / 1000.0) / 5.70378
    value = np.rint(255.0 * np.clip(log_depth, 0.0, 1.0)).astype(np.uint8)
    return np.repeat(value[:, :, None], 3, axis=2)


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


# --- the world: geometry, classes, materials --------------------------------------------------------

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


class _World:
    """Builds one scene: per-pixel class, depth, material and surface coordinates (z-buffered)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.height, self.width = height, width
        # Mostly daylight, as Cityscapes; dusk and night keep the targets' harder conditions in play.
        self.time_of_day = str(TIMES_OF_DAY[_draw(rng, (0.65, 0.2, 0.15))])
        self.weather = str(WEATHERS[_draw(rng, (0.4, 0.25, 0.15, 0.2))])
        # Sun warmth for infrared and side lighting for RGB.
        self.solar = {"day": 1.0, "dusk": 0.4, "night": 0.0}[self.time_of_day]
        if self.weather != "clear":
            self.solar *= 0.5
        self.focal = width * rng.uniform(0.55, 0.75)
        self.cx = width * rng.uniform(0.4, 0.6)
        self.cy = height * rng.uniform(0.36, 0.5)  # horizon row
        self.camera_height = rng.uniform(1.3, 1.7)
        self.cols = np.arange(width, dtype=np.float32) + 0.5
        self.rows = np.arange(height, dtype=np.float32) + 0.5
        self.slope_x = (self.cols - self.cx) / self.focal  # X / Z of each column
        self.slope_y = (self.rows - self.cy) / self.focal  # drop below the horizon per metre of Z
        shape = (height, width)
        self.layout = np.full(shape, SKY, dtype=np.uint8)
        self.depth = np.full(shape, SKY_DEPTH_M, dtype=np.float32)
        self.material = np.zeros(shape, dtype=np.int32)
        self.surface_u = np.zeros(shape, dtype=np.float32)
        self.surface_v = np.zeros(shape, dtype=np.float32)
        self.shade = np.ones(shape, dtype=np.float32)
        # Material table columns, one entry per material: albedo (3 floats in [0,1]), texture kind,
        # temperature (infrared grey level before gain control), night emission (3 floats), param (2).
        self._albedo: list = []
        self._kind: list[int] = []
        self._temperature: list[float] = []
        self._emission: list = []
        self._param: list = []
        sky_temperature = {"clear": 12.0, "overcast": 45.0, "fog": 60.0, "rain": 50.0}[self.weather]
        self.add_material((0.5, 0.6, 0.8), _SKY, sky_temperature)  # material 0 = sky
        self._build()

    # materials
    def add_materials(
        self,
        albedo: np.ndarray,
        kind: int,
        temperature: float,
        emission: Sequence[float] = (0.0, 0.0, 0.0),
        param: np.ndarray | None = None,
    ) -> np.ndarray:
        """Register n materials sharing a kind and temperature; returns their (n,) ids.

        Args:
            albedo: (n,3) float in [0,1].
            param: (n,2) float texture parameters, or None for zeros.
        """
        start = len(self._kind)
        n = len(albedo)
        self._albedo.extend(np.asarray(albedo).tolist())
        self._kind.extend([kind] * n)
        self._temperature.extend([temperature] * n)
        self._emission.extend([emission] * n)
        self._param.extend(np.zeros((n, 2)).tolist() if param is None else np.asarray(param).tolist())
        return np.arange(start, start + n)

    def add_material(
        self,
        albedo: Sequence[float],
        kind: int,
        temperature: float,
        emission: Sequence[float] = (0.0, 0.0, 0.0),
        param: Sequence[float] = (0.0, 0.0),
    ) -> int:
        """Register one material; returns its id."""
        self._albedo.append(albedo)
        self._kind.append(kind)
        self._temperature.append(temperature)
        self._emission.append(emission)
        self._param.append(param)
        return len(self._kind) - 1

    def tables(self) -> dict[str, np.ndarray]:
        """Per-material tables: albedo (M,3), kind (M,), temperature (M,), emission (M,3), param (M,2)."""
        temperature = np.asarray(self._temperature, np.float32)
        # A little per-instance spread so that no class has one exact thermal value.
        temperature += self.rng.normal(0.0, 4.0, len(temperature)).astype(np.float32)
        return {
            "albedo": np.asarray(self._albedo, np.float32).reshape(-1, 3),
            "kind": np.asarray(self._kind, np.int32),
            "temperature": temperature,
            "emission": np.asarray(self._emission, np.float32).reshape(-1, 3),
            "param": np.asarray(self._param, np.float32).reshape(-1, 2),
        }

    def _jitter(self, colours: Sequence | np.ndarray, amount: float = 0.06) -> np.ndarray | list[float]:
        """Vary (n,3) or (3,) base colours per instance: overall brightness and a slight tint."""
        if np.ndim(colours) == 1:  # one colour: plain floats, as numpy's overhead dominates at this size
            draws = self.rng.random(4).tolist()
            gain = 0.85 + 0.3 * draws[0]
            return [
                min(max(c * gain + (t - 0.5) * 3.4 * amount, 0.0), 1.0) for c, t in zip(colours, draws[1:])
            ]
        colours = np.asarray(colours, np.float32)
        draws = self.rng.random((len(colours), 4), dtype=np.float32)
        gain = 0.85 + 0.3 * draws[:, :1]
        tint = (draws[:, 1:] - 0.5) * np.float32(3.4 * amount)  # uniform with std ~ amount
        return np.clip(colours * gain + tint, 0.0, 1.0)

    # painting with a z-buffer
    def paint(
        self,
        rows: slice,
        cols: slice,
        mask: np.ndarray,
        z: float | np.ndarray,
        cls: int | np.ndarray,
        material: int | np.ndarray,
        shade: float | np.ndarray,
        u: np.ndarray | None = None,
        v: np.ndarray | None = None,
    ) -> None:
        """Write the pixels of ``mask`` (within ``[rows, cols]``) that are nearer than what is there.

        ``u``, ``v`` are surface coordinates in metres for textured surfaces; objects (None) have none.
        """
        depth = self.depth[rows, cols]
        shape = depth.shape
        hit = mask & (z < depth)
        if not hit.any():
            return
        targets = [(depth, z), (self.layout, cls), (self.material, material), (self.shade, shade)]
        if u is not None and v is not None:
            targets += [(self.surface_u, u), (self.surface_v, v)]
        for buffer, value in targets:
            view = buffer if buffer is depth else buffer[rows, cols]
            if np.ndim(value) == 0:
                view[hit] = value
            else:
                view[hit] = (value if value.shape == shape else np.broadcast_to(value, shape))[hit]

    # geometry
    def _build(self) -> None:
        rng = self.rng
        self.road_half = rng.uniform(3.0, 6.5)
        self.road_centre = rng.uniform(-0.6, 0.6) * (self.road_half - 1.0)  # relative to the camera
        self.road_left = self.road_centre - self.road_half
        self.road_right = self.road_centre + self.road_half
        sidewalk_left, sidewalk_right = rng.uniform(1.5, 4.5, size=2)
        terrain_left, terrain_right = np.where(rng.random(2) < 0.35, rng.uniform(0.8, 3.5, size=2), 0.0)
        self.kerb_left = self.road_left - sidewalk_left
        self.kerb_right = self.road_right + sidewalk_right
        self.facade_left = self.kerb_left - terrain_left
        self.facade_right = self.kerb_right + terrain_right
        self.street_end = rng.uniform(45.0, 170.0) if rng.random() < 0.5 else None
        far_limit = self.street_end if self.street_end is not None else 400.0

        self._ground()
        lit_side = rng.random() < 0.5
        for facade, sign, shade in ((self.facade_left, -1.0, 0.95), (self.facade_right, 1.0, 0.65)):
            shade = shade if lit_side else 1.6 - shade  # the sun lights one side of the street
            self._side_plane(facade, self._near_segments(far_limit), shade)
            far_plane = facade + sign * rng.uniform(8.0, 25.0)
            self._side_plane(far_plane, self._far_segments(far_limit), shade * 0.95)
        if self.street_end is not None:
            self._cross_plane(self.street_end, self._cross_segments(8.0, 30.0, 0.15, wide=False), 0.85)
        else:  # an open street: a low skyline far away
            self._cross_plane(
                rng.uniform(250.0, 600.0), self._cross_segments(5.0, 40.0, 0.35, wide=True), 0.8
            )
        self._objects(min(far_limit - 2.0, 90.0))

    def _ground(self) -> None:
        rng = self.rng
        t = self.slope_y
        below = t > 1e-4
        zg = np.where(below, self.camera_height / np.maximum(t, 1e-4), SKY_DEPTH_M)
        zg = np.minimum(zg, SKY_DEPTH_M - 1.0).astype(np.float32)[:, None]
        x = self.slope_x[None, :] * zg
        yard_cls = TERRAIN if rng.random() < 0.5 else SIDEWALK
        wet = self.weather == "rain"
        road_grey = rng.uniform(0.22, 0.38) * (0.7 if wet else 1.0)
        road = self.add_material(
            self._jitter((road_grey, road_grey, road_grey * 1.04), 0.01),
            _ROAD,
            95.0 + 55.0 * self.solar,
            param=(self.road_centre, self.road_half),
        )
        walk_grey = rng.uniform(0.45, 0.65)
        walk = self.add_material(
            self._jitter((walk_grey, walk_grey * 0.97, walk_grey * 0.92), 0.02),
            _TILES,
            90.0 + 40.0 * self.solar,
            param=(self.road_left, self.road_right),
        )
        grass = self.add_material(self._jitter((0.33, 0.42, 0.18)), _GRASS, 78.0 + 25.0 * self.solar)
        yard = walk if yard_cls == SIDEWALK else grass
        edges = np.array(
            [
                self.facade_left,
                self.kerb_left,
                self.road_left,
                self.road_right,
                self.kerb_right,
                self.facade_right,
            ]
        )
        zone_cls = np.array([yard_cls, TERRAIN, SIDEWALK, ROAD, SIDEWALK, TERRAIN, yard_cls], dtype=np.uint8)
        zone_mat = np.array([yard, grass, walk, road, walk, grass, yard], dtype=np.int32)
        zone = np.searchsorted(edges, x)
        self.paint(
            slice(None), slice(None), below[:, None], zg, zone_cls[zone], zone_mat[zone], u=x, v=zg, shade=1.0
        )

    def _segment_materials(self, classes: np.ndarray) -> np.ndarray:
        """(n,) material ids for stretches of the given classes (0 = none, for gaps)."""
        rng = self.rng
        ids = np.zeros(len(classes), np.int64)
        for cls in np.unique(classes):
            where = np.flatnonzero(classes == cls)
            n = len(where)
            if cls == BUILDING:
                palette = np.array(
                    [
                        (0.72, 0.66, 0.56),
                        (0.55, 0.32, 0.24),
                        (0.6, 0.6, 0.62),
                        (0.85, 0.82, 0.75),
                        (0.5, 0.45, 0.38),
                    ]
                )
                colours = self._jitter(palette[rng.integers(len(palette), size=n)])
                windows = np.stack([rng.uniform(2.2, 4.0, n), rng.uniform(2.8, 3.6, n)], 1)
                ids[where] = self.add_materials(colours, _FACADE, 92.0 + 25.0 * self.solar, param=windows)
            elif cls == WALL:
                grey = rng.uniform(0.45, 0.7, (n, 1)) * np.array([1.0, 0.95, 0.9])
                ids[where] = self.add_materials(self._jitter(grey), _BLOCKS, 88.0 + 22.0 * self.solar)
            elif cls == FENCE:
                palette = np.array([(0.45, 0.35, 0.25), (0.35, 0.38, 0.35), (0.6, 0.6, 0.6)])
                colours = self._jitter(palette[rng.integers(3, size=n)])
                bars = np.stack([rng.uniform(0.12, 0.3, n), np.zeros(n)], 1)
                ids[where] = self.add_materials(colours, _FENCE, 84.0 + 15.0 * self.solar, param=bars)
            elif cls == VEGETATION:
                colours = self._jitter(np.tile((0.2, 0.36, 0.12), (n, 1)))
                ids[where] = self.add_materials(colours, _FOLIAGE, 68.0 + 12.0 * self.solar)
        return ids

    def _segments(
        self,
        z_start: float,
        z_end: float,
        length: tuple[float, float],
        classes: Sequence[int],
        probs: Sequence[float],
        heights: dict[int, tuple[float, float]],
    ) -> tuple[np.ndarray, ...]:
        """Consecutive stretches along one plane: starts (n+1,), classes, heights in m, materials (n+1,).

        ``SKY`` in ``classes`` stands for a gap (height 0); one final gap closes the plane.
        """
        rng = self.rng
        n_max = int(np.ceil((z_end - z_start) / length[0])) + 1
        starts = z_start + np.concatenate([[0.0], np.cumsum(rng.uniform(*length, n_max))])
        n = max(int(np.searchsorted(starts, z_end)), 1)
        starts = starts[: n + 1]
        kinds = np.asarray(classes, np.uint8)[_draw(rng, probs, n)]
        low = np.array([heights.get(int(k), (0.0, 0.0))[0] for k in classes])[_index_of(classes, kinds)]
        high = np.array([heights.get(int(k), (0.0, 0.0))[1] for k in classes])[_index_of(classes, kinds)]
        tops = rng.uniform(low, high).astype(np.float32)
        materials = self._segment_materials(kinds)
        return (
            starts,
            np.append(kinds, SKY).astype(np.uint8),
            np.append(tops, 0.0).astype(np.float32),
            np.append(materials, 0),
        )

    def _near_segments(self, z_end: float) -> tuple[np.ndarray, ...]:
        heights = {BUILDING: (7.0, 28.0), WALL: (1.2, 3.2), FENCE: (1.0, 2.2), VEGETATION: (2.5, 8.0)}
        classes = (BUILDING, WALL, FENCE, VEGETATION, SKY)
        return self._segments(-20.0, z_end, (6.0, 25.0), classes, (0.58, 0.09, 0.09, 0.14, 0.10), heights)

    def _far_segments(self, z_end: float) -> tuple[np.ndarray, ...]:
        heights = {BUILDING: (10.0, 40.0), VEGETATION: (6.0, 15.0)}
        return self._segments(-20.0, z_end, (10.0, 40.0), (BUILDING, VEGETATION), (0.75, 0.25), heights)

    def _cross_segments(
        self, low: float, high: float, p_vegetation: float, wide: bool
    ) -> tuple[np.ndarray, ...]:
        heights = {BUILDING: (low, high), VEGETATION: (low * 0.6, high * 0.5)}
        length = (15.0, 60.0) if wide else (8.0, 25.0)
        extent = 400.0 if wide else 120.0
        probs = (1 - p_vegetation, p_vegetation)
        return self._segments(-extent, extent, length, (BUILDING, VEGETATION), probs, heights)

    def _wavy(self, tops: np.ndarray, classes: np.ndarray, position: np.ndarray) -> np.ndarray:
        # Tree lines get an irregular crown instead of a flat top.
        phase = self.rng.uniform(0, 2 * np.pi, size=2)
        wave = 1.0 + 0.12 * np.sin(position * 1.3 + phase[0]) + 0.07 * np.sin(position * 3.7 + phase[1])
        return np.where(classes == VEGETATION, tops * wave, tops).astype(np.float32)

    def _side_plane(self, x_plane: float, segments: tuple[np.ndarray, ...], shade: float) -> None:
        """A façade plane parallel to the street at lateral ``x_plane`` metres (negative = left)."""
        starts, classes, tops, materials = segments
        s = self.slope_x
        valid = (s * x_plane) > 1e-6  # columns looking towards this side
        z = np.where(valid, x_plane / np.where(valid, s, 1.0), 0.0).astype(np.float32)
        valid &= z > 0.5
        index = np.clip(np.searchsorted(starts, z, side="right") - 1, 0, len(starts) - 1)
        top = self._wavy(tops[index], classes[index], z)
        height = self.camera_height - self.slope_y[:, None] * z[None, :]
        mask = valid[None, :] & (height >= 0) & (height <= top[None, :])
        cls, material = classes[index][None, :], materials[index][None, :]
        everywhere = slice(None)
        self.paint(everywhere, everywhere, mask, z[None, :], cls, material, shade, u=z[None, :], v=height)

    def _cross_plane(self, z_plane: float, segments: tuple[np.ndarray, ...], shade: float) -> None:
        """A façade plane across the street at distance ``z_plane`` metres."""
        starts, classes, tops, materials = segments
        x = self.slope_x * z_plane
        index = np.clip(np.searchsorted(starts, x, side="right") - 1, 0, len(starts) - 1)
        top = self._wavy(tops[index], classes[index], x)
        height = (self.camera_height - self.slope_y * z_plane)[:, None]
        mask = (height >= 0) & (height <= top[None, :])
        cls, material = classes[index][None, :], materials[index][None, :]
        everywhere = slice(None)
        self.paint(
            everywhere, everywhere, mask, np.float32(z_plane), cls, material, shade, u=x[None, :], v=height
        )

    # billboard objects
    def _sprite(self, x: float, z: float, width_m: float, height_m: float) -> tuple | None:
        """Pixel box of an upright rectangle standing at lateral ``x``, distance ``z`` (metres).

        Returns:
            (rows, cols, xm, ym, metres_per_pixel): slices of the box; xm (1,w) metres right of the
            centre; ym (h,1) metres above the ground. None when the box is off-screen.
        """
        metres_per_pixel = z / self.focal
        u_centre = self.cx + x / metres_per_pixel
        half = max(width_m / 2 / metres_per_pixel, 0.5)
        v_bottom = self.cy + self.camera_height / metres_per_pixel
        v_top = v_bottom - height_m / metres_per_pixel
        c0, c1 = max(int(np.floor(u_centre - half)), 0), min(int(np.ceil(u_centre + half)), self.width)
        r0, r1 = max(int(np.floor(v_top)), 0), min(int(np.ceil(v_bottom)), self.height)
        if c0 >= c1 or r0 >= r1:
            return None
        xm = ((self.cols[c0:c1] - u_centre) * metres_per_pixel)[None, :]
        ym = ((v_bottom - self.rows[r0:r1]) * metres_per_pixel)[:, None]
        return slice(r0, r1), slice(c0, c1), xm, ym, metres_per_pixel

    def _paint_parts(
        self, box: tuple, z: float, parts: Sequence[tuple[np.ndarray, int, int]], shade_gain: float = 0.25
    ) -> None:
        """Composite an object's parts (later parts cover earlier ones) and paint it at distance ``z``."""
        rows, cols, xm, ym, _ = box
        shape = (ym.shape[0], xm.shape[1])
        cls_map = np.zeros(shape, np.uint8)
        material_map = np.zeros(shape, np.int32)
        covered = np.zeros(shape, bool)
        for mask, cls, material in parts:
            if mask.shape != shape:
                mask = np.broadcast_to(mask, shape)
            cls_map[mask] = cls
            material_map[mask] = material
            covered |= mask
        span = max(float(ym.max() - ym.min()), 1e-3)
        shade = 0.8 + shade_gain * (ym - ym.min()) / span  # lit from above
        self.paint(rows, cols, covered, np.float32(z), cls_map, material_map, shade)

    def _cloth(self) -> int:
        rng = self.rng
        colour = rng.uniform(0.05, 0.7, size=3) if rng.random() < 0.6 else np.full(3, rng.uniform(0.05, 0.5))
        return self.add_material(colour, _FLAT, 180.0 + 10.0 * self.solar)

    def _skin(self) -> int:
        tone = ((0.85, 0.67, 0.55), (0.6, 0.42, 0.3), (0.4, 0.27, 0.2))[self.rng.integers(3)]
        return self.add_material(self._jitter(tone, 0.02), _FLAT, 235.0)

    def _human(self, box: tuple, x0: float, y0: float, scale: float, cls: int, sitting: bool) -> list:
        """Parts of a person whose feet (or seat, when sitting) are at (x0, y0) metres in the box."""
        _, _, xm, ym, mpp = box
        x, y = xm - x0, ym - y0
        k = scale / 1.75
        limb = max(0.075 * k, 0.5 * mpp)
        skin, top, bottom = self._skin(), self._cloth(), self._cloth()
        if sitting:  # torso above the seat, legs down to the pedals, arms to the handlebar
            torso = (np.abs(x + 0.08 * k) < 0.19 * k) & (y > 0.0) & (y < 0.6 * k)
            head = (x - 0.02 * k) ** 2 + (y - 0.75 * k) ** 2 < (0.12 * k) ** 2
            legs = (y < 0.05) & (y > -0.55) & (np.abs(x + 0.22 * y) < limb * 1.2)
            arms = (y > 0.2 * k) & (y < 0.55 * k) & (np.abs(y - 0.55 * k + x * 0.6) < limb) & (x > -0.05)
            return [(legs, cls, bottom), (torso, cls, top), (arms, cls, top), (head, cls, skin)]
        stride = self.rng.uniform(0.0, 0.2) * k
        leg_offset = 0.1 * k + stride * (0.5 * scale - y) / (0.5 * scale)
        legs = (y >= 0) & (y < 0.5 * scale) & (np.abs(np.abs(x) - leg_offset) < limb)
        torso = (np.abs(x) < 0.2 * k) & (y >= 0.47 * scale) & (y < 0.83 * scale)
        arm_width = max(0.07 * k, 0.5 * mpp)
        arms = (
            (np.abs(np.abs(x) - 0.2 * k - arm_width / 2) < arm_width / 2)
            & (y > 0.5 * scale)
            & (y < 0.8 * scale)
        )
        head = x**2 + (y - 0.91 * scale) ** 2 < (0.075 * scale) ** 2
        return [(legs, cls, bottom), (torso, cls, top), (arms, cls, top), (head, cls, skin)]

    def _person(self, x: float, z: float) -> None:
        height = self.rng.uniform(1.55, 1.92)
        box = self._sprite(x, z, 0.75 * height / 1.75, height)
        if box is not None:
            self._paint_parts(box, z, self._human(box, 0.0, 0.0, height, PERSON, sitting=False))

    def _paint_colour(self) -> list[float]:
        return self._jitter(_VEHICLE_PAINTS[self.rng.integers(len(_VEHICLE_PAINTS))], 0.03)

    def _vehicle_materials(self, running: bool) -> tuple[int, int, int, int, int]:
        """(body, glass, tyre, lamp, engine) materials; a running engine heats tyres and exhaust."""
        body = self.add_material(
            self._paint_colour(), _FLAT, 100.0 + 25.0 * self.solar + (25.0 if running else 0.0)
        )
        glass = self.add_material((0.12, 0.14, 0.17), _GLASS, 80.0 + 10.0 * self.solar)
        tyre = self.add_material((0.05, 0.05, 0.05), _FLAT, 175.0 if running else 110.0)
        glow = (1.0, 0.1, 0.05) if running else (0.0, 0.0, 0.0)
        lamp = self.add_material((0.7, 0.08, 0.06), _LAMP, 150.0 if running else 100.0, emission=glow)
        engine = self.add_material((0.1, 0.1, 0.1), _FLAT, 215.0 if running else 105.0)
        return body, glass, tyre, lamp, engine

    def _car(self, x: float, z: float, running: bool) -> None:
        """A car seen from behind."""
        w, h = self.rng.uniform(1.7, 1.95), self.rng.uniform(1.35, 1.6)
        box = self._sprite(x, z, w, h)
        if box is None:
            return
        _, _, xm, ym, _ = box
        body, glass, tyre, lamp, engine = self._vehicle_materials(running)
        half = w / 2
        taper = half - 0.08 - 0.3 * np.clip((ym - 0.55 * h) / (0.45 * h), 0, 1)
        shell = ((np.abs(xm) < half) & (ym > 0.12) & (ym < 0.55 * h)) | (
            (ym >= 0.55 * h) & (np.abs(xm) < taper)
        )
        window = (ym > 0.62 * h) & (ym < 0.93 * h) & (np.abs(xm) < taper - 0.1)
        wheels = (ym <= 0.32) & (np.abs(xm) > half - 0.32) & (np.abs(xm) < half - 0.02)
        lights = (ym > 0.4 * h) & (ym < 0.5 * h) & (np.abs(xm) > half - 0.3) & (np.abs(xm) < half)
        exhaust = (ym > 0.12) & (ym < 0.3) & (np.abs(xm + 0.45) < 0.16)
        parts = [(wheels, CAR, tyre), (shell, CAR, body), (window, CAR, glass), (lights, CAR, lamp)]
        self._paint_parts(box, z, [*parts, (exhaust, CAR, engine)])

    def _car_side(self, x: float, z: float) -> None:
        """A car crossing at the end of the street, seen from the side."""
        w, h = self.rng.uniform(3.9, 4.6), self.rng.uniform(1.35, 1.55)
        box = self._sprite(x, z, w, h)
        if box is None:
            return
        _, _, xm, ym, _ = box
        body, glass, tyre, _, engine = self._vehicle_materials(running=True)
        half = w / 2
        lower = (np.abs(xm) < half) & (ym > 0.2) & (ym < 0.58 * h)
        cabin_half = 0.3 * w - 0.5 * (ym - 0.58 * h)
        cabin = (ym >= 0.58 * h) & (ym < h) & (np.abs(xm + 0.05 * w) < cabin_half)
        window = (ym > 0.64 * h) & (ym < 0.92 * h) & (np.abs(xm + 0.05 * w) < cabin_half - 0.1)
        wheel = ((np.abs(xm) - (half - 0.8)) ** 2 + (ym - 0.32) ** 2) < 0.32**2
        engine_bay = (xm > half - 1.1) & (ym > 0.3) & (ym < 0.55 * h)
        parts = [
            (lower | cabin, CAR, body),
            (window, CAR, glass),
            (engine_bay, CAR, engine),
            (wheel, CAR, tyre),
        ]
        self._paint_parts(box, z, parts)

    def _big_vehicle(self, x: float, z: float) -> None:
        """A truck or a bus seen from behind."""
        cls = TRUCK if self.rng.random() < 0.6 else BUS
        w, h = self.rng.uniform(2.4, 2.6), self.rng.uniform(3.0, 3.8)
        box = self._sprite(x, z, w, h)
        if box is None:
            return
        _, _, xm, ym, _ = box
        body, glass, tyre, lamp, _ = self._vehicle_materials(running=True)
        half = w / 2
        shell = (np.abs(xm) < half) & (ym > 0.35)
        wheels = (ym <= 0.55) & (np.abs(xm) > half - 0.45)
        band = (0.5 * h, 0.85 * h) if cls == BUS else (0.0, 0.0)
        window = (ym > band[0]) & (ym < band[1]) & (np.abs(xm) < half - 0.12)
        lights = (ym > 0.45) & (ym < 0.7) & (np.abs(xm) > half - 0.3)
        self._paint_parts(
            box, z, [(wheels, cls, tyre), (shell, cls, body), (window, cls, glass), (lights, cls, lamp)]
        )

    def _two_wheeler(self, x: float, z: float) -> None:
        """A bicycle or motorcycle in side view with its rider."""
        motor = self.rng.random() < 0.3
        cls = MOTORCYCLE if motor else BICYCLE
        box = self._sprite(x, z, 1.9, 1.85)
        if box is None:
            return
        _, _, xm, ym, mpp = box
        frame = self.add_material(self._paint_colour(), _FLAT, 170.0 if motor else 90.0 + 10.0 * self.solar)
        tyre = self.add_material((0.05, 0.05, 0.05), _FLAT, 150.0 if motor else 85.0 + 10.0 * self.solar)
        radius = 0.33
        hub = np.sqrt((np.abs(xm) - 0.55) ** 2 + (ym - radius) ** 2)
        if motor:
            wheels = hub < radius
            body = ((xm / 0.6) ** 2 + ((ym - 0.62) / 0.24) ** 2) < 1.0
        else:
            thickness = max(0.05, 0.6 * mpp)
            wheels = np.abs(hub - radius + thickness / 2) < thickness / 2
            tube = max(0.04, 0.5 * mpp)
            body = (np.abs(ym - (radius + 0.3 * (1 - np.abs(xm) / 0.55))) < tube) & (np.abs(xm) < 0.55)
        parts = [(wheels, cls, tyre), (body, cls, frame)]
        parts += self._human(box, -0.1, 0.95, 1.75, RIDER, sitting=True)
        self._paint_parts(box, z, parts, shade_gain=0.15)

    def _pole(self, x: float, z: float, towards_road: float) -> None:
        """A pole: plain, a street lamp, or carrying a traffic sign or a traffic light."""
        rng = self.rng
        kind = ("plain", "lamp", "sign", "light")[_draw(rng, (0.25, 0.25, 0.32, 0.18))]
        height = rng.uniform(5.0, 9.0) if kind in ("plain", "lamp") else rng.uniform(2.8, 4.5)
        arm = rng.uniform(1.0, 2.0) if kind == "lamp" else 0.0
        housing_h = rng.uniform(0.8, 1.1) if kind == "light" else 0.0
        box = self._sprite(x + towards_road * arm / 2, z, arm + 1.4, height + housing_h + 0.1)
        if box is None:
            return
        _, _, xm, ym, mpp = box
        xp = xm + towards_road * arm / 2  # metres from the pole's axis
        half = max(rng.uniform(0.07, 0.15), 0.5 * mpp)
        metal = self.add_material(self._jitter((0.45, 0.46, 0.46)), _FLAT, 86.0 + 18.0 * self.solar)
        parts = [((np.abs(xp) < half) & (ym < height), POLE, metal)]
        if kind == "lamp":
            reach = xp * towards_road
            arm_mask = (reach > 0) & (reach < arm) & (np.abs(ym - height) < max(0.08, 0.5 * mpp))
            head_mask = (np.abs(reach - arm) < 0.3) & (ym < height) & (ym > height - max(0.2, mpp))
            lamp = self.add_material((0.9, 0.9, 0.8), _LAMP, 120.0, emission=(1.0, 0.85, 0.55))
            parts += [(arm_mask, POLE, metal), (head_mask, POLE, lamp)]
        elif kind == "sign":
            size = rng.uniform(0.6, 1.1)
            xs, ys = xp, ym - (height - size / 2)
            shape = rng.integers(3)
            if shape == 0:  # round
                plate = xs**2 + ys**2 < (size / 2) ** 2
                inner = xs**2 + ys**2 < (0.35 * size) ** 2
            elif shape == 1:  # triangle
                plate = (ys > -size / 2) & (np.abs(xs) < (size / 2 - ys) * 0.58)
                inner = (ys > -0.35 * size) & (np.abs(xs) < (0.3 * size - ys) * 0.5)
            else:  # square
                plate = (np.abs(xs) < size / 2) & (np.abs(ys) < size / 2)
                inner = (np.abs(xs) < 0.38 * size) & (np.abs(ys) < 0.38 * size)
            rim_colour = ((0.75, 0.08, 0.08), (0.1, 0.25, 0.65), (0.9, 0.75, 0.1))[rng.integers(3)]
            rim = self.add_material(rim_colour, _FLAT, 82.0 + 12.0 * self.solar)
            face = self.add_material((0.92, 0.92, 0.9), _FLAT, 80.0 + 12.0 * self.solar)
            parts += [(plate, TRAFFIC_SIGN, rim), (inner, TRAFFIC_SIGN, face)]
        elif kind == "light":
            ys = ym - height
            housing = self.add_material((0.08, 0.08, 0.08), _FLAT, 100.0)
            parts.append(((np.abs(xp) < 0.18) & (ys > 0) & (ys < housing_h), TRAFFIC_LIGHT, housing))
            lit = rng.integers(3)
            for k, colour in enumerate(((1.0, 0.1, 0.05), (1.0, 0.7, 0.05), (0.1, 1.0, 0.4))):
                centre = housing_h * (0.78 - 0.28 * k)
                lamp_mask = xp**2 + (ys - centre) ** 2 < max(0.1, 0.6 * mpp) ** 2
                emission = colour if k == lit else (0.0, 0.0, 0.0)
                temperature = 140.0 if k == lit else 100.0
                lamp = self.add_material(np.array(colour) * 0.35, _LAMP, temperature, emission=emission)
                parts.append((lamp_mask, TRAFFIC_LIGHT, lamp))
        self._paint_parts(box, z, parts, shade_gain=0.1)

    def _tree(self, x: float, z: float) -> None:
        rng = self.rng
        crown_r = rng.uniform(1.2, 2.8)
        trunk_h = rng.uniform(1.8, 3.2)
        box = self._sprite(x, z, 2 * crown_r, trunk_h + 1.8 * crown_r)
        if box is None:
            return
        _, _, xm, ym, mpp = box
        bark = self.add_material(self._jitter((0.3, 0.22, 0.15)), _FLAT, 72.0 + 10.0 * self.solar)
        leaves = self.add_material(self._jitter((0.18, 0.33, 0.1)), _FOLIAGE, 66.0 + 10.0 * self.solar)
        trunk = (np.abs(xm) < max(0.15, 0.5 * mpp)) & (ym < trunk_h + crown_r * 0.5)
        dy = ym - (trunk_h + crown_r * 0.9)
        lobes = 1.0 + 0.12 * np.sin(5 * np.arctan2(dy, xm) + rng.uniform(0, 6))
        crown = (xm / crown_r) ** 2 + (dy / (crown_r * 0.9)) ** 2 < lobes**2
        self._paint_parts(box, z, [(trunk, VEGETATION, bark), (crown, VEGETATION, leaves)], shade_gain=0.3)

    def _clutter(self, x: float, z: float) -> None:
        """Void street furniture (bins, boxes): labelled ``IGNORE_INDEX`` as Cityscapes' unlabelled things."""
        w, h = self.rng.uniform(0.5, 1.2), self.rng.uniform(0.6, 1.3)
        box = self._sprite(x, z, w, h)
        if box is not None:
            material = self.add_material(self.rng.uniform(0.1, 0.7, size=3), _FLAT, 90.0 + 15.0 * self.solar)
            self._paint_parts(box, z, [(np.ones((1, 1), bool), VOID, material)])

    def _objects(self, z_max: float) -> None:
        rng = self.rng
        left, right = self.road_left, self.road_right

        def on_sidewalk(side: float) -> float:
            if side < 0:
                return float(rng.uniform(self.kerb_left + 0.3, left - 0.3))
            return float(rng.uniform(right + 0.3, self.kerb_right - 0.3))

        def any_side() -> float:
            return -1.0 if rng.random() < 0.5 else 1.0

        def distance(low: float, high: float) -> float:
            # Biased towards the camera, so that things are seldom only a few pixels tall (Cityscapes
            # has ~7 % car and ~1 % person pixels).
            return low + (high - low) * rng.random() ** 1.6

        lanes = np.arange(left + 1.7, right - 1.0, 3.3)
        for _ in range(rng.integers(2, 10)):
            z = distance(4.0, z_max)
            if rng.random() < 0.55:  # parked at the kerb; parked engines are cold
                self._car(
                    (left + 1.1) if rng.random() < 0.5 else (right - 1.1), z, running=rng.random() < 0.2
                )
            else:
                self._car(float(lanes[rng.integers(len(lanes))]) + rng.normal(0, 0.2), z, running=True)
        if self.street_end is not None and rng.random() < 0.5:
            self._car_side(rng.uniform(-12.0, 12.0), self.street_end - rng.uniform(4.0, 8.0))
        if rng.random() < 0.3:
            self._big_vehicle(float(lanes[rng.integers(len(lanes))]), rng.uniform(10.0, max(z_max, 11.0)))
        for _ in range(rng.integers(1, 9)):
            if rng.random() < 0.8:
                self._person(on_sidewalk(any_side()), distance(3.0, min(z_max, 50.0)))
            else:  # crossing the road
                self._person(rng.uniform(left, right), distance(6.0, min(z_max, 40.0)))
        for _ in range(int(rng.random() < 0.5) + int(rng.random() < 0.15)):
            self._two_wheeler(
                (left + 0.9) if rng.random() < 0.5 else (right - 0.9), distance(5.0, min(z_max, 40.0))
            )
        for side, kerb, facade in ((-1.0, left, self.facade_left), (1.0, right, self.facade_right)):
            z = rng.uniform(3.0, 12.0)
            spacing = rng.uniform(12.0, 30.0)
            while z < min(z_max, 110.0):
                self._pole(kerb + side * rng.uniform(0.3, 0.8), z, towards_road=-side)
                z += spacing * rng.uniform(0.8, 1.2)
            if rng.random() < 0.45:  # a row of trees, on the terrain strip when there is one
                outer_kerb = self.kerb_left if side < 0 else self.kerb_right
                strip = abs(facade - outer_kerb)
                x_tree = (outer_kerb + facade) / 2 if strip > 1.0 else outer_kerb - side * 0.7
                z, gap = rng.uniform(4.0, 12.0), rng.uniform(6.0, 14.0)
                while z < min(z_max, 80.0):
                    self._tree(x_tree, z)
                    z += gap
        for _ in range(rng.integers(0, 3)):
            self._clutter(on_sidewalk(any_side()), rng.uniform(4.0, 40.0))


# --- rendering --------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """(H,W) float32 value noise with features of about ``cell`` pixels, zero mean, unit-ish std."""
    coarse = rng.standard_normal((height // cell + 2, width // cell + 2), dtype=np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


@lru_cache(maxsize=4)
def _noise_tile(height: int, width: int) -> np.ndarray:
    # Drawing fresh Gaussian noise per image is a large share of the render time; a fixed tile twice
    # the image size, cropped at a random offset per use, is as good for textures and sensor noise.
    return np.random.default_rng(20240101).standard_normal((2 * height, 2 * width), dtype=np.float32)


def _white_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H,W) float32 standard normal noise (a read-only view: do not modify)."""
    row, col = rng.integers(0, height), rng.integers(0, width)
    return _noise_tile(height, width)[row : row + height, col : col + width]


@lru_cache(maxsize=4)
def _radius_squared(height: int, width: int) -> np.ndarray:
    """(H,W) float32 squared distance from the image centre, 1 at the middle of each border."""
    y = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) / (height / 2)
    x = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / (width / 2)
    return y[:, None] ** 2 + x[None, :] ** 2


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _windows(u: np.ndarray, v: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Window mask on a façade from along-street ``u`` and height ``v`` (metres); spacing (n,2)."""
    fu, fv = _frac(u / spacing[:, 0]), _frac(v / spacing[:, 1])
    return (fu > 0.22) & (fu < 0.78) & (fv > 0.3) & (fv < 0.85) & (v > 2.4)


def _lit_windows(u: np.ndarray, v: np.ndarray, spacing: np.ndarray, fraction: float) -> np.ndarray:
    # A fixed hash of the window's grid cell decides whether its light is on.
    cell = (
        np.floor(u / spacing[:, 0]).astype(np.int64) * 7919
        + np.floor(v / spacing[:, 1]).astype(np.int64) * 104729
    )
    return ((cell * 2654435761) % 1000) < fraction * 1000


_LIGHT = {  # colour and brightness of the light by time of day
    "day": ((1.0, 0.98, 0.94), 1.0),
    "dusk": ((1.0, 0.78, 0.6), 0.6),
    "night": ((0.55, 0.62, 0.85), 0.15),
}
_SKY_GRADIENT = {  # (horizon, zenith) colours of a clear sky
    "day": ((0.78, 0.85, 0.93), (0.32, 0.52, 0.85)),
    "dusk": ((0.98, 0.62, 0.38), (0.3, 0.3, 0.55)),
    "night": ((0.05, 0.06, 0.1), (0.01, 0.01, 0.03)),
}
_FOG_COLOUR = {"day": (0.78, 0.8, 0.83), "dusk": (0.62, 0.52, 0.48), "night": (0.07, 0.07, 0.09)}
_EMISSION_GAIN = {"day": 0.5, "dusk": 0.8, "night": 1.2}  # lamps stand out more as the light fades


class Scene:
    """One scene: its layout and depth, with the four modalities rendered on first access (cached).

    Attributes:
        layout: (H,W) uint8 world ids: Cityscapes 19 train ids, 255 = void.
        depth_m: (H,W) float32 depth along the optical axis in metres, in (0, 1000]; sky = 1000.
        time_of_day: one of ``TIMES_OF_DAY``.
        weather: one of ``WEATHERS``.
    """

    def __init__(self, seed_seq: np.random.SeedSequence, height: int, width: int) -> None:
        self._seed_seq = seed_seq
        world = _World(_child_rng(seed_seq, 0), height, width)
        self.layout = world.layout
        self.depth_m = world.depth
        self.time_of_day = world.time_of_day
        self.weather = world.weather
        self._world = world
        self._tables = world.tables()

    @property
    def height(self) -> int:
        return self.layout.shape[0]

    @property
    def width(self) -> int:
        return self.layout.shape[1]

    @cached_property
    def _clean_rgb(self) -> np.ndarray:
        """(3,H,W) float32 in [0,1]: the RGB image before rain and sensor noise (events start from it).

        Channel-first: numpy is several times faster on long rows than on a trailing axis of 3.
        """
        world, tables = self._world, self._tables
        rng = _child_rng(self._seed_seq, 1)
        h, w = self.height, self.width
        material = world.material
        kind = np.take(tables["kind"], material)
        albedo = np.take(np.ascontiguousarray(tables["albedo"].T), material, axis=1)  # (3,H,W)
        u, v = world.surface_u, world.surface_v
        coarse = _smooth_noise(rng, h, w, 6)
        fine = _white_noise(rng, h, w)
        modulation = np.ones((h, w), np.float32)
        gain = _EMISSION_GAIN[self.time_of_day]
        emissive = np.take(tables["emission"].any(axis=1), material)
        emission = np.zeros((3, h, w), np.float32)
        emission[:, emissive] = gain * tables["emission"][material[emissive]].T
        present = set(tables["kind"].tolist())

        # Procedural texture per kind of surface, in surface coordinates (metres) where it has structure.
        if _FACADE in present:
            m = kind == _FACADE
            um, vm, pm = u[m], v[m], tables["param"][material[m]]
            glass = _windows(um, vm, pm)
            modulation[m] = 1.0 + 0.05 * coarse[m] + 0.03 * fine[m] - 0.12 * (_frac(vm / 0.25) < 0.12)
            panes = np.flatnonzero(m)[glass]
            flat_albedo = albedo.reshape(3, -1)
            flat_albedo[:, panes] = 0.1 * flat_albedo[:, panes] + np.array(
                [[0.12], [0.15], [0.2]], np.float32
            )
            if self.time_of_day != "day":
                lit = np.flatnonzero(m)[glass & _lit_windows(um, vm, pm, 0.35)]
                emission.reshape(3, -1)[:, lit] = gain * np.array([[1.0], [0.8], [0.45]], np.float32)
        if _BLOCKS in present:
            m = kind == _BLOCKS
            joints = (_frac(u[m] / 1.2) < 0.06) | (_frac(v[m] / 0.6) < 0.1)
            modulation[m] = 1.0 + 0.05 * fine[m] - 0.15 * joints
        if _FENCE in present:
            m = kind == _FENCE
            bars = _frac(u[m] / tables["param"][material[m], 0]) < 0.45
            modulation[m] = 0.55 + 0.55 * bars + 0.1 * (np.abs(v[m] - 0.9) < 0.05)
        m = kind == _FOLIAGE
        modulation[m] = np.clip(1.0 + 0.3 * coarse[m] + 0.12 * fine[m], 0.3, 1.8)
        m = kind == _GRASS
        modulation[m] = 1.0 + 0.15 * coarse[m] + 0.1 * fine[m]
        m = kind == _TILES
        um, vm, pm = u[m], v[m], tables["param"][material[m]]
        joints = (_frac(um / 0.5) < 0.08) | (_frac(vm / 0.5) < 0.06)
        kerb = (np.abs(um - pm[:, 0]) < 0.25) | (np.abs(um - pm[:, 1]) < 0.25)
        modulation[m] = 1.0 + 0.04 * fine[m] - 0.12 * joints + 0.25 * kerb
        m = kind == _ROAD
        um, vm, pm = u[m], v[m], tables["param"][material[m]]
        offset = np.abs(um - pm[:, 0])  # from the centre line
        dashed = (offset < 0.08) & (_frac(vm / 9.0) < 0.4)
        edge_lines = np.abs(offset - (pm[:, 1] - 0.3)) < 0.08
        modulation[m] = np.where(dashed | edge_lines, 2.6, 1.0 + 0.07 * coarse[m] + 0.06 * fine[m])
        m = kind == _GLASS
        modulation[m] = 1.0 + 0.3 * coarse[m]
        m = kind == _FLAT
        modulation[m] = 1.0 + 0.03 * fine[m]

        light_colour, brightness = _LIGHT[self.time_of_day]
        if self.weather in ("overcast", "rain"):
            light_colour = tuple(0.5 * c + 0.5 * g for c, g in zip(light_colour, (0.9, 0.93, 1.0)))
            brightness *= 0.75
        # Overcast light is diffuse: the side shading of façades mostly flattens.
        shade = world.shade if self.weather == "clear" else 0.8 + 0.2 * world.shade
        lit_surface = modulation * shade
        sky = world.layout == SKY
        sky_colour = self._sky(rng, coarse)
        if self.time_of_day != "day":  # lamps and lit windows glow into their surroundings
            sigma = max(1.0, w / 128)
            glow = 0.8 if self.time_of_day == "night" else 0.3
            emission += glow * np.stack([cv2.GaussianBlur(channel, (0, 0), sigma) for channel in emission])
        visibility = {"fog": rng.uniform(25.0, 90.0), "rain": rng.uniform(150.0, 400.0)}.get(
            self.weather, rng.uniform(500.0, 1500.0)
        )
        fog = 1.0 - np.exp(self.depth_m / np.float32(-visibility))
        fog[sky] = 1.0 if self.weather == "fog" else 0.0  # the sky keeps its colour unless in fog
        clear = 1.0 - fog
        image = np.empty((3, h, w), np.float32)
        for c in range(3):
            surface = albedo[c] * lit_surface * np.float32(light_colour[c] * brightness) + emission[c]
            surface = np.where(sky, sky_colour[c], surface)
            image[c] = surface * clear + np.float32(_FOG_COLOUR[self.time_of_day][c]) * fog
        return np.clip(image, 0.0, 1.0, out=image)

    def _sky(self, rng: np.random.Generator, coarse: np.ndarray) -> np.ndarray:
        """(3,H,W) float32 sky colour: a gradient up from the horizon, clouds unless at night."""
        world = self._world
        up = np.clip((world.cy - world.rows) / max(world.cy, 1.0), 0, 1)[None, :, None]  # 0 horizon, 1 top
        horizon, zenith = _SKY_GRADIENT[self.time_of_day]
        if self.weather != "clear":
            horizon = tuple(0.3 * c + 0.7 * g for c, g in zip(horizon, (0.72, 0.73, 0.75)))
            zenith = tuple(0.3 * c + 0.7 * g for c, g in zip(zenith, (0.6, 0.62, 0.65)))
            if self.time_of_day == "night":
                horizon, zenith = (0.06, 0.06, 0.07), (0.03, 0.03, 0.04)
        horizon, zenith = np.float32(horizon)[:, None, None], np.float32(zenith)[:, None, None]
        sky = np.broadcast_to(horizon * (1 - up) + zenith * up, (3, self.height, self.width))
        if self.time_of_day == "night":
            return sky
        cloud = np.clip(coarse * 0.6 + np.float32(rng.uniform(-0.4, 0.2)), 0, 1)
        white = np.float32(0.55 * (0.6 if self.time_of_day == "dusk" else 1.0))
        return sky * (1 - 0.6 * cloud) + white * cloud

    @cached_property
    def rgb(self) -> np.ndarray:
        """(H,W,3) uint8 RGB camera image."""
        rng = _child_rng(self._seed_seq, 2)
        h, w = self.height, self.width
        image = self._clean_rgb
        if self.weather == "rain":
            # Streaks: sparse drops smeared along a slanted line.
            drops = (_white_noise(rng, h, w) > 2.65).astype(np.float32)  # ~0.4 % of the pixels
            length = max(3, w // 40)
            slant = rng.uniform(-0.3, 0.3)
            kernel = np.zeros((length, length), np.float32)
            for k in range(length):
                kernel[k, int(np.clip(round(length / 2 + slant * (k - length / 2)), 0, length - 1))] = 1.0
            image = image + 0.25 * np.clip(cv2.filter2D(drops, -1, kernel), 0, 1)
        noise = {"day": 0.008, "dusk": 0.015, "night": 0.025}[self.time_of_day]
        image = image + np.float32(noise) * _white_noise(rng, h, w)
        image = cv2.GaussianBlur(np.ascontiguousarray(image.transpose(1, 2, 0)), (0, 0), 0.5)  # soft optics
        return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)

    @cached_property
    def depth(self) -> np.ndarray:
        """(H,W,3) uint8 CARLA log depth, equal channels (``encode_depth``)."""
        return encode_depth(self.depth_m)

    @cached_property
    def infrared(self) -> np.ndarray:
        """(H,W) uint8 thermal image."""
        world, tables = self._world, self._tables
        rng = _child_rng(self._seed_seq, 3)
        h, w = self.height, self.width
        material = world.material
        temperature = np.take(tables["temperature"], material)
        if _FACADE in set(tables["kind"].tolist()):
            facade = np.take(tables["kind"], material) == _FACADE
            spacing = tables["param"][material[facade]]
            glass = _windows(world.surface_u[facade], world.surface_v[facade], spacing)
            # Glass reflects the cold sky by day; lit rooms leak heat at night.
            temperature[facade] += np.where(glass, -12.0 if self.time_of_day == "day" else 10.0, 0.0)
        temperature += (12.0 * world.solar) * (world.shade - 0.8)  # sunlit façades run warmer
        temperature += 2.0 * _smooth_noise(rng, h, w, 8)  # faint surface texture
        # The atmosphere pulls distant surfaces towards its own temperature (fog only a little: LWIR
        # sees through it far better than visible light).
        attenuation = 1.0 - np.exp(self.depth_m / np.float32(-250.0 if self.weather == "fog" else -900.0))
        temperature = temperature * (1 - attenuation) + 55.0 * attenuation
        temperature = cv2.GaussianBlur(temperature, (0, 0), 1.1 * w / 256 + 0.3)
        # Automatic gain control: stretch the frame's own range, as FMB's 8-bit thermal frames do.
        low, high = np.percentile(temperature[::2, ::2], (0.5, 99.5))
        image = np.float32(20.0) + np.float32(215.0 / max(high - low, 1.0)) * (temperature - np.float32(low))
        image *= 1.0 - 0.08 * _radius_squared(h, w)  # vignetting
        image += 4.0 * _smooth_noise(rng, h, w, max(h // 3, 1))  # slow non-uniformity
        image += rng.normal(0.0, 1.5, (1, w)).astype(np.float32)  # column fixed-pattern noise
        image += 2.0 * _white_noise(rng, h, w)  # sensor noise
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)

    @cached_property
    def event(self) -> np.ndarray:
        """(H,W) uint8 event frame: 128 = no event, > 128 positive, < 128 negative polarity."""
        world = self._world
        rng = _child_rng(self._seed_seq, 4)
        h, w = self.height, self.width
        red, green, blue = self._clean_rgb
        luminance = 0.299 * red + 0.587 * green + 0.114 * blue
        log_now = np.log(luminance + np.float32(0.02))
        # Ego-motion between the two frames: forward by ``step`` metres, so the image expands about the
        # vanishing point by Z / (Z - step) (near pixels move most), plus a small pan and tilt.
        step = rng.uniform(0.2, 0.8)
        pan, tilt = rng.uniform(-1.5, 1.5) * w / 256, rng.uniform(-0.5, 0.5) * h / 128
        scale = np.clip(1.0 - np.float32(step) / self.depth_m, 0.5, 1.0)
        map_x = world.cx + (world.cols[None, :] - world.cx) * scale + np.float32(pan)
        map_y = world.cy + (world.rows[:, None] - world.cy) * scale + np.float32(tilt)
        # The next frame, warped back with the depth of the current one (a good approximation for a
        # small step).
        map_x, map_y = map_x.astype(np.float32), map_y.astype(np.float32)
        log_next = cv2.remap(log_now, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        change = log_next - log_now
        # Contrast threshold with per-pixel mismatch, as in event-camera simulators.
        threshold = np.float32(rng.uniform(0.18, 0.3)) * (1.0 + 0.1 * np.abs(_white_noise(rng, h, w)))
        count = np.floor(np.abs(change) / threshold)
        offset = np.where(count > 0, np.minimum(40.0 + 30.0 * count, 127.0), 0.0) * np.sign(change)
        noise = _white_noise(rng, h, w)
        hot = np.abs(noise) > 3.09  # ~0.2 % background-activity events of either polarity
        offset[hot] = 70.0 * np.sign(noise[hot])
        return (128.0 + offset).astype(np.uint8)


def render_scene(seed_seq: np.random.SeedSequence, height: int, width: int) -> Scene:
    """Lay out one scene from its seed sequence; modalities render lazily on access.

    Args:
        seed_seq: e.g. ``scene_seed_sequence(seed, SPLIT_TARGET_TRAIN, "infrared", index)``.
        height, width: image size in pixels.

    Returns:
        The ``Scene`` (``layout``, ``depth_m`` computed; ``rgb``, ``depth``, ``infrared``, ``event`` on
        first access).
    """
    return Scene(seed_seq, height, width)


def render_modality(scene: Scene, name: str) -> np.ndarray:
    """One modality of a scene, uint8: ``rgb`` / ``depth`` (H,W,3), ``infrared`` / ``event`` (H,W)."""
    if name not in MODALITIES:
        raise ValueError(f"unknown modality {name!r}: expected one of {list(MODALITIES)}")
    return getattr(scene, name)


# --- writing the data set ---------------------------------------------------------------------------


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # OpenCV stores colour images as BGR; no timestamps or text chunks are written.
    data = image[:, :, ::-1] if image.ndim == 3 else image
    if not cv2.imwrite(str(path), np.ascontiguousarray(data), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]):
        raise OSError(f"could not write {path}")


def _map_label(layout: np.ndarray, table: np.ndarray) -> np.ndarray:
    mapped = table[layout]
    if (mapped == UNMAPPED).any():  # a world class without a mapping: a bug in the tables above
        raise RuntimeError(f"world ids {sorted(set(layout[mapped == UNMAPPED].tolist()))} have no target id")
    return mapped.astype(np.uint8)


def _deliver_folder(index: int) -> tuple[str, str]:
    """(condition, MAP_<k>_point<m>) of a DELIVER scene: conditions cycle, 10 frames per folder."""
    condition = DELIVER_CONDITIONS[index % len(DELIVER_CONDITIONS)]
    folder = index // (10 * len(DELIVER_CONDITIONS))
    return condition, f"MAP_{DELIVER_MAPS[folder % len(DELIVER_MAPS)]}_point{100 + folder}"


def scene_paths(split_code: int, modality: str, index: int) -> dict[str, str]:
    """Relative output paths of one scene: ``{"image": ..., "label": ...}`` (every split is labelled)."""
    if split_code == SPLIT_SOURCE:
        city = CITIES[index % len(CITIES)]
        stem = f"{city}_{index // len(CITIES):06d}_000019"
        return {
            "image": f"cityscapes/leftImg8bit/train/{city}/{stem}_leftImg8bit.png",
            "label": f"cityscapes/gtFine/train/{city}/{stem}_gtFine_labelTrainIds.png",
        }
    test = split_code == SPLIT_TARGET_TEST
    split = "test" if test else "train"
    if modality == "depth":
        condition, folder = _deliver_folder(index)
        frame = f"{50 * (index + 1):06d}"
        return {
            "image": f"deliver/depth/{condition}/{split}/{folder}/{frame}_depth_front.png",
            "label": f"deliver/semantic/{condition}/{split}/{folder}/{frame}_semantic_front.png",
        }
    if modality == "infrared":
        name = f"{index + 1:05d}.png"
        return {"image": f"fmb/{split}/Infrared/{name}", "label": f"fmb/{split}/Label/{name}"}
    if modality == "event":
        sequences = DSEC_TEST_SEQUENCES if test else DSEC_TRAIN_SEQUENCES
        sequence = sequences[index % len(sequences)]
        name = f"{index // len(sequences) + 1:06d}.png"
        return {
            "image": f"dsec/69mask_{split}_edges/{sequence}/{name}",
            # The train-label folder mirrors the test one; unverified against real DSEC (module docstring).
            "label": f"dsec/{split}_semantic_labels/{sequence}/11classes/{name}",
        }
    raise ValueError(f"no files for split code {split_code} and modality {modality!r}")


def target_label(layout: np.ndarray, modality: str) -> np.ndarray:
    """A world layout written in the target dataset's label id space.

    Args:
        layout: (H,W) uint8 world ids (Cityscapes 19, 255 void).
        modality: ``"depth"`` (DELIVER), ``"infrared"`` (FMB) or ``"event"`` (DSEC).

    Returns:
        depth: (H,W,3) uint8 with channel 0 = DELIVER id + 1 (void → "other"), channels 1, 2 zero;
        infrared: (H,W) uint8 FMB ids 0..14; event: (H,W) uint8 11-class ids or 255.
    """
    if modality == "depth":
        label = np.zeros((*layout.shape, 3), np.uint8)
        label[:, :, 0] = _map_label(layout, WORLD_TO_DELIVER_PNG)
        return label
    if modality == "infrared":
        return _map_label(layout, WORLD_TO_FMB)
    if modality == "event":
        return _map_label(layout, WORLD_TO_DSEC)
    raise ValueError(f"unknown target modality {modality!r}: expected one of {list(TARGET_MODALITIES)}")


def _render_and_write(job: tuple[str, int, str, int, int, int, int]) -> np.ndarray:
    """Render one scene and write its files; returns its (256,) world-id pixel histogram."""
    root, split_code, modality, index, height, width, seed = job
    scene = render_scene(scene_seed_sequence(seed, split_code, modality, index), height, width)
    paths = scene_paths(split_code, modality, index)
    _write_png(Path(root, paths["image"]), render_modality(scene, modality))
    if split_code == SPLIT_SOURCE:
        label = _map_label(scene.layout, WORLD_TO_CITYSCAPES)
    else:
        label = target_label(scene.layout, modality)
    _write_png(Path(root, paths["label"]), label)
    return np.bincount(scene.layout.ravel(), minlength=256)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core; nested threads only add contention


def _validate(
    height: int,
    width: int,
    source_train: int,
    target_train: int,
    target_test: int,
    modalities: Sequence[str],
    workers: int,
) -> None:
    for option, value in (("--height", height), ("--width", width)):
        if value < 32 or value % 8:
            raise ValueError(
                f"{option}={value}: must be a multiple of 8 (the VAE downsamples by 8) and at least 32; "
                f"fix {option}, e.g. {max(32, value // 8 * 8)}"
            )
    for option, value in (
        ("--source-train", source_train),
        ("--target-train", target_train),
        ("--target-test", target_test),
    ):
        if value < 0:
            raise ValueError(f"{option}={value}: a scene count must be >= 0; fix {option}")
    unknown = [m for m in modalities if m not in TARGET_MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"--modalities {list(modalities)}: choose one or more of {list(TARGET_MODALITIES)}")
    if workers < 1:
        raise ValueError(f"--workers={workers}: must be >= 1; fix --workers")


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "synthetic.json").read_text())
    except (OSError, ValueError):
        return None


def _same_but_format(recorded: object, options: dict) -> bool:
    """Whether manifest options ``recorded`` equal ``options`` except for an older format version."""
    if not isinstance(recorded, dict):
        return False
    version = recorded.get("format_version")
    return (
        isinstance(version, int)
        and version < FORMAT_VERSION
        and {k: v for k, v in recorded.items() if k != "format_version"}
        == {k: v for k, v in options.items() if k != "format_version"}
    )


def generate(
    out: str | Path,
    *,
    height: int = 128,
    width: int = 256,
    source_train: int = 600,
    target_train: int = 600,
    target_test: int = 100,
    seed: int = 0,
    modalities: Sequence[str] = TARGET_MODALITIES,
    workers: int | None = None,
    force: bool = False,
) -> bool:
    """Write the synthetic data set under ``out`` (layouts in the module docstring).

    The tree is written into a temporary sibling folder and renamed to ``out`` once complete, with the
    manifest ``synthetic.json`` written last. An ``out`` whose manifest matches these options is kept;
    one that differs only by an older ``format_version`` is rewritten without ``force``.

    Args:
        out: destination folder.
        height, width: image size; multiples of 8, at least 32.
        source_train: Cityscapes-style RGB scenes with labels.
        target_train: target training scenes per target modality, labelled too (for an oracle;
            adaptation does not read the labels).
        target_test: labelled test scenes per target modality.
        seed: base seed; results are byte-identical for equal options whatever ``workers`` is.
        modalities: target modalities to write, a subset of ``TARGET_MODALITIES``.
        workers: processes; default ``min(2, os.cpu_count())``.
        force: replace an existing synthetic data set (a folder holding ``synthetic.json``).

    Returns:
        True when written, False when ``out`` already held this data set.

    Raises:
        ValueError: on a bad option, or when ``out`` exists and is not a replaceable synthetic data set.
    """
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    _validate(height, width, source_train, target_train, target_test, modalities, workers)
    modalities = [m for m in TARGET_MODALITIES if m in modalities]  # canonical order for the manifest
    out = Path(out)
    options = {
        "format_version": FORMAT_VERSION,
        "height": height,
        "width": width,
        "source_train": source_train,
        "target_train": target_train,
        "target_test": target_test,
        "seed": seed,
        "modalities": modalities,
    }
    if out.exists():
        manifest = _read_manifest(out)
        if manifest is not None and manifest.get("options") == options and not force:
            print(
                f"{out} already holds this synthetic data set (synthetic.json matches): skipping; "
                "pass --force to rewrite it"
            )
            return False
        if manifest is None and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(
                f"--out={out} exists and is not a synthetic data set (no readable synthetic.json): "
                "refusing to replace it; choose another --out or remove it"
            )
        if manifest is not None and not force and _same_but_format(manifest.get("options"), options):
            # Our own tree, asked for with the same options, written by an older renderer: stale, so
            # rewritten rather than reused (format 1 had no target-train labels).
            old_version = manifest["options"]["format_version"]
            print(
                f"{out} holds this synthetic data set in an older format "
                f"(format_version {old_version}, now {FORMAT_VERSION}): rewriting it"
            )
        elif manifest is not None and not force:
            raise ValueError(
                f"--out={out} holds a synthetic data set made with other options "
                f"({manifest.get('options')}); "
                "pass --force to replace it or choose another --out"
            )

    jobs = [(SPLIT_SOURCE, "rgb", i) for i in range(source_train)]
    for modality in modalities:
        jobs += [(SPLIT_TARGET_TRAIN, modality, i) for i in range(target_train)]
        jobs += [(SPLIT_TARGET_TEST, modality, i) for i in range(target_test)]

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        histogram = _render_all(staging, jobs, height, width, seed, workers)
        counts = {"cityscapes/train": source_train}
        dataset = {"depth": "deliver", "infrared": "fmb", "event": "dsec"}
        for modality in modalities:
            counts[f"{dataset[modality]}/train"] = target_train
            counts[f"{dataset[modality]}/test"] = target_test
        source_share = histogram[: len(CITYSCAPES_CLASSES)] / max(histogram.sum(), 1)
        _write_readme(staging, options, counts)
        manifest = {
            "generator": "madm_pl.data.synthetic",
            "options": options,
            "counts": counts,
            "source_class_share": {
                name: round(float(p), 4) for name, p in zip(CITYSCAPES_CLASSES, source_share)
            },
        }
        (staging / "synthetic.json").write_text(json.dumps(manifest, indent=2) + "\n")
        staging.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True


def _render_all(
    root: Path, jobs: list[tuple[int, str, int]], height: int, width: int, seed: int, workers: int
) -> np.ndarray:
    """Render and write every job; returns the world-id histogram of the source scenes."""
    tasks = [(str(root), split, modality, index, height, width, seed) for split, modality, index in jobs]
    histogram = np.zeros(256, np.int64)
    progress = tqdm(total=len(tasks), desc="madm-pl-data", unit="scene", file=sys.stderr)

    def collect(results: Iterable[np.ndarray]) -> None:
        for task, counts in zip(tasks, results):
            if task[1] == SPLIT_SOURCE:
                histogram[:] += counts
            progress.update()

    with progress:
        if workers == 1:
            collect(map(_render_and_write, tasks))
        else:
            # imap keeps results in job order, so the histogram does not depend on scheduling.
            with Pool(workers, initializer=_init_worker) as pool:
                collect(pool.imap(_render_and_write, tasks, chunksize=8))
    return histogram


def _write_readme(root: Path, options: dict, counts: dict[str, int]) -> None:
    lines = [
        "madm-pl synthetic four-modality street world (madm_pl.data.synthetic, console script madm-pl-data)",
        "",
        f"seed {options['seed']}, image size {options['height']}x{options['width']} (HxW), "
        f"target modalities: {', '.join(options['modalities'])}",
        "",
        "scenes per split (each scene its own layout; source, target-train and target-test never share one):",
        *(f"  {split}: {count}" for split, count in counts.items()),
        "",
        "layouts and label id spaces (as the real datasets):",
        "  cityscapes/leftImg8bit/train/<city>/*_leftImg8bit.png (RGB)",
        "  cityscapes/gtFine/train/<city>/*_gtFine_labelTrainIds.png (19 train ids, 255 void)",
        "  deliver/depth/<cond>/{train,test}/MAP_*/<id>_depth_front.png (CARLA 8-bit log depth, as assumed)",
        "  deliver/semantic/<cond>/{train,test}/MAP_*/<id>_semantic_front.png: channel 0 = DELIVER id + 1",
        "  fmb/{train,test}/Infrared/*.png, fmb/{train,test}/Label/*.png (FMB ids 0..14)",
        "  dsec/69mask_{train,test}_edges/<seq>/*.png (128 = no event)",
        "  dsec/{train,test}_semantic_labels/<seq>/11classes/*.png (11-class task ids; the train folder",
        "    name mirrors the test one and is unverified against real DSEC)",
        "",
        "synthetic.json is written last: a folder without it is incomplete.",
    ]
    (root / "README.txt").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``madm-pl-data``: write the synthetic data set (see ``generate``)."""
    parser = argparse.ArgumentParser(
        prog="madm-pl-data", description="Write madm-pl's synthetic four-modality street world."
    )
    parser.add_argument("--out", required=True, help="destination folder, e.g. data/synthetic")
    parser.add_argument("--height", type=int, default=128, help="image height, multiple of 8 (default 128)")
    parser.add_argument("--width", type=int, default=256, help="image width, multiple of 8 (default 256)")
    parser.add_argument("--source-train", type=int, default=600, help="labelled RGB source scenes")
    parser.add_argument(
        "--target-train", type=int, default=600, help="training scenes (with labels) per target modality"
    )
    parser.add_argument(
        "--target-test", type=int, default=100, help="labelled test scenes per target modality"
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: min(2, CPU count))")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing synthetic data set at --out"
    )
    parser.add_argument(
        "--modalities",
        nargs="+",
        default=list(TARGET_MODALITIES),
        metavar="MODALITY",
        help=f"target modalities, any of {' '.join(TARGET_MODALITIES)} (default: all)",
    )
    args = parser.parse_args(argv)
    try:
        written = generate(
            args.out,
            height=args.height,
            width=args.width,
            source_train=args.source_train,
            target_train=args.target_train,
            target_test=args.target_test,
            seed=args.seed,
            modalities=args.modalities,
            workers=args.workers,
            force=args.force,
        )
    except ValueError as error:
        parser.error(str(error))
    if written:
        print(f"wrote the synthetic data set to {args.out}")
    return 0

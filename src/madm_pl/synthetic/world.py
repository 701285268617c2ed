"""The synthetic world's geometry: one scene's layout, depth, materials and surface coordinates.

A scene is ONE semantic layout in the Cityscapes 19-class train-id space (``labels.CITYSCAPES_CLASSES``;
``labels.IGNORE_INDEX`` = 255 for void clutter) with a per-pixel depth in metres from a pinhole camera
looking down a straight street: a ground plane (road with markings, sidewalks, terrain strips), vertical
façade planes parallel to the street at two distances (buildings, walls, fences, hedges, gaps), an
optional cross façade closing the street or a far skyline, billboard objects standing at their distance
(cars, trucks, buses, people, cyclists, motorcyclists, poles, street lamps, traffic signs and lights,
trees, void clutter: :mod:`madm_pl.synthetic.objects`) and the sky at ``SKY_DEPTH_M``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from madm_pl.synthetic.constants import (
    _BLOCKS,
    _FACADE,
    _FENCE,
    _FOLIAGE,
    _GRASS,
    _ROAD,
    _SKY,
    _TILES,
    BUILDING,
    FENCE,
    ROAD,
    SIDEWALK,
    SKY,
    SKY_DEPTH_M,
    TERRAIN,
    TIMES_OF_DAY,
    VEGETATION,
    WALL,
    WEATHERS,
    _draw,
    _index_of,
)
from madm_pl.synthetic.objects import _StreetObjects


class _World(_StreetObjects):
    """Builds one scene: per-pixel class, depth, material and surface coordinates (z-buffered).

    The street (ground and façade planes) is built here; the objects standing in it come from
    ``_StreetObjects``.
    """

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

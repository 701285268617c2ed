"""The objects standing in the synthetic street, painted as upright billboards at their distance: cars
(parked or running), trucks and buses, people, cyclists and motorcyclists with their riders, poles (plain,
street lamps, traffic signs and lights), trees and void clutter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from madm_pl.synthetic.constants import (
    _FLAT,
    _FOLIAGE,
    _GLASS,
    _LAMP,
    _VEHICLE_PAINTS,
    BICYCLE,
    BUS,
    CAR,
    MOTORCYCLE,
    PERSON,
    POLE,
    RIDER,
    TRAFFIC_LIGHT,
    TRAFFIC_SIGN,
    TRUCK,
    VEGETATION,
    VOID,
    _draw,
)


class _StreetObjects:
    """The billboard objects of ``_World`` (a mixin: it paints with the world's camera, random generator,
    materials and z-buffer, i.e. ``rng``, ``focal``, ``cx``, ``cy``, ``camera_height``, ``rows``, ``cols``,
    ``height``, ``width``, ``solar``, the street's edges, ``add_material``, ``_jitter`` and ``paint``)."""

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

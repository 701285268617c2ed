"""The synthetic world's four sensors: one scene's layout rendered as rgb, depth, infrared and event.

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
"""

from __future__ import annotations

from functools import cached_property, lru_cache

import cv2
import numpy as np

from madm_pl.synthetic.constants import (
    _BLOCKS,
    _FACADE,
    _FENCE,
    _FLAT,
    _FOLIAGE,
    _GLASS,
    _GRASS,
    _ROAD,
    _TILES,
    MODALITIES,
    SKY,
    _child_rng,
)
from madm_pl.synthetic.world import _World


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

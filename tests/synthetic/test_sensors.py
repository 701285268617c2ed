"""Tests of the synthetic world's layouts and its four sensors (madm_pl.synthetic.world, .sensors)."""

from __future__ import annotations

import cv2
import numpy as np

from madm_pl import labels, synthetic
from madm_pl.synthetic import (
    SPLIT_SOURCE,
    SPLIT_TARGET_TEST,
    SPLIT_TARGET_TRAIN,
    render_modality,
    render_scene,
    scene_seed_sequence,
)

H, W = 64, 128
CS = {name: i for i, name in enumerate(labels.CITYSCAPES_CLASSES)}


def scenes(split: int, modality: str, count: int) -> list[synthetic.Scene]:
    return [render_scene(scene_seed_sequence(0, split, modality, i), H, W) for i in range(count)]


# (a) determinism


def test_render_is_deterministic() -> None:
    for index in range(3):
        first = render_scene(scene_seed_sequence(0, SPLIT_TARGET_TRAIN, "event", index), H, W)
        second = render_scene(scene_seed_sequence(0, SPLIT_TARGET_TRAIN, "event", index), H, W)
        # Lazy rendering: the order in which modalities are asked for must not matter.
        for name in ("event", "infrared", "rgb", "depth"):
            assert render_modality(first, name).tobytes() == render_modality(second, name).tobytes()
        for name in reversed(synthetic.MODALITIES):
            assert render_modality(first, name).tobytes() == render_modality(second, name).tobytes()
        assert first.layout.tobytes() == second.layout.tobytes()


def test_splits_and_modalities_never_share_a_layout() -> None:
    layouts = [
        scene.layout.tobytes()
        for split, modality in [
            (SPLIT_SOURCE, "rgb"),
            (SPLIT_TARGET_TRAIN, "depth"),
            (SPLIT_TARGET_TEST, "depth"),
        ]
        for scene in scenes(split, modality, 4)
    ]
    assert len(set(layouts)) == len(layouts)


# (b) layout statistics


def test_layout_has_street_classes_sky_on_top_road_below() -> None:
    batch = scenes(SPLIT_SOURCE, "rgb", 12)
    stacked = np.stack([scene.layout for scene in batch])  # (N,H,W)
    present = {labels.CITYSCAPES_CLASSES[i] for i in np.unique(stacked) if i != labels.IGNORE_INDEX}
    expected = {"road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole", "traffic sign"}
    assert expected <= present
    top, bottom = stacked[:, : H // 4], stacked[:, -H // 4 :]
    assert (top == CS["sky"]).mean() > 0.2 > (bottom == CS["sky"]).mean()
    assert (bottom == CS["road"]).mean() > 0.4 > (top == CS["road"]).mean()
    assert set(np.unique(stacked).tolist()) <= set(range(19)) | {labels.IGNORE_INDEX}


# (c) the modalities differ and stay learnable


def class_means(batch: list[synthetic.Scene], image_of, names: tuple[str, ...]) -> dict[str, float]:
    totals = {name: [0.0, 0] for name in names}
    for scene in batch:
        image = image_of(scene).astype(np.float64)
        for name in names:
            mask = scene.layout == CS[name]
            totals[name][0] += image[mask].sum()
            totals[name][1] += mask.sum()
    return {name: total / max(count, 1) for name, (total, count) in totals.items()}


def test_rgb_and_infrared_intensities_differ_per_class() -> None:
    batch = scenes(SPLIT_TARGET_TEST, "infrared", 24)
    day = [scene for scene in batch if scene.time_of_day == "day"]
    assert len(day) >= 5
    names = ("sky", "person", "vegetation", "road")
    grey = class_means(day, lambda scene: scene.rgb.mean(axis=2), names)
    thermal = class_means(batch, lambda scene: scene.infrared, names)
    assert grey["sky"] > grey["person"] + 30  # bright sky, clothes of any colour
    assert thermal["sky"] + 100 < thermal["person"]  # cold sky, warm bodies
    assert thermal["vegetation"] < thermal["road"]  # vegetation cool, road warm by day
    assert all(scene.infrared.ndim == 2 and scene.infrared.dtype == np.uint8 for scene in batch)


def test_depth_grows_with_distance() -> None:
    batch = scenes(SPLIT_TARGET_TRAIN, "depth", 6)
    for scene in batch:
        sky = scene.layout == CS["sky"]
        assert (scene.depth_m[sky] == synthetic.SKY_DEPTH_M).all()
        assert (scene.depth_m[~sky] < synthetic.SKY_DEPTH_M).all()
        encoded = scene.depth
        assert encoded.shape == (H, W, 3) and (encoded[..., 0] == encoded[..., 2]).all()
        assert (encoded[..., 0][sky] == 255).all()
        road = scene.layout == CS["road"]
        rows = np.flatnonzero(road.any(axis=1))
        near_row, far_row = rows.max(), rows.min()  # the bottom row is nearest, the top row farthest
        assert scene.depth_m[near_row][road[near_row]].mean() < scene.depth_m[far_row][road[far_row]].mean()
        assert encoded[near_row, :, 0][road[near_row]].mean() < encoded[far_row, :, 0][road[far_row]].mean()


def test_depth_encoding_is_carla_log_depth() -> None:
    depth_m = np.array([[1.0, 1000.0 / 300.0, 10.0, 100.0, 1000.0, 5000.0]], np.float32)
    expected = np.rint(255 * np.clip(1 + np.log(depth_m / 1000) / 5.70378, 0, 1))
    encoded = synthetic.encode_depth(depth_m)
    assert encoded[..., 0].tolist() == expected.tolist()
    assert encoded[0, [0, 1, 4, 5], 0].tolist() == [0, 0, 255, 255]


def test_events_are_sparse_and_sit_on_boundaries() -> None:
    on_edges, off_edges = [0, 0], [0, 0]  # [events, pixels] near / away from layout boundaries
    for scene in scenes(SPLIT_TARGET_TRAIN, "event", 6):
        event = scene.event
        assert event.dtype == np.uint8 and event.shape == (H, W)
        active = event != 128
        assert 0.01 < active.mean() < 0.35
        assert (event > 128).any() and (event < 128).any()  # both polarities
        layout = scene.layout
        boundary = np.zeros((H, W), np.uint8)
        boundary[:, 1:] |= layout[:, 1:] != layout[:, :-1]
        boundary[1:] |= layout[1:] != layout[:-1]
        near = cv2.dilate(boundary, np.ones((3, 3), np.uint8)).astype(bool)
        assert active[near].mean() > 1.5 * active[~near].mean()
        on_edges = [on_edges[0] + active[near].sum(), on_edges[1] + near.sum()]
        off_edges = [off_edges[0] + active[~near].sum(), off_edges[1] + (~near).sum()]
        open_sky = (layout == CS["sky"]) & ~near
        assert (event[open_sky] == 128).mean() > 0.95  # the sky does not move
    # Events concentrate on object boundaries: far denser there than elsewhere.
    assert on_edges[0] / on_edges[1] > 2.5 * off_edges[0] / off_edges[1]

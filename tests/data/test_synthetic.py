"""Tests of the synthetic four-modality street world (madm_pl.data.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from madm_pl import labels
from madm_pl.data import synthetic
from madm_pl.data.synthetic import (
    SPLIT_SOURCE,
    SPLIT_TARGET_TEST,
    SPLIT_TARGET_TRAIN,
    generate,
    main,
    render_modality,
    render_scene,
    scene_seed_sequence,
    target_label,
)

H, W = 64, 128
TINY = [
    "--height",
    str(H),
    "--width",
    str(W),
    "--source-train",
    "3",
    "--target-train",
    "2",
    "--target-test",
    "2",
]
CS = {name: i for i, name in enumerate(labels.CITYSCAPES_CLASSES)}


def scenes(split: int, modality: str, count: int) -> list[synthetic.Scene]:
    return [render_scene(scene_seed_sequence(0, split, modality, i), H, W) for i in range(count)]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    assert main(["--out", str(root), *TINY, "--workers", "1"]) == 0
    return root


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


def test_main_is_byte_identical_whatever_the_workers(tiny_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "two_workers"
    assert main(["--out", str(other), *TINY, "--workers", "2"]) == 0
    assert files(tiny_root) == files(other)


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


# (d) the folder layouts and label id spaces of the real datasets


def test_folder_layout_and_file_names(tiny_root: Path) -> None:
    expected = {"README.txt", "synthetic.json"}
    for city in ("synthetica", "rendertown", "pixelburg"):
        expected.add(f"cityscapes/leftImg8bit/train/{city}/{city}_000000_000019_leftImg8bit.png")
        expected.add(f"cityscapes/gtFine/train/{city}/{city}_000000_000019_gtFine_labelTrainIds.png")
    for split in ("train", "test"):
        for condition, frame in (("cloud", "000050"), ("fog", "000100")):
            expected.add(f"deliver/depth/{condition}/{split}/MAP_1_point100/{frame}_depth_front.png")
            expected.add(f"deliver/semantic/{condition}/{split}/MAP_1_point100/{frame}_semantic_front.png")
        for name in ("00001.png", "00002.png"):
            expected.add(f"fmb/{split}/Infrared/{name}")
            expected.add(f"fmb/{split}/Label/{name}")
    for sequence in ("zurich_city_00_a", "zurich_city_01_a"):
        expected.add(f"dsec/69mask_train_edges/{sequence}/000001.png")
        expected.add(f"dsec/train_semantic_labels/{sequence}/11classes/000001.png")
    for sequence in ("zurich_city_13_a", "zurich_city_14_c"):
        expected.add(f"dsec/69mask_test_edges/{sequence}/000001.png")
        expected.add(f"dsec/test_semantic_labels/{sequence}/11classes/000001.png")
    assert set(files(tiny_root)) == expected
    assert not list(tiny_root.parent.glob(".synthetic.partial-*"))  # the staging folder was renamed

    manifest = json.loads((tiny_root / "synthetic.json").read_text())
    assert manifest["options"]["height"] == H and manifest["options"]["seed"] == 0
    assert manifest["options"]["format_version"] == synthetic.FORMAT_VERSION == 2
    assert manifest["counts"] == {
        "cityscapes/train": 3,
        "deliver/train": 2,
        "deliver/test": 2,
        "fmb/train": 2,
        "fmb/test": 2,
        "dsec/train": 2,
        "dsec/test": 2,
    }
    assert "seed 0" in (tiny_root / "README.txt").read_text()


def read(path: Path) -> Image.Image:
    image = Image.open(path)
    assert image.size == (W, H)
    return image


def test_image_formats_and_label_id_spaces(tiny_root: Path) -> None:
    for path in tiny_root.glob("cityscapes/leftImg8bit/**/*.png"):
        assert read(path).mode == "RGB"
    for path in tiny_root.glob("cityscapes/gtFine/**/*.png"):
        ids = set(np.unique(np.asarray(read(path))).tolist())
        assert read(path).mode == "L" and ids <= set(range(19)) | {255}
    for path in tiny_root.glob("deliver/depth/**/*.png"):
        depth = np.asarray(read(path))
        assert depth.shape == (H, W, 3) and (depth[..., 0] == depth[..., 1]).all()
    for path in tiny_root.glob("deliver/semantic/**/*.png"):
        semantic = np.asarray(read(path))
        assert semantic.shape == (H, W, 3) and not semantic[..., 1:].any()
        assert set(np.unique(semantic[..., 0]).tolist()) <= set(range(1, len(labels.DELIVER_CLASSES) + 1))
    for folder in ("fmb/*/Infrared", "dsec/69mask_*_edges/*"):
        for path in tiny_root.glob(f"{folder}/*.png"):
            assert read(path).mode == "L"
    for path in tiny_root.glob("fmb/*/Label/*.png"):
        assert set(np.unique(np.asarray(read(path))).tolist()) <= set(range(len(labels.FMB_CLASSES)))
    for path in tiny_root.glob("dsec/*_semantic_labels/*/11classes/*.png"):
        assert set(np.unique(np.asarray(read(path))).tolist()) <= set(range(11)) | {255}


# (e) label spaces: a pixel of a class is that class in every dataset's space


def forward(label: np.ndarray, modality: str) -> np.ndarray:
    """A written target label to task ids through the readers' maps in labels.py."""
    if modality == "depth":
        return labels.deliver_semantic_to_11(label[..., 0])
    if modality == "infrared":
        return labels.remap(label, labels.FMB_TO_9)
    return labels.remap(label, labels.IDENTITY_11)


SOURCE_MAP = {
    "depth": labels.CITYSCAPES_TO_11,
    "infrared": labels.CITYSCAPES_TO_9,
    "event": labels.CITYSCAPES_TO_11,
}


@pytest.mark.parametrize("modality", synthetic.TARGET_MODALITIES)
def test_every_world_class_round_trips(modality: str) -> None:
    world = np.array([[*range(19), labels.IGNORE_INDEX]], np.uint8)  # every class once, and void
    assert (
        forward(target_label(world, modality), modality).tolist()
        == labels.remap(world, SOURCE_MAP[modality]).tolist()
    )
    car = np.full((1, 1), CS["car"], np.uint8)
    task = labels.TASKS[{"depth": "rgb2depth", "infrared": "rgb2infrared", "event": "rgb2event"}[modality]]
    assert task.classes[int(forward(target_label(car, modality), modality)[0, 0])] == "car"


def test_written_labels_round_trip(tiny_root: Path) -> None:
    for modality in synthetic.TARGET_MODALITIES:
        for index in range(2):
            scene = render_scene(scene_seed_sequence(0, SPLIT_TARGET_TEST, modality, index), H, W)
            path = tiny_root / synthetic.scene_paths(SPLIT_TARGET_TEST, modality, index)["label"]
            written = np.asarray(Image.open(path))
            expected = labels.remap(scene.layout, SOURCE_MAP[modality])
            assert (forward(written, modality) == expected).all()
    for index in range(3):
        scene = render_scene(scene_seed_sequence(0, SPLIT_SOURCE, "rgb", index), H, W)
        path = tiny_root / synthetic.scene_paths(SPLIT_SOURCE, "rgb", index)["label"]
        assert (np.asarray(Image.open(path)) == scene.layout).all()


def test_target_train_labels_are_the_layout_mapped(tiny_root: Path) -> None:
    # the target-train scenes are labelled too (for an oracle), in each dataset's layout and id space
    for modality in synthetic.TARGET_MODALITIES:
        for index in range(2):
            scene = render_scene(scene_seed_sequence(0, SPLIT_TARGET_TRAIN, modality, index), H, W)
            paths = synthetic.scene_paths(SPLIT_TARGET_TRAIN, modality, index)
            written = np.asarray(Image.open(tiny_root / paths["label"]))
            assert np.array_equal(written, target_label(scene.layout, modality))
            # the label is the layout of the scene whose image is written next to it
            image = render_modality(scene, modality)
            assert np.array_equal(np.asarray(Image.open(tiny_root / paths["image"])), image)
    assert synthetic.scene_paths(SPLIT_TARGET_TRAIN, "event", 1) == {
        "image": "dsec/69mask_train_edges/zurich_city_01_a/000001.png",
        "label": "dsec/train_semantic_labels/zurich_city_01_a/11classes/000001.png",
    }
    assert synthetic.scene_paths(SPLIT_TARGET_TRAIN, "depth", 0)["label"] == (
        "deliver/semantic/cloud/train/MAP_1_point100/000050_semantic_front.png"
    )
    assert synthetic.scene_paths(SPLIT_TARGET_TRAIN, "infrared", 0)["label"] == "fmb/train/Label/00001.png"


# (f) options, errors and the existing-folder rules


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--height", "60"], "--height"),
        (["--width", "100"], "--width"),
        (["--height", "16"], "--height"),
        (["--source-train", "-1"], "--source-train"),
        (["--target-train", "-2"], "--target-train"),
        (["--target-test", "-3"], "--target-test"),
        (["--workers", "0"], "--workers"),
        (["--modalities", "rgb"], "--modalities"),
    ],
)
def test_bad_options_name_the_option(argv: list[str], option: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as error:
        main(["--out", str(tmp_path / "out"), *argv])
    assert error.value.code == 2
    assert option in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_existing_output_is_kept_unless_forced(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synthetic"
    options = dict(height=H, width=W, source_train=1, target_train=0, target_test=1, workers=1)
    assert generate(out, modalities=["infrared"], **options)
    stamp = (out / "synthetic.json").stat().st_mtime_ns
    assert not generate(out, modalities=["infrared"], **options)  # same options: skipped
    assert "already holds" in capsys.readouterr().out
    assert (out / "synthetic.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="--force"):
        generate(out, modalities=["event"], **options)  # other options need --force
    assert generate(out, modalities=["event"], force=True, **options)
    assert (out / "dsec").is_dir() and not (out / "fmb").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not synthetic")
    with pytest.raises(ValueError, match="not a synthetic data set"):
        generate(foreign, force=True, **options)
    assert (foreign / "keep.txt").exists()


def test_older_format_is_rewritten_without_force(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synthetic"
    options = dict(height=H, width=W, source_train=1, target_train=1, target_test=1, workers=1)
    assert generate(out, modalities=["infrared"], **options)
    current = files(out)
    # what a format-1 tree looked like: the same options, no target-train labels
    manifest = json.loads((out / "synthetic.json").read_text())
    manifest["options"]["format_version"] = 1
    (out / "synthetic.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "fmb/train/Label/00001.png").unlink()
    assert generate(out, modalities=["infrared"], **options)  # stale: rewritten, no --force needed
    assert "older format (format_version 1, now 2): rewriting it" in capsys.readouterr().out
    assert files(out) == current
    # a newer or foreign format version is not silently replaced
    manifest["options"]["format_version"] = 99
    (out / "synthetic.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="--force"):
        generate(out, modalities=["infrared"], **options)


def test_interrupted_run_leaves_nothing_at_out(tmp_path: Path, monkeypatch) -> None:
    def fail(job):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_render_and_write", fail)
    with pytest.raises(KeyboardInterrupt):
        generate(
            tmp_path / "synthetic",
            height=H,
            width=W,
            source_train=2,
            target_train=0,
            target_test=0,
            workers=1,
        )
    assert list(tmp_path.iterdir()) == []

"""Tests of writing the synthetic world in the real datasets' layouts (madm_pl.synthetic.writer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from madm_pl import labels, synthetic
from madm_pl.synthetic import (
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
from madm_pl.synthetic import writer as synthetic_writer
from madm_pl.synthetic.writer import scene_progress

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


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    assert main(["--out", str(root), *TINY, "--workers", "1"]) == 0
    return root


def test_main_is_byte_identical_whatever_the_workers(tiny_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "two_workers"
    assert main(["--out", str(other), *TINY, "--workers", "2"]) == 0
    assert files(tiny_root) == files(other)


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

    monkeypatch.setattr(synthetic_writer, "_render_and_write", fail)
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


def test_a_world_written_before_the_move_is_current(tmp_path: Path, capsys) -> None:
    # Manifests name the generator "madm_pl.data.synthetic" (its module before madm_pl.synthetic): a
    # folder written then, with equal options, is kept as it is (``make data`` stays a no-op).
    out = tmp_path / "synthetic"
    options = dict(height=H, width=W, source_train=1, target_train=0, target_test=1, workers=1)
    assert generate(out, modalities=["event"], **options)
    manifest = json.loads((out / "synthetic.json").read_text())
    assert manifest["generator"] == "madm_pl.data.synthetic"
    manifest["generator"] = "another name"
    (out / "synthetic.json").write_text(json.dumps(manifest))
    assert not generate(out, modalities=["event"], **options)
    assert "already holds" in capsys.readouterr().out


def test_python_m_runs_the_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "madm_pl.synthetic", "--out", str(tmp_path / "w"), "--height", "60"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "--height=60" in result.stderr
    assert not (tmp_path / "w").exists()


def test_progress_in_a_log_file_is_a_line_every_tenth(tmp_path: Path) -> None:
    # a bar's carriage-return updates would pile up on one line of a log file (2,700 for the demo world)
    log = tmp_path / "log.txt"
    with log.open("w") as stream, scene_progress(25, stream) as progress:
        for _ in range(25):
            progress.update()
    lines = log.read_text().splitlines()
    assert "\r" not in log.read_text()
    assert [line.split(" | ")[0] for line in lines] == [
        f"madm-pl-data: {done}/25 scenes" for done in (3, 6, 9, 12, 15, 18, 21, 24, 25)
    ]


def test_pool_workers_take_the_default_sigterm_action_whatever_the_parent_installed() -> None:
    # After a Lightning fit in the same process, SIGTERM has Lightning's Python handler (it only sets a
    # flag); a forked pool worker inheriting it would ignore the pool's terminate() and hang its exit.
    import signal

    previous = signal.signal(signal.SIGTERM, lambda number, frame: None)
    try:
        synthetic_writer._init_worker()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)

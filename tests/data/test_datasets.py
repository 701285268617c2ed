"""Datasets in the real layouts: remapped ids on known pixels, file lists, readers, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from madm_pl.data.datasets import (
    CityscapesDataset,
    DeliverDepthDataset,
    DSECEventDataset,
    FMBInfraredDataset,
    ImageFolderDataset,
    UnlabelledImages,
    build_target_dataset,
    load_label_map,
)
from madm_pl.data.io import read_image, read_label
from tests.fake_trees import FakeTree, image_value, split_label, write_file_list, write_png


def _halves(label: torch.Tensor | np.ndarray) -> tuple[int, int]:
    """(id at the left-top pixel, id at the right-bottom pixel)."""
    return int(label[0, 0]), int(label[-1, -1])


# ------------------------------------------------------------------------------------ readers
def test_read_image_modes(tmp_path: Path) -> None:
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = read_image(write_png(tmp_path / "l.png", gray))
    assert out.shape == (2, 3, 3)
    assert out.dtype == np.uint8
    assert (out == gray[:, :, None]).all()  # repeated to 3 channels
    rgba = np.dstack([np.full((2, 3), v, np.uint8) for v in (10, 20, 30, 40)])
    assert read_image(write_png(tmp_path / "rgba.png", rgba))[0, 0].tolist() == [10, 20, 30]  # alpha dropped
    la = Image.fromarray(gray).convert("LA")
    la.save(tmp_path / "la.png")
    assert (read_image(tmp_path / "la.png") == gray[:, :, None]).all()
    Image.fromarray(np.full((2, 3), 1000, np.uint16)).save(tmp_path / "deep.png")
    assert (read_image(tmp_path / "deep.png") == 4).all()  # 16-bit, full range: round(1000 / 65535 * 255)


def test_read_label_palette_and_channels(tmp_path: Path) -> None:
    indices = np.array([[0, 3], [14, 255]], dtype=np.uint8)
    palette = Image.frombytes("P", (2, 2), indices.tobytes())
    palette.putpalette([v % 256 for v in range(768)])
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label(tmp_path / "p.png"), indices)  # indices, not colours
    rgb = np.dstack([indices, indices + 1, indices])
    np.testing.assert_array_equal(read_label(write_png(tmp_path / "rgb.png", rgb)), indices)  # channel 0


def test_readers_name_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"image file not found: '.*missing\.png'"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read label '.*broken\.png'.*corrupt"):
        read_label(tmp_path / "broken.png")


# ------------------------------------------------------------------------------ real layouts
def test_cityscapes_remaps_with_the_task(cityscapes_tree: FakeTree) -> None:
    depth = CityscapesDataset(cityscapes_tree.root, "train", "rgb2depth")
    infrared = CityscapesDataset(cityscapes_tree.root, "train", "rgb2infrared")
    assert len(depth) == 3
    # road|car -> 5|8 (11 classes), 4|7 (9 classes); building|bicycle -> 1|8 and 1|7
    assert _halves(depth[0]["label"]) == (5, 8)
    assert _halves(infrared[0]["label"]) == (4, 7)
    assert _halves(infrared[2]["label"]) == (1, 7)
    assert _halves(depth.load(1, remap_label=False).label) == (10, 11)  # stored train ids
    item = depth[2]
    assert set(item) == {"image", "label", "name"}
    assert item["image"].shape == (3, 32, 64)
    assert item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64
    assert torch.allclose(item["image"], torch.full((3, 32, 64), image_value(2) / 255))
    assert item["name"] == "leftImg8bit/train/aachen/aachen_000002_000019_leftImg8bit"


def test_fmb_train_unlabelled_and_test_mapped(fmb_tree: FakeTree) -> None:
    train = FMBInfraredDataset(fmb_tree.root, "train", "rgb2infrared")
    assert len(train) == 3
    assert set(train[0]) == {"image", "name"}
    assert train.load(1).label is None
    image = train[1]["image"]
    assert image.shape == (3, 16, 32)  # single channel repeated
    assert torch.allclose(image, torch.full_like(image, image_value(1) / 255))
    test = FMBInfraredDataset(fmb_tree.root, "test", "rgb2infrared")
    # FMB road|car -> 4|7, sky|pole -> 0|3
    assert [_halves(test[i]["label"]) for i in range(2)] == [(4, 7), (0, 3)]
    assert test[1]["name"] == "test/Infrared/00101"


def test_deliver_uses_channel0_minus_one(deliver_tree: FakeTree) -> None:
    train = DeliverDepthDataset(deliver_tree.root, "train", "rgb2depth")
    assert [
        p.relative_to(deliver_tree.root).as_posix() for p in train.image_paths
    ] == deliver_tree.train_images
    test = DeliverDepthDataset(deliver_tree.root, "test", "rgb2depth")
    assert len(test) == 2
    # conditions sort cloud < sun: stored 1|13 (cloud) -> building|sky = 1|0; 7|255 (sun) -> road|ignore
    assert _halves(test[0]["label"]) == (1, 0)
    assert _halves(test[1]["label"]) == (5, 255)
    assert test[0]["name"].startswith("depth/cloud/test/MAP_1_point102/")


def test_dsec_identity_and_alpha_dropped(dsec_tree: FakeTree) -> None:
    test = DSECEventDataset(dsec_tree.root, "test", "rgb2event")
    assert [_halves(test[i]["label"]) for i in range(2)] == [(5, 8), (0, 255)]
    assert test[0]["image"].shape == (3, 16, 32)
    assert test.label_paths[1].relative_to(dsec_tree.root).as_posix() == dsec_tree.test_labels[1]
    assert len(DSECEventDataset(dsec_tree.root, "train", "rgb2event")) == 2


def test_dsec_reference_frames_keep_the_reference_lists_frames(dsec_tree: FakeTree, tmp_path: Path) -> None:
    # the fixture holds train 000002, 000004 and test 000001, 000002 (the reference's frames); add the
    # frames its lists leave out: train 000000 and the odd ones, test 000000, and a second sequence
    root = dsec_tree.root
    for name in ("zurich_city_00_a/000000", "zurich_city_00_a/000001", "zurich_city_00_a/000003"):
        write_png(root / f"69mask_train_edges/{name}.png", np.full((16, 32), 128, np.uint8))
    for frame in range(4):
        write_png(root / f"69mask_train_edges/zurich_city_01_a/{frame:06d}.png", np.zeros((16, 32), np.uint8))
    write_png(root / "69mask_test_edges/zurich_city_13_a/000000.png", np.zeros((16, 32), np.uint8))
    write_png(
        root / "test_semantic_labels/zurich_city_13_a/11classes/000000.png", split_label((16, 32), 5, 8)
    )

    train = DSECEventDataset(root, "train", "rgb2event", frames="reference")
    assert [train.name_of(i) for i in range(len(train))] == [
        "69mask_train_edges/zurich_city_00_a/000002",
        "69mask_train_edges/zurich_city_00_a/000004",
        "69mask_train_edges/zurich_city_01_a/000002",
    ]
    assert train.frames_dropped == 6  # 00_a: 0, 1, 3; 01_a: 0, 1, 3
    assert train.frame_selection() == (
        "DSEC train: kept 3 frames, dropped 6 (data.dsec_frames='reference': the even frames from 000002 "
        "of each sequence, as the reference's list)"
    )
    test = build_target_dataset("rgb2event", root, "test", dsec_frames="reference")
    assert (len(test), test.frames_dropped) == (2, 1)
    assert test.name_of(0) == "69mask_test_edges/zurich_city_13_a/000001"
    everything = DSECEventDataset(root, "train", "rgb2event")  # the default: every frame found
    assert (len(everything), everything.frames_dropped, everything.frame_selection()) == (9, 0, None)
    # a file list is the selection: used as it is
    listed = write_file_list(
        tmp_path / "train.json", target_images=["69mask_train_edges/zurich_city_01_a/000001.png"]
    )
    from_list = DSECEventDataset(root, "train", "rgb2event", listed, frames="reference")
    assert (len(from_list), from_list.frame_selection()) == (1, None)


def test_dsec_reference_frames_errors(dsec_tree: FakeTree, fmb_tree: FakeTree, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.dsec_frames='odd': expected one of \['all', 'reference'\]"):
        DSECEventDataset(dsec_tree.root, "train", "rgb2event", frames="odd")
    with pytest.raises(ValueError, match=r"data\.dsec_frames='reference' applies only to DSEC"):
        build_target_dataset("rgb2infrared", fmb_tree.root, "test", dsec_frames="reference")
    write_png(
        dsec_tree.root / "69mask_train_edges/zurich_city_00_a/frame_a.png", np.zeros((16, 32), np.uint8)
    )
    with pytest.raises(ValueError, match=r"frame_a\.png' has no frame number: data\.dsec_frames='reference'"):
        DSECEventDataset(dsec_tree.root, "train", "rgb2event", frames="reference")
    odd = tmp_path / "odd"
    write_png(odd / "69mask_train_edges/zurich_city_00_a/000001.png", np.zeros((16, 32), np.uint8))
    with pytest.raises(ValueError, match=r"keeps none of the 1 DSEC train frames under root='.*odd'"):
        DSECEventDataset(odd, "train", "rgb2event", frames="reference")


def test_build_target_dataset_picks_by_task(fmb_tree: FakeTree, deliver_tree: FakeTree) -> None:
    assert isinstance(build_target_dataset("rgb2infrared", fmb_tree.root, "test"), FMBInfraredDataset)
    assert isinstance(build_target_dataset("rgb2depth", deliver_tree.root, "train"), DeliverDepthDataset)
    with pytest.raises(ValueError, match=r"unknown data.target_kind 'sonar'"):
        build_target_dataset("rgb2depth", deliver_tree.root, "train", kind="sonar")
    with pytest.raises(ValueError, match=r"data.label_map applies only to data.target_kind='folder'"):
        build_target_dataset("rgb2depth", deliver_tree.root, "test", label_map="map.yaml")
    with pytest.raises(ValueError, match=r"task 'rgb2infrared' adapts to 'fmb', not to 'deliver'"):
        DeliverDepthDataset(deliver_tree.root, "test", "rgb2infrared")


# ------------------------------------------------------------------------- target train labels
def test_target_train_labels_are_read_from_the_train_split(
    fmb_tree: FakeTree, deliver_tree: FakeTree, dsec_tree: FakeTree, folder_tree: FakeTree, tmp_path: Path
) -> None:
    # each dataset's train labels, in its layout, next to the train images of the fixtures
    for name in fmb_tree.train_images:  # FMB road | car -> 4 | 7
        write_png(fmb_tree.root / name.replace("/Infrared/", "/Label/"), split_label((16, 32), 1, 9))
    for name in deliver_tree.train_images:  # stored 1 | 13 (channels 1, 2 ignored) -> building | sky
        label = split_label((16, 32), 1, 13)
        path = name.replace("depth/", "semantic/", 1).replace("_depth_front", "_semantic_front")
        write_png(deliver_tree.root / path, np.stack([label, label * 0 + 7, label * 0 + 7], axis=-1))
    dsec_labels = []
    for name in dsec_tree.train_images:  # 11-class ids as stored: road | car
        sequence, file = name.split("/")[1:]
        dsec_labels.append(f"train_semantic_labels/{sequence}/11classes/{file}")
        write_png(dsec_tree.root / dsec_labels[-1], split_label((16, 32), 5, 8))
    write_png(folder_tree.root / "train/images/a/frame.png", np.zeros((16, 32, 3), np.uint8))
    write_png(folder_tree.root / "train/labels/a/frame.png", split_label((16, 32), 1, 2))

    cases = [
        ("rgb2infrared", fmb_tree, "fmb", (4, 7), None),
        ("rgb2depth", deliver_tree, "deliver", (1, 0), None),
        ("rgb2event", dsec_tree, "dsec", (5, 8), None),
        ("rgb2depth", folder_tree, "folder", (5, 7), tmp_path / "mycam_labels.yaml"),
    ]
    for task, tree, kind, halves, label_map in cases:
        unlabelled = build_target_dataset(task, tree.root, "train", kind=kind, label_map=label_map)
        assert unlabelled.label_paths is None and "label" not in unlabelled[0]  # the default
        train = build_target_dataset(task, tree.root, "train", kind=kind, label_map=label_map, labelled=True)
        assert train.has_labels and all(_halves(train[i]["label"]) == halves for i in range(len(train)))
        assert not any("test" in p.relative_to(tree.root).as_posix() for p in train.label_paths)
    # DSEC: train_semantic_labels mirrors test_semantic_labels; the test split still reads the latter
    train = DSECEventDataset(dsec_tree.root, "train", "rgb2event", labelled=True)
    assert [p.relative_to(dsec_tree.root).as_posix() for p in train.label_paths] == dsec_labels
    assert dsec_labels[0] == "train_semantic_labels/zurich_city_00_a/11classes/000002.png"
    test = DSECEventDataset(dsec_tree.root, "test", "rgb2event")
    assert [p.relative_to(dsec_tree.root).as_posix() for p in test.label_paths] == dsec_tree.test_labels
    # the labelled folder train split reads train/images only, not the unlabelled train/cam JPEGs
    folder = ImageFolderDataset(folder_tree.root, "train", "rgb2depth", labelled=True)
    assert [folder.name_of(i) for i in range(len(folder))] == ["train/images/a/frame"]


def test_missing_target_train_labels_are_clear_errors(fmb_tree: FakeTree, dsec_tree: FakeTree) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"DSEC not found under data\.target_root=.*missing: train_semantic_labels\).*"
        r"data\.target_train_labels=true reads the target training labels",
    ):
        build_target_dataset("rgb2event", dsec_tree.root, "train", labelled=True)
    write_png(fmb_tree.root / "train/Label/00001.png", split_label((16, 32), 1, 9))  # 00002, 00003 lack one
    with pytest.raises(
        FileNotFoundError,
        # every image without its label is named, in one error
        match=r"(?s)2 problems:.*FMB image '.*train/Infrared/00002\.png' has no label: expected "
        r"'.*train/Label/00002\.png'.*/00003\.png' has no label.*set data\.target_train_labels=false",
    ):
        build_target_dataset("rgb2infrared", fmb_tree.root, "train", labelled=True)


# ------------------------------------------------------------------------------ image folder
def test_image_folder_with_yaml_map(folder_tree: FakeTree, tmp_path: Path) -> None:
    train = build_target_dataset("rgb2depth", folder_tree.root, "train", kind="folder")
    assert isinstance(train, ImageFolderDataset)
    assert len(train) == 2  # JPEGs in a subfolder
    assert train[0]["name"] == "train/cam/frame_000"
    test = build_target_dataset(
        "rgb2depth", folder_tree.root, "test", kind="folder", label_map=tmp_path / "mycam_labels.yaml"
    )
    # raw 1 -> "road" = 5 in the 11 classes, raw 2 -> train id 7
    assert _halves(test[0]["label"]) == (5, 7)
    unmapped = ImageFolderDataset(folder_tree.root, "test", "rgb2depth")  # no map: raw ids are train ids
    assert _halves(unmapped[0]["label"]) == (1, 2)


def test_label_map_values(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text("0: ignore\n3: 255\n4: sky\n5: 8\n")
    table = load_label_map(path, "rgb2infrared")
    assert [int(table[i]) for i in (0, 3, 4, 5, 255)] == [255, 255, 0, 8, 255]
    path.write_text("1: fence\n")  # not a class of the 9-class task
    with pytest.raises(ValueError, match=r"1: 'fence' is not a class of task 'rgb2infrared'"):
        load_label_map(path, "rgb2infrared")
    path.write_text("1: 9\n")
    with pytest.raises(ValueError, match=r"train id 0..8"):
        load_label_map(path, "rgb2infrared")
    path.write_text("300: road\n")
    with pytest.raises(ValueError, match=r"key 300 is not a raw id"):
        load_label_map(path, "rgb2infrared")
    path.write_text("- road\n")
    with pytest.raises(ValueError, match=r"must be a mapping"):
        load_label_map(path, "rgb2infrared")
    with pytest.raises(FileNotFoundError, match=r"fix data.label_map"):
        load_label_map(tmp_path / "nope.yaml", "rgb2infrared")


def test_image_folder_unmapped_raw_id_names_file(folder_tree: FakeTree, tmp_path: Path) -> None:
    (tmp_path / "partial.yaml").write_text("1: road\n")  # raw 2 missing
    test = ImageFolderDataset(folder_tree.root, "test", "rgb2depth", label_map=tmp_path / "partial.yaml")
    with pytest.raises(
        ValueError, match=r"label '.*test/labels/frame_000\.png': label ids \[2\] are outside"
    ):
        test[0]


def test_unlabelled_images_for_predict(folder_tree: FakeTree) -> None:
    images = UnlabelledImages(folder_tree.root / "train")
    assert len(images) == 2
    assert images[1]["name"] == "cam/frame_001.jpg"  # the relative path with the full file name
    with pytest.raises(FileNotFoundError, match=r"no folder data.predict_root="):
        UnlabelledImages(folder_tree.root / "nope", option="data.predict_root")


# -------------------------------------------------------------------------------- file lists
def test_file_list_loads_exactly_the_listed_files(cityscapes_tree: FakeTree, fmb_tree: FakeTree, tmp_path):
    # the reference writes target roots and paths either with or without a separator: accept "/x"
    listed = write_file_list(
        tmp_path / "train.json",
        source=([cityscapes_tree.train_images[2], cityscapes_tree.train_images[0]],
                [cityscapes_tree.train_labels[2], cityscapes_tree.train_labels[0]]),
        target_images=["/" + fmb_tree.train_images[1]],
    )  # fmt: skip
    source = CityscapesDataset(cityscapes_tree.root, "train", "rgb2depth", file_list=listed)
    assert len(source) == 2
    assert _halves(source[0]["label"]) == (1, 8)  # image 2 first, as listed
    assert _halves(source[1]["label"]) == (5, 8)
    target = FMBInfraredDataset(fmb_tree.root, "train", "rgb2infrared", file_list=listed)
    assert [target[0]["name"]] == ["train/Infrared/00002"]
    test_list = write_file_list(
        tmp_path / "test.json", target_images=fmb_tree.test_images[1:], target_labels=fmb_tree.test_labels[1:]
    )
    test = FMBInfraredDataset(fmb_tree.root, "test", "rgb2infrared", file_list=test_list)
    assert len(test) == 1
    assert _halves(test[0]["label"]) == (0, 3)


def test_file_list_errors(fmb_tree: FakeTree, tmp_path: Path) -> None:
    missing = write_file_list(tmp_path / "a.json", target_images=["train/Infrared/09999.png"])
    with pytest.raises(FileNotFoundError, match=r"09999\.png' \(listed in '.*a\.json'\) does not exist"):
        FMBInfraredDataset(fmb_tree.root, "train", "rgb2infrared", file_list=missing)
    swapped = write_file_list(
        tmp_path / "b.json", target_images=fmb_tree.test_images, target_labels=fmb_tree.test_labels[::-1]
    )
    with pytest.raises(ValueError, match=r"does not belong to image"):
        FMBInfraredDataset(fmb_tree.root, "test", "rgb2infrared", file_list=swapped)
    no_labels = write_file_list(tmp_path / "c.json", target_images=fmb_tree.test_images)
    with pytest.raises(ValueError, match=r"has no target_data.second_modality and label lists"):
        FMBInfraredDataset(fmb_tree.root, "test", "rgb2infrared", file_list=no_labels)
    uneven = write_file_list(
        tmp_path / "d.json", target_images=fmb_tree.test_images, target_labels=fmb_tree.test_labels[:1]
    )
    with pytest.raises(ValueError, match=r"second_modality has 2 entries but target_data.label has 1"):
        FMBInfraredDataset(fmb_tree.root, "test", "rgb2infrared", file_list=uneven)
    with pytest.raises(FileNotFoundError, match=r"file list '.*nope.json' not found"):
        FMBInfraredDataset(fmb_tree.root, "test", "rgb2infrared", file_list=tmp_path / "nope.json")


# ------------------------------------------------------------------------------- bad input
def test_missing_root_names_option_and_layout(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"FMB not found under data.target_root='.*/x': expected test/Infrared/ and test/Label/ "
        r"\(missing: the root itself\); fix data.target_root",
    ):
        build_target_dataset("rgb2infrared", tmp_path / "x", "test")


def test_missing_split_folder(fmb_tree: FakeTree, cityscapes_tree: FakeTree) -> None:
    for path in (fmb_tree.root / "test/Label").iterdir():
        path.unlink()
    (fmb_tree.root / "test/Label").rmdir()
    with pytest.raises(
        FileNotFoundError, match=r"expected test/Infrared/ and test/Label/ \(missing: test/Label\)"
    ):
        FMBInfraredDataset(fmb_tree.root, "test", "rgb2infrared", option="data.target_root")
    with pytest.raises(
        FileNotFoundError, match=r"Cityscapes not found under data.source_root=.*leftImg8bit/val/"
    ):
        CityscapesDataset(cityscapes_tree.root, "val", "rgb2depth", option="data.source_root")
    with pytest.raises(ValueError, match=r"FMB has no split 'val': expected one of \['train', 'test'\]"):
        FMBInfraredDataset(fmb_tree.root, "val", "rgb2infrared")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "dsec/69mask_train_edges/zurich_city_00_a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no DSEC train images under data.target_root='.*dsec'.*empty"):
        DSECEventDataset(tmp_path / "dsec", "train", "rgb2event", option="data.target_root")


def test_image_without_label(dsec_tree: FakeTree) -> None:
    (dsec_tree.root / dsec_tree.test_labels[0]).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"DSEC image '.*000001\.png' has no label: expected '.*11classes"
    ):
        DSECEventDataset(dsec_tree.root, "test", "rgb2event")


def test_label_id_outside_map_names_file_and_ids(fmb_tree: FakeTree) -> None:
    write_png(fmb_tree.root / fmb_tree.test_labels[0], split_label((16, 32), 1, 15))  # FMB has ids 0..14
    test = FMBInfraredDataset(fmb_tree.root, "test", "rgb2infrared")
    with pytest.raises(ValueError, match=r"label '.*00100\.png': label ids \[15\] are outside the label map"):
        test[0]


def test_size_mismatch(cityscapes_tree: FakeTree) -> None:
    write_png(cityscapes_tree.root / cityscapes_tree.train_labels[1], np.zeros((16, 64), np.uint8))
    dataset = CityscapesDataset(cityscapes_tree.root, "train", "rgb2depth")
    with pytest.raises(
        ValueError, match=r"is 32x64 but its label '.*000001_000019_gtFine_labelTrainIds.png' is 16x64"
    ):
        dataset[1]


def test_unreadable_image(fmb_tree: FakeTree) -> None:
    (fmb_tree.root / fmb_tree.train_images[0]).write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"cannot read image '.*00001\.png'"):
        FMBInfraredDataset(fmb_tree.root, "train", "rgb2infrared")[0]

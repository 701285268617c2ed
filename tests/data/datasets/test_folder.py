"""``datasets/folder.py``: your own images with a YAML label map, and a folder to predict on."""

from __future__ import annotations

from pathlib import Path

import pytest

from madm_pl.data.datasets import ImageFolderDataset, UnlabelledImages, build_target_dataset, load_label_map
from tests.fake_trees import FakeTree, label_halves


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
    assert label_halves(test[0]["label"]) == (5, 7)
    unmapped = ImageFolderDataset(folder_tree.root, "test", "rgb2depth")  # no map: raw ids are train ids
    assert label_halves(unmapped[0]["label"]) == (1, 2)


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

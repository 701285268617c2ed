"""``datasets/base.py`` through the real layouts: file lists, and bad input named (missing folders,
labels, ids outside the map, sizes, unreadable files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from madm_pl.data.datasets import (
    CityscapesDataset,
    DSECEventDataset,
    FMBInfraredDataset,
    build_target_dataset,
)
from tests.fake_trees import FakeTree, label_halves, split_label, write_file_list, write_png


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
    assert label_halves(source[0]["label"]) == (1, 8)  # image 2 first, as listed
    assert label_halves(source[1]["label"]) == (5, 8)
    target = FMBInfraredDataset(fmb_tree.root, "train", "rgb2infrared", file_list=listed)
    assert [target[0]["name"]] == ["train/Infrared/00002"]
    test_list = write_file_list(
        tmp_path / "test.json", target_images=fmb_tree.test_images[1:], target_labels=fmb_tree.test_labels[1:]
    )
    test = FMBInfraredDataset(fmb_tree.root, "test", "rgb2infrared", file_list=test_list)
    assert len(test) == 1
    assert label_halves(test[0]["label"]) == (0, 3)


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

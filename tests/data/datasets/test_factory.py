"""``datasets/factory.py``: the target dataset of a task, and its train labels when asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from madm_pl.data.datasets import (
    DeliverDepthDataset,
    DSECEventDataset,
    FMBInfraredDataset,
    ImageFolderDataset,
    build_target_dataset,
)
from tests.fake_trees import FakeTree, label_halves, split_label, write_png


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
        assert train.has_labels and all(label_halves(train[i]["label"]) == halves for i in range(len(train)))
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

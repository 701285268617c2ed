"""``datasets/dsec.py``: 11-class ids as stored, alpha dropped, the reference's frame rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from madm_pl.data.datasets import DSECEventDataset, build_target_dataset
from tests.fake_trees import FakeTree, label_halves, split_label, write_file_list, write_png


def test_dsec_identity_and_alpha_dropped(dsec_tree: FakeTree) -> None:
    test = DSECEventDataset(dsec_tree.root, "test", "rgb2event")
    assert [label_halves(test[i]["label"]) for i in range(2)] == [(5, 8), (0, 255)]
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
    # one message for the rule wherever it is checked (TargetDataset.init_options), as the datamodule's
    only_dsec = r"data\.dsec_frames='reference' applies only to data\.target_kind='dsec'"
    with pytest.raises(ValueError, match=only_dsec):
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

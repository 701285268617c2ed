"""Rare class sampling: probabilities by hand, candidates, the crop redraw rule, the cached statistics."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from madm_pl.data import rcs
from madm_pl.data.datasets import CityscapesDataset
from madm_pl.data.rcs import (
    CACHE_NAME,
    RareClassSampler,
    crop_with_class,
    load_or_compute_class_counts,
    rcs_class_probabilities,
)
from tests.fake_trees import FakeTree, write_png


def test_probabilities_three_classes_by_hand() -> None:
    # freq = 0.7, 0.2, 0.1 -> (1 - freq) / T with T = 0.5 -> 0.6, 1.6, 1.8
    classes, probs = rcs_class_probabilities({0: 700, 5: 200, 11: 100, 3: 0}, temperature=0.5)
    z = math.exp(0.6) + math.exp(1.6) + math.exp(1.8)
    assert classes.tolist() == [11, 5, 0]  # ascending count, the absent class 3 left out
    np.testing.assert_allclose(probs, [math.exp(1.8) / z, math.exp(1.6) / z, math.exp(0.6) / z], rtol=1e-12)
    _, sharp = rcs_class_probabilities({0: 700, 5: 200, 11: 100}, temperature=0.01)
    np.testing.assert_allclose(sharp[0] / sharp[1], math.exp(10), rtol=1e-9)  # (0.9 - 0.8) / 0.01
    with pytest.raises(ValueError, match=r"temperature must be > 0"):
        rcs_class_probabilities({0: 1}, temperature=0)
    with pytest.raises(ValueError, match=r"no labelled pixel"):
        rcs_class_probabilities({0: 0}, temperature=0.01)


def test_candidates_are_images_with_more_than_min_pixels() -> None:
    counts = [{0: 500, 18: 100}, {0: 500, 18: 101}, {0: 400, 7: 5}]
    with pytest.warns(
        UserWarning, match=r"classes \[7\] have no source image with more than rcs_min_pixels=100"
    ):
        sampler = RareClassSampler(counts, temperature=0.01, min_pixels=100)
    assert sampler.classes.tolist() == [18, 0]  # 7 dropped: its only image has 5 <= 100 pixels
    assert sampler.candidates[18].tolist() == [1]  # 100 is not more than 100
    assert sampler.candidates[0].tolist() == [0, 1, 2]
    assert sampler.probs.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    draws = [sampler.sample(rng) for _ in range(200)]
    assert {image for c, image in draws if c == 18} == {1}
    assert sum(c == 18 for c, _ in draws) > 150  # the rarer class dominates at T = 0.01
    with pytest.raises(ValueError, match=r"lower data.rcs_min_pixels"):
        RareClassSampler(counts, temperature=0.01, min_pixels=10_000)


def _draws(labels: list[np.ndarray]):
    calls = []

    def draw() -> tuple[np.ndarray, np.ndarray]:
        label = labels[min(len(calls), len(labels) - 1)]
        calls.append(label)
        return label, label

    return draw, calls


def test_crop_redraw_rule() -> None:
    empty, some, many = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    some[:2, :2] = 3  # 4 pixels of class 3
    many[:3, :3] = 3  # 9 pixels
    # threshold = 10 * 0.5 = 5: "some" (4) fails, "many" (9) passes
    draw, calls = _draws([empty, some, many, empty])
    _, label = crop_with_class(draw, 3, min_pixels=10, min_crop_ratio=0.5)
    assert label is many
    assert len(calls) == 3
    draw, calls = _draws([empty])  # never enough: the first crop and 10 redraws, the last one returned
    crop_with_class(draw, 3, min_pixels=10, min_crop_ratio=0.5)
    assert len(calls) == 11
    draw, calls = _draws([empty, many])
    _, label = crop_with_class(draw, 3, min_pixels=10, min_crop_ratio=0.0)  # ratio 0: no test
    assert label is empty
    assert len(calls) == 1


def test_counts_cached_and_invalidated(cityscapes_tree: FakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    root = cityscapes_tree.root
    labels = CityscapesDataset(root, "train", "rgb2depth").label_paths
    counts = load_or_compute_class_counts(root, labels)
    # 32x64 labels, halves of 1024 pixels: road|car, sky|person, building|bicycle (19-class ids)
    assert counts == [{0: 1024, 13: 1024}, {10: 1024, 11: 1024}, {2: 1024, 18: 1024}]
    cache = json.loads((root / CACHE_NAME).read_text())
    assert cache["counts"][cityscapes_tree.train_labels[2]] == {"2": 1024, "18": 1024}
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]

    def no_counting(label: np.ndarray) -> dict:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(rcs, "count_classes", no_counting)
    assert load_or_compute_class_counts(root, labels[::-1]) == counts[::-1]  # same files, any order
    monkeypatch.undo()

    # a changed file list (one label fewer) recomputes and overwrites the cache
    assert load_or_compute_class_counts(root, labels[:2]) == counts[:2]
    assert json.loads((root / CACHE_NAME).read_text())["key"] != cache["key"]
    # a changed file (other size) recomputes too
    old_size = os.path.getsize(labels[0])
    bigger = np.zeros((32, 64), np.uint8)
    bigger[:, :5] = 18
    bigger[0, 0] = 7
    write_png(labels[0], bigger)
    assert os.path.getsize(labels[0]) != old_size
    assert load_or_compute_class_counts(root, labels[:2])[0] == {0: 1888, 7: 1, 18: 159}


def test_read_only_root_warns_and_still_counts(cityscapes_tree: FakeTree, monkeypatch) -> None:
    labels = CityscapesDataset(cityscapes_tree.root, "train", "rgb2depth").label_paths

    def refuse(*args: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.warns(UserWarning, match=r"could not write the RCS cache"):
        counts = load_or_compute_class_counts(cityscapes_tree.root, labels)
    assert counts[0] == {0: 1024, 13: 1024}
    assert not list(Path(cityscapes_tree.root).glob("*madm_rcs*"))


def test_rcs_crops_hold_the_rare_class(tmp_path: Path) -> None:
    """A rare class in the left 12 columns of a 16x64 image, 16x16 crops: with the crop test most crops
    hold more than 0.5 * 100 pixels of it; without (ratio 0) most do not."""
    from madm_pl.data.datamodule import CrossModalityTrainDataset
    from madm_pl.data.datasets import FMBInfraredDataset
    from madm_pl.data.transforms import TrainTransform
    from tests.fake_trees import write_cityscapes, write_fmb

    label = np.zeros((16, 64), np.uint8)
    label[:, :12] = 18  # 192 pixels of bicycle
    source = CityscapesDataset(write_cityscapes(tmp_path / "cs", [label]).root, "train", "rgb2infrared")
    target = FMBInfraredDataset(write_fmb(tmp_path / "fmb", []).root, "train", "rgb2infrared")
    sampler = RareClassSampler(load_or_compute_class_counts(source.root, source.label_paths), 0.01, 100)
    hits = {}
    for ratio in (0.5, 0.0):
        dataset = CrossModalityTrainDataset(
            source, target, TrainTransform((16, 64), (16, 16)), TrainTransform((16, 32), (16, 16)),
            seed=0, epoch_length=40, rcs=sampler, rcs_min_pixels=100, rcs_min_crop_ratio=ratio,
        )  # fmt: skip
        # bicycle is "car" (7) in the 9 classes
        hits[ratio] = np.mean([(dataset[i]["source_label"] == 7).sum().item() > 50 for i in range(40)])
    assert hits[0.5] >= 0.75  # one try succeeds with p = 9/49; 11 tries: 0.89
    assert hits[0.0] <= 0.45


def test_a_source_label_with_a_foreign_id_stops_the_statistics_pass(cityscapes_tree: FakeTree) -> None:
    root = cityscapes_tree.root
    labels = CityscapesDataset(root, "train", "rgb2depth").label_paths
    bad = np.zeros((32, 64), np.uint8)
    bad[:, 32:] = 255  # ignored: fine
    bad[3, 7] = 50  # one pixel of an id that no Cityscapes train id is
    bad[4, 7] = 19
    write_png(labels[1], bad)
    with pytest.raises(ValueError) as caught:
        load_or_compute_class_counts(root, labels)
    assert str(caught.value) == (
        f"source label '{labels[1]}' holds id(s) [19, 50], which are not Cityscapes train ids (0..18, 255 = "
        "ignore): fix or replace the file (gtFine/*_labelTrainIds.png holds train ids; *_labelIds.png holds "
        "the 34 original ids and cannot be used as it is)"
    )
    assert not (root / CACHE_NAME).exists()  # nothing cached from a bad tree

"""Label maps of METHOD.md §1 on known pixel values, remap errors and colorize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from madm_pl import labels
from madm_pl.labels import IGNORE_INDEX, remap

# METHOD.md §1, written out pair by pair.
CITYSCAPES_11 = {0: 5, 1: 6, 2: 1, 3: 9, 4: 2, 5: 4, 6: 10, 7: 10, 8: 7, 9: 7, 10: 0, 11: 3, 12: 3}
CITYSCAPES_11 |= {c: 8 for c in range(13, 19)}
CITYSCAPES_9 = {0: 4, 1: 5, 2: 1, 3: 255, 4: 255, 5: 3, 6: 8, 7: 8, 8: 6, 9: 6, 10: 0, 11: 2, 12: 2}
CITYSCAPES_9 |= {c: 7 for c in range(13, 19)}
FMB_9 = {0: 255, 1: 4, 2: 5, 3: 1, 4: 8, 5: 8, 6: 6, 7: 0, 8: 2, 9: 7, 10: 7, 11: 7, 12: 7, 13: 7, 14: 3}
DELIVER_11 = {0: 1, 1: 2, 2: 255, 3: 3, 4: 4, 5: 5, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9, 11: 10, 12: 0}
DELIVER_11 |= {13: 255, 14: 255, 15: 255, 16: 255, 17: 10, 18: 255, 19: 255, 20: 255}
DELIVER_11 |= {21: 7, 22: 8, 23: 8, 24: 8}


def _apply(pairs: dict[int, int], table: np.ndarray) -> None:
    raw = np.array([[*list(pairs), IGNORE_INDEX]], dtype=np.uint8)
    expected = np.array([[*list(pairs.values()), IGNORE_INDEX]], dtype=np.uint8)
    np.testing.assert_array_equal(remap(raw, table), expected)


@pytest.mark.parametrize(
    ("pairs", "table", "first_bad"),
    [
        (CITYSCAPES_11, labels.CITYSCAPES_TO_11, 19),
        (CITYSCAPES_9, labels.CITYSCAPES_TO_9, 19),
        (FMB_9, labels.FMB_TO_9, 15),
        (DELIVER_11, labels.DELIVER_TO_11, 25),
        ({i: i for i in range(11)}, labels.IDENTITY_11, 11),
    ],
    ids=["cityscapes-11", "cityscapes-9", "fmb-9", "deliver-11", "dsec-identity"],
)
def test_label_map_on_every_id(pairs: dict[int, int], table: np.ndarray, first_bad: int) -> None:
    _apply(pairs, table)
    with pytest.raises(ValueError, match=rf"label ids \[{first_bad}\] are outside the label map"):
        remap(np.array([[0, first_bad]], dtype=np.uint8), table)


def test_task_maps_are_wired() -> None:
    assert labels.get_task("rgb2depth").target_map is labels.DELIVER_TO_11
    assert labels.get_task("rgb2infrared").source_map is labels.CITYSCAPES_TO_9
    assert labels.get_task("rgb2event").target_map is labels.IDENTITY_11
    assert [labels.get_task(t).num_classes for t in ("rgb2depth", "rgb2infrared", "rgb2event")] == [11, 9, 11]
    with pytest.raises(ValueError, match=r"unknown task 'rgb2sonar'"):
        labels.get_task("rgb2sonar")


def test_deliver_channel0_minus_one_then_map() -> None:
    # stored 1 -> id 0 building -> 1; 13 -> 12 sky -> 0; 3 -> 2 other -> 255; 18 -> 17 traffic light -> 10
    # 255 stays 255; 0 (never stored by DELIVER) -> ignore.
    stored = np.array([[1, 13, 3, 18, 255, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(labels.deliver_semantic_to_11(stored), [[1, 0, 255, 10, 255, 255]])
    with pytest.raises(ValueError, match=r"\[25\]"):
        labels.deliver_semantic_to_11(np.array([[26]], dtype=np.uint8))


def test_remap_tensor_and_errors() -> None:
    out = remap(torch.tensor([[0, 13, 255]]), labels.CITYSCAPES_TO_9)
    assert out.dtype == torch.int64
    assert out.tolist() == [[4, 7, 255]]
    with pytest.raises(ValueError, match=r"must be integers"):
        remap(np.zeros((2, 2), dtype=np.float32), labels.IDENTITY_11)
    with pytest.raises(ValueError, match=r"must lie in \[0, 255\]"):
        remap(np.array([[-1, 3]]), labels.IDENTITY_11)


def test_colorize_numpy_and_tensor() -> None:
    palette = labels.get_task("rgb2infrared").palette  # sky first, traffic sign last
    label = np.array([[0, 8, 255]])
    rgb = labels.colorize(label, palette)
    assert rgb.shape == (1, 3, 3)
    assert rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [70, 130, 180]
    assert rgb[0, 1].tolist() == [250, 170, 30]
    assert rgb[0, 2].tolist() == [0, 0, 0]
    painted = labels.colorize(torch.tensor([[[0, 8, 255]]]), palette)  # (1,1,3) -> (1,3,1,3)
    assert painted.shape == (1, 3, 1, 3)
    assert painted[0, :, 0, 1].tolist() == [250, 170, 30]


def test_colorize_tensor_palette_past_the_palette_and_errors() -> None:
    palette = torch.tensor([[255, 0, 0], [0, 255, 0]], dtype=torch.uint8)  # a buffer, as the module holds
    painted = labels.colorize(torch.tensor([[[0, 1], [2, 255]]]), palette)
    assert painted.dtype == torch.uint8 and painted.device == palette.device
    assert painted[0, :, 0, 0].tolist() == [255, 0, 0]
    assert painted[0, :, 0, 1].tolist() == [0, 255, 0]
    assert painted[0, :, 1, 0].tolist() == [0, 0, 0]  # an id past the palette is black, as ignore
    assert painted[0, :, 1, 1].tolist() == [0, 0, 0]
    assert labels.colorize(np.array([[1]]), palette)[0, 0].tolist() == [0, 255, 0]  # numpy label too
    with pytest.raises(ValueError, match=r"\(C,3\)"):
        labels.colorize(np.array([[0]]), np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="C <= 255"):
        labels.colorize(np.array([[0]]), np.zeros((256, 3), dtype=np.uint8))

"""Transforms: sizes, nearest labels, Pillow's bilinear resize, seeded crops and flips."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from madm_pl.data.transforms import TestTransform, TrainTransform, image_to_tensor, label_to_tensor


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 13, 255], np.uint8), size=(32, 64))
    return image, label


def test_train_transform_sizes_and_seeding() -> None:
    image, label = _inputs()
    transform = TrainTransform(resize=(16, 32), crop=(8, 8))
    out_image, out_label = transform(image, label, seed=3)
    assert out_image.shape == (8, 8, 3)
    assert out_image.dtype == np.uint8
    assert out_label.shape == (8, 8)
    assert set(np.unique(out_label)) <= {0, 13, 255}  # nearest: no new ids
    again_image, again_label = transform(image, label, seed=3)
    np.testing.assert_array_equal(out_image, again_image)
    np.testing.assert_array_equal(out_label, again_label)
    crops = {transform(image, label, seed=s)[0].tobytes() for s in range(10)}
    assert len(crops) > 5  # other seeds, other crops
    assert transform(image, seed=np.random.default_rng(1))[1] is None  # image only


def test_crop_and_label_stay_aligned_and_flip_happens() -> None:
    # image pixel value = column index: the label (same columns) must follow every crop and flip
    columns = np.tile(np.arange(64, dtype=np.uint8), (16, 1))
    image = np.repeat(columns[:, :, None], 3, axis=2)
    transform = TrainTransform(resize=(16, 64), crop=(16, 16))
    flips = 0
    for seed in range(20):
        out_image, out_label = transform(image, columns, seed=seed)
        np.testing.assert_array_equal(out_image[:, :, 0], out_label)
        flips += int(out_label[0, 0] > out_label[0, -1])
    assert 3 <= flips <= 17  # p = 0.5


def test_resize_is_pillow_bilinear_and_nearest() -> None:
    image, label = _inputs()
    out_image, out_label = TestTransform((16, 32))(image, label)
    expected = np.asarray(Image.fromarray(image).resize((32, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out_image, expected)
    np.testing.assert_array_equal(
        out_label, np.asarray(Image.fromarray(label).resize((32, 16), Image.NEAREST))
    )


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match=r"crop \(16, 16\) is larger than the resized image \(8, 32\)"):
        TrainTransform((8, 32), (16, 16))
    with pytest.raises(ValueError, match="size must be"):
        TestTransform((0, 4))


def test_tensor_conversion() -> None:
    image = np.full((2, 3, 3), 255, np.uint8)
    tensor = image_to_tensor(image)
    assert tensor.shape == (3, 2, 3)
    assert float(tensor.max()) == 1.0
    assert label_to_tensor(np.zeros((2, 3), np.uint8)).dtype.is_floating_point is False

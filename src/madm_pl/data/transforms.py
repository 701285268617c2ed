"""Albumentations pipelines of the data (METHOD.md §2), seeded per sample.

Training: resize (image bilinear, label nearest), random crop, horizontal flip with p=0.5. Test:
resize image (bilinear) and label (nearest) to the test size. Sizes are ``(height, width)``.

The resize is Pillow's, as in the reference: Pillow's bilinear filter widens with the scale factor
when it shrinks (antialiasing), which OpenCV's ``INTER_LINEAR`` does not; for Cityscapes' 2x
downscale the two differ visibly. Labels use Pillow's nearest neighbour (same pixels as OpenCV's
``INTER_NEAREST_EXACT``).

Randomness: every random call takes a ``seed`` (an int, or a ``numpy.random.Generator`` from which
one is drawn) and reseeds the pipeline before use, so a sample depends only on its seed, whatever
the process or worker that makes it.

albumentations (and OpenCV with it) is imported when a pipeline is built, not with this module:
``madm-pl --help`` and the other commands that build no data should not pay its import.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import albumentations

Size = tuple[int, int]


def _albumentations() -> ModuleType:
    # Albumentations asks PyPI for a newer version at import; training machines are often offline.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def _check_size(size: Size, name: str) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"{name} must be (height, width) with positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def _seed_of(seed: int | np.random.Generator) -> int:
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63 - 1))
    return int(seed)


def _run(
    pipeline: albumentations.Compose, image: np.ndarray, label: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    if label is None:
        return pipeline(image=image)["image"], None
    out = pipeline(image=image, mask=label)
    return out["image"], out["mask"]


class TrainTransform:
    """Resize, then random crop, then horizontal flip p=0.5 (METHOD.md §2).

    The resize and the random part are separate so that rare class sampling can redraw the crop of
    one resized image (``crop_flip`` again) without resizing it again.

    Args:
        resize: (height, width) after resizing, e.g. (512, 1024) for Cityscapes.
        crop: (height, width) of the random crop, e.g. (512, 512); at most ``resize``.
    """

    def __init__(self, resize: Size, crop: Size) -> None:
        self.resize_size = _check_size(resize, "resize")
        self.crop_size = _check_size(crop, "crop")
        if self.crop_size[0] > self.resize_size[0] or self.crop_size[1] > self.resize_size[1]:
            raise ValueError(f"crop {self.crop_size} is larger than the resized image {self.resize_size}")
        albu = _albumentations()
        from madm_pl.data.pil_resize import PILResize

        self._resize = albu.Compose([PILResize(*self.resize_size)])
        self._crop_flip = albu.Compose([albu.RandomCrop(*self.crop_size), albu.HorizontalFlip(p=0.5)], seed=0)

    def resize(
        self, image: np.ndarray, label: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Resize image (bilinear) and label (nearest).

        Args:
            image: (H,W,3) uint8.
            label: (H,W) uint8 ids, or None.

        Returns:
            image (h,w,3) uint8 and label (h,w) uint8 or None, (h,w) = ``resize``.
        """
        return _run(self._resize, image, label)

    def crop_flip(
        self, image: np.ndarray, label: np.ndarray | None = None, *, seed: int | np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Random crop then random horizontal flip, the same for image and label.

        Args:
            image: (h,w,3) uint8, already resized.
            label: (h,w) uint8 ids, or None.
            seed: fixes the crop position and the flip.

        Returns:
            image (ch,cw,3) uint8 and label (ch,cw) uint8 or None, (ch,cw) = ``crop``.
        """
        self._crop_flip.set_random_seed(_seed_of(seed))
        return _run(self._crop_flip, image, label)

    def __call__(
        self, image: np.ndarray, label: np.ndarray | None = None, *, seed: int | np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``resize`` then ``crop_flip``; shapes and dtypes as there."""
        image, label = self.resize(image, label)
        return self.crop_flip(image, label, seed=seed)


class TestTransform:
    """Resize image (bilinear) and label (nearest) to the test size, no randomness (METHOD.md §2).

    Args:
        size: (height, width), e.g. (512, 512).
    """

    __test__ = False  # not a pytest class

    def __init__(self, size: Size) -> None:
        self.size = _check_size(size, "size")
        albu = _albumentations()
        from madm_pl.data.pil_resize import PILResize

        self._resize = albu.Compose([PILResize(*self.size)])

    def __call__(
        self, image: np.ndarray, label: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Args: image (H,W,3) uint8; label (H,W) uint8 or None. Returns them at ``size``."""
        return _run(self._resize, image, label)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 in [0,255] to (3,H,W) float32 in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def label_to_tensor(label: np.ndarray) -> torch.Tensor:
    """(H,W) integer ids to (H,W) int64."""
    return torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))

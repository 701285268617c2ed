"""Pillow's resize as an albumentations transform (the data pipelines of ``data.transforms``).

A module of its own so that ``data.transforms`` imports albumentations only when it builds a pipeline,
while the transform stays a module-level class (pipelines are pickled into DataLoader workers).
"""

from __future__ import annotations

import os

import numpy as np

# Albumentations asks PyPI for a newer version at import; training machines are often offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A
from PIL import Image


class PILResize(A.DualTransform):
    """Resize with Pillow: images bilinear (antialiased when shrinking), masks nearest.

    Args:
        height: output height in pixels.
        width: output width in pixels.
    """

    def __init__(self, height: int, width: int, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.height = height
        self.width = width

    def apply(self, img: np.ndarray, **params: object) -> np.ndarray:
        if img.shape[:2] == (self.height, self.width):
            return img
        resized = Image.fromarray(img).resize((self.width, self.height), Image.Resampling.BILINEAR)
        return np.asarray(resized)

    def apply_to_mask(self, mask: np.ndarray, **params: object) -> np.ndarray:
        if mask.shape[:2] == (self.height, self.width):
            return mask
        resized = Image.fromarray(mask).resize((self.width, self.height), Image.Resampling.NEAREST)
        return np.asarray(resized)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width")

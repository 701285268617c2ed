"""The items of the datamodule's loaders: training pairs (``CrossModalityTrainDataset``, METHOD.md §2)
and evaluation or prediction images at a fixed size (``ResizedDataset``).

Training samples are indexed by their global sample number ``i``: every random choice of sample ``i``
(source image, uniform or by RCS; target image; crops; flips) comes from
``numpy.random.SeedSequence([seed, i])`` (see ``datamodule``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from madm_pl.data.datasets import CityscapesDataset, SegmentationDataset, UnlabelledImages
from madm_pl.data.rcs import RareClassSampler, crop_with_class
from madm_pl.data.reference import ReferenceShare
from madm_pl.data.transforms import TestTransform, TrainTransform, image_to_tensor, label_to_tensor
from madm_pl.labels import remap


class CrossModalityTrainDataset(Dataset):
    """Training pairs: one labelled source crop and one target crop per sample (labelled when ``target``
    loads labels).

    Any non-negative index is valid: sample ``i`` is a pure function of ``(seed, i)``. ``len`` is
    the number of samples of one epoch.

    Args:
        source: the labelled source (Cityscapes) dataset.
        target: the target training dataset; when it loads labels (``has_labels``) they are
            transformed with the image and returned as ``target_label``.
        source_transform: resize + crop + flip of the source.
        target_transform: resize + crop + flip of the target (image and label alike).
        seed: base seed.
        epoch_length: samples per epoch, returned by ``len``.
        rcs: rare class sampler over ``source``, or None for uniform source images.
        rcs_min_pixels: RCS threshold (full-resolution pixels), for the crop test.
        rcs_min_crop_ratio: the crop must hold more than ``ratio * min_pixels`` pixels of the class.
    """

    def __init__(
        self,
        source: CityscapesDataset,
        target: SegmentationDataset,
        source_transform: TrainTransform,
        target_transform: TrainTransform,
        seed: int,
        epoch_length: int,
        rcs: RareClassSampler | None = None,
        rcs_min_pixels: int = 3000,
        rcs_min_crop_ratio: float = 0.5,
    ) -> None:
        self.source = source
        self.target = target
        self.source_transform = source_transform
        self.target_transform = target_transform
        self.seed = seed
        self.epoch_length = epoch_length
        self.rcs = rcs
        self.rcs_min_pixels = rcs_min_pixels
        self.rcs_min_crop_ratio = rcs_min_crop_ratio

    def __len__(self) -> int:
        return self.epoch_length

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample number ``index``.

        Returns:
            ``{"source_image": (3,h,w) float32 in [0,1], "source_label": (h,w) int64 task ids or 255,
            "target_image": (3,h,w) float32 in [0,1]}``, (h,w) = the crop size; plus
            ``"target_label": (h,w) int64 task ids or 255`` (resized nearest, cropped and flipped with
            the target image) when the target dataset is labelled.
        """
        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
        if self.rcs is not None:
            rare_class, source_index = self.rcs.sample(rng)
        else:
            rare_class, source_index = None, int(rng.integers(len(self.source)))
        target_index = int(rng.integers(len(self.target)))

        source = self.source.load(source_index, remap_label=False)  # 19 Cityscapes train ids
        image, label = self.source_transform.resize(source.image, source.label)

        def draw_crop() -> tuple[np.ndarray, np.ndarray]:
            return self.source_transform.crop_flip(image, label, seed=rng)

        if rare_class is None:
            source_image, source_label = draw_crop()
        else:
            source_image, source_label = crop_with_class(
                draw_crop, rare_class, self.rcs_min_pixels, self.rcs_min_crop_ratio
            )
        source_label = remap(source_label, self.source.task.source_map)

        target = self.target.load(target_index)
        # One seed draw either way: with or without the label, the image crop and the stream match.
        target_image, target_label = self.target_transform(target.image, target.label, seed=rng)
        item = {
            "source_image": image_to_tensor(source_image),
            "source_label": label_to_tensor(source_label),
            "target_image": image_to_tensor(target_image),
        }
        if target_label is not None:
            item["target_label"] = label_to_tensor(target_label)
        return item


class ResizedDataset(Dataset):
    """A dataset at a fixed size: ``{"image", "label"?, "name", "size"?, "error"?,
    "in_reference_share"?}`` contract items.

    With ``predict=True`` an item also has its original ``size`` and an ``error``: ``""``, or why the
    file could not be read; such an item's image is zeros (the writer skips it), so one bad file does
    not stop a folder's prediction. ``in_reference_share`` (a bool) is there when ``share`` is given:
    whether the item is one of the images the reference's published numbers score
    (``reference.reference_share``).
    """

    def __init__(
        self,
        dataset: SegmentationDataset | UnlabelledImages,
        size: tuple[int, int],
        predict: bool,
        share: ReferenceShare | None = None,
    ):
        self.dataset = dataset
        self.size = size
        self.transform = TestTransform(size)
        self.predict = predict
        self.share = share

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.predict:
            sample = self.dataset.load(index)
            image, label = self.transform(sample.image, sample.label)
            item: dict[str, Any] = {"image": image_to_tensor(image), "name": sample.name}
            if label is not None:
                item["label"] = label_to_tensor(label)
            if self.share is not None:
                item["in_reference_share"] = index in self.share.indices
            return item
        try:
            sample = self.dataset.load(index)
        except (OSError, ValueError) as error:
            return {
                "image": image_to_tensor(np.zeros((*self.size, 3), np.uint8)),
                "name": self.dataset.name_of(index),
                "size": label_to_tensor(np.array(self.size)),
                "error": str(error),
            }
        image, _ = self.transform(sample.image, None)
        return {
            "image": image_to_tensor(image),
            "name": sample.name,
            "size": label_to_tensor(np.array(sample.image.shape[:2])),
            "error": "",
        }

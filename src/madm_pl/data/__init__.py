"""Data layer: readers, datasets in their real layouts, rare class sampling, transforms, datamodule."""

from typing import Any

from madm_pl.data.datasets import (
    DELIVER_CONDITIONS,
    CityscapesDataset,
    DeliverDepthDataset,
    DSECEventDataset,
    FMBInfraredDataset,
    ImageFolderDataset,
    UnlabelledImages,
    build_target_dataset,
    load_label_map,
)
from madm_pl.data.io import read_image, read_label
from madm_pl.data.rcs import RareClassSampler, load_or_compute_class_counts, rcs_class_probabilities

__all__ = [
    "DELIVER_CONDITIONS",
    "CityscapesDataset",
    "CrossModalityDataModule",
    "CrossModalityTrainDataset",
    "DSECEventDataset",
    "DeliverDepthDataset",
    "FMBInfraredDataset",
    "ImageFolderDataset",
    "RareClassSampler",
    "UnlabelledImages",
    "build_target_dataset",
    "load_label_map",
    "load_or_compute_class_counts",
    "rcs_class_probabilities",
    "read_image",
    "read_label",
]


def __getattr__(name: str) -> Any:
    # The datamodule imports Lightning (seconds): load it only when asked, so that `madm-pl-data`,
    # which needs the synthetic world alone, starts fast.
    if name in ("CrossModalityDataModule", "CrossModalityTrainDataset"):
        from madm_pl.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'madm_pl.data' has no attribute {name!r}")

"""Datasets in their real on-disk layouts (METHOD.md §1), plus a folder of your own images.

Every dataset lists its files at construction, either by scanning the layout (sorted, so the order
is deterministic) or, given ``file_list``, exactly the files of a reference JSON list (paths relative
to ``root``)::

    {"source_data": {"RGB": [...], "label": [...]},                    # Cityscapes (train lists)
     "target_data": {"second_modality": [...], "label": [...]}}        # target ("label": labelled splits)

``dataset[i]`` is the contract item of docs/ARCHITECTURE.md at the stored size:
``{"image": (3,H,W) float32 in [0,1], "label": (H,W) int64 task train ids or 255, "name": str}``
(no "label" for unlabelled splits; a target's train split is unlabelled unless built with
``labelled=True``, for an oracle). ``dataset.load(i)`` gives the same as numpy arrays
(a ``Sample``) for the transforms of the datamodule. ``name`` is the image path relative to
``root`` without its suffix, e.g. ``"test/Infrared/00043"`` (``UnlabelledImages``, read for
``predict``, keeps the suffix: ``"sub/frame.001.png"``). Images with more than 8 bits per pixel are
mapped to [0,1] by the ``image_scaling`` rule (``io.ImageScaling``). ``dataset.check(i)`` lists every
problem of one item without raising (``madm-pl prepare``).

Datasets only read; nothing is written under ``root``.

One file per dataset: ``base`` (``Sample``, ``SegmentationDataset``, ``TargetDataset``, file lists),
``cityscapes``, ``deliver``, ``fmb``, ``dsec``, ``folder`` (your own images and a folder to predict
on) and ``factory`` (the registry of target datasets by kind, ``build_target_dataset``). Each target
dataset owns its kind, options and checks (``TargetDataset``); a new modality is one file with a
``TargetDataset`` subclass, named in the config by its dotted path (docs/ARCHITECTURE.md). Import the
names from here.
"""

from madm_pl.data.datasets.base import (
    MAX_LISTED,
    DataOption,
    Sample,
    SegmentationDataset,
    TargetDataset,
    list_problems,
    read_file_list,
)
from madm_pl.data.datasets.cityscapes import CityscapesDataset
from madm_pl.data.datasets.deliver import DELIVER_CONDITIONS, DeliverDepthDataset
from madm_pl.data.datasets.dsec import DSECEventDataset
from madm_pl.data.datasets.factory import TARGET_KINDS, build_target_dataset, target_dataset_class
from madm_pl.data.datasets.fmb import FMBInfraredDataset
from madm_pl.data.datasets.folder import ImageFolderDataset, UnlabelledImages, load_label_map

__all__ = [
    "DELIVER_CONDITIONS",
    "MAX_LISTED",
    "TARGET_KINDS",
    "CityscapesDataset",
    "DSECEventDataset",
    "DataOption",
    "DeliverDepthDataset",
    "FMBInfraredDataset",
    "ImageFolderDataset",
    "Sample",
    "SegmentationDataset",
    "TargetDataset",
    "UnlabelledImages",
    "build_target_dataset",
    "list_problems",
    "load_label_map",
    "read_file_list",
    "target_dataset_class",
]

"""Multi-process evaluation: 2 CPU processes (DDP, gloo) score the test split exactly as 1 process,
the whole split and the reference protocol (the reference's rank-0 share, data/reference.py) alike.

Each test image must be counted once in the confusion matrix, which torchmetrics sums over the
processes on ``compute`` (METHOD.md §6: gather across ranks). Lightning's default sampler for
evaluation pads the split by repeating images when its size is not a multiple of the number of
processes; with 3 images on 2 processes it would count one image twice.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from madm_pl.data import CrossModalityDataModule
from madm_pl.models import MADMHead
from madm_pl.module import MADMModule
from tests.fake_trees import FakeTree, write_fmb
from tests.models.test_head import inputs as head_inputs
from tests.models.test_head import small_head
from tests.test_module import NARROW_HEAD_WIDTHS

SIZE = (64, 64)
# FMB ids of the 9 rgb2infrared classes, three vertical stripes per image: every class is in exactly
# one image, so counting any image twice changes the IoU of every class it predicts or holds.
STRIPES = [(7, 3, 8), (14, 1, 2), (6, 9, 5)]  # sky building person | pole road sidewalk | vegetation car sign


def striped_label(ids: tuple[int, int, int]) -> np.ndarray:
    label = np.empty(SIZE, dtype=np.uint8)
    for stripe, value in zip(np.array_split(np.arange(SIZE[1]), 3), ids, strict=True):
        label[:, stripe] = value
    return label


def datamodule(cityscapes: FakeTree, fmb: FakeTree) -> CrossModalityDataModule:
    return CrossModalityDataModule(
        task="rgb2infrared",
        source_root=str(cityscapes.root),
        target_root=str(fmb.root),
        source_resize=(32, 64),
        crop_size=(32, 32),
        target_resize=SIZE,
        test_size=SIZE,
        rcs=False,
    )


def test_scores(devices: int, module: MADMModule, data: CrossModalityDataModule) -> dict[str, float]:
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return trainer.test(module, datamodule=data, verbose=False)[0]


test_scores.__test__ = False  # a helper, not a test


@pytest.mark.filterwarnings("ignore::UserWarning")  # ddp_spawn/num_workers advice on CPU
def test_two_processes_score_the_test_split_as_one(cityscapes_tree: FakeTree, tmp_path: Path) -> None:
    fmb = write_fmb(tmp_path / "fmb", [striped_label(ids) for ids in STRIPES], train_count=1, size=SIZE)
    module = MADMModule(
        task="rgb2infrared",
        backbone="tiny",
        head=partial(MADMHead, **NARROW_HEAD_WIDTHS),
    )
    one = test_scores(1, module, datamodule(cityscapes_tree, fmb))
    two = test_scores(2, module, datamodule(cityscapes_tree, fmb))
    assert "test/miou" in one
    # the reference's rank-0 share (images 0 and 1) spans both processes here (rank 0 scores images 0
    # and 2, rank 1 image 1): summed over the processes it must equal the one-process score too
    assert "test/miou_reference_protocol" in one
    assert two == pytest.approx(one, abs=1e-6)


def test_a_two_process_fit_is_not_one_process_with_batch_2() -> None:
    """Training, each process normalises its own images (BatchNorm, no SyncBatchNorm), as the reference's
    2 GPUs x 1 image: 2 processes x 1 image compute what 2 accumulated 1-image micro-batches compute on
    one process (the recipe), not what one batch of 2 images computes. docs/PAPER_RECIPES.md section 4
    says so next to the test scores that do match."""
    head = small_head().train()
    features, decoded = head_inputs(2, 64, 64)
    batch_of_two = head(features, decoded)
    one_image_each = torch.cat([head([f[i : i + 1] for f in features], decoded[i : i + 1]) for i in range(2)])
    assert (batch_of_two - one_image_each).abs().max() > 1e-2  # the BN statistics differ
    head.eval()  # testing: running statistics, the same for any batch split (the scores match)
    torch.testing.assert_close(
        head(features, decoded),
        torch.cat([head([f[i : i + 1] for f in features], decoded[i : i + 1]) for i in range(2)]),
        rtol=1e-4,
        atol=1e-4,
    )
    recipes = (Path(__file__).resolve().parents[1] / "docs" / "PAPER_RECIPES.md").read_text()
    assert "A 2-process fit is not 1 process with batch 2" in " ".join(recipes.split())

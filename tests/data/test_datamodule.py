"""CrossModalityDataModule: batch contracts, reproducibility, exact resume, options and bad input."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torch.utils.data import default_collate

from madm_pl.data import CrossModalityDataModule
from madm_pl.data.rcs import CACHE_NAME
from madm_pl.synthetic import generate
from tests.fake_trees import (
    FakeTree,
    image_value,
    split_label,
    write_cityscapes,
    write_dsec,
    write_file_list,
    write_image_folder,
    write_png,
)

SIZES = {"source_resize": (16, 32), "crop_size": (16, 16), "target_resize": (16, 24), "test_size": (8, 16)}
# rgb2infrared ids of the fake Cityscapes labels: road 4, car 7, sky 0, person 2, building 1, bicycle 7
SOURCE_IDS = {0, 1, 2, 4, 7}


def make(cityscapes: FakeTree, target: FakeTree, **options: Any) -> CrossModalityDataModule:
    kwargs = {
        "task": "rgb2infrared",
        "source_root": str(cityscapes.root),
        "target_root": str(target.root),
        "rcs_min_pixels": 100,  # the fake labels have 1024 pixels per class and image
        "epoch_length": 6,
        **SIZES,
    }
    return CrossModalityDataModule(**(kwargs | options))


def train_batches(datamodule: CrossModalityDataModule, count: int = 3) -> list[dict[str, torch.Tensor]]:
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    return [next(loader) for _ in range(count)]


def same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def test_train_batch_contract(cityscapes_tree: FakeTree, fmb_tree: FakeTree) -> None:
    datamodule = make(cityscapes_tree, fmb_tree)
    assert datamodule.num_classes == 9
    assert datamodule.task.name == "rgb2infrared"
    batch = train_batches(datamodule, 1)[0]
    assert set(batch) == {"source_image", "source_label", "target_image"}  # no target label
    assert batch["source_image"].shape == batch["target_image"].shape == (2, 3, 16, 16)
    assert batch["source_image"].dtype == batch["target_image"].dtype == torch.float32
    assert batch["source_label"].shape == (2, 16, 16)
    assert batch["source_label"].dtype == torch.int64
    greys = {round(image_value(i) / 255, 6) for i in range(3)}
    for key in ("source_image", "target_image"):
        assert float(batch[key].min()) >= 0.0 and float(batch[key].max()) <= 1.0
        assert {round(v, 6) for v in batch[key].unique().tolist()} <= greys
    assert set(batch["source_label"].unique().tolist()) <= SOURCE_IDS
    assert (Path(cityscapes_tree.root) / CACHE_NAME).is_file()  # RCS statistics cached by prepare_data


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
def test_same_seed_same_batches_other_seed_differs(cityscapes_tree: FakeTree, fmb_tree: FakeTree) -> None:
    first = train_batches(make(cityscapes_tree, fmb_tree, seed=1))
    assert same(first, train_batches(make(cityscapes_tree, fmb_tree, seed=1)))
    assert not same(first, train_batches(make(cityscapes_tree, fmb_tree, seed=2)))
    # worker processes make the same samples
    workers = make(cityscapes_tree, fmb_tree, seed=1, num_workers=1, persistent_workers=True, pin_memory=True)
    assert same(first, train_batches(workers))
    loader = workers.train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (1, True, True)


def test_batch_k_holds_samples_2k_and_2k_plus_1(cityscapes_tree: FakeTree, fmb_tree: FakeTree) -> None:
    datamodule = make(cityscapes_tree, fmb_tree, epoch_length=4)
    batches = train_batches(datamodule, 2)
    dataset = datamodule.train_dataset
    assert same(
        batches, [default_collate([dataset[0], dataset[1]]), default_collate([dataset[2], dataset[3]])]
    )
    assert len(datamodule.train_dataloader()) == 2
    # next epoch continues the sequence (here after 2 batches "trained on")
    datamodule.train_batches_seen = 2
    assert same(train_batches(datamodule, 1), [default_collate([dataset[4], dataset[5]])])


def test_epoch_length_default_and_rcs_options(
    cityscapes_tree: FakeTree, fmb_tree: FakeTree, tmp_path
) -> None:
    uniform = make(cityscapes_tree, fmb_tree, rcs=False)
    uniform.prepare_data()
    uniform.setup("fit")
    assert uniform.train_dataset.rcs is None
    assert not (Path(cityscapes_tree.root) / CACHE_NAME).exists()  # rcs=False: nothing written
    datamodule = make(cityscapes_tree, fmb_tree, batch_size=1, epoch_length=None)
    datamodule.setup("fit")
    assert len(datamodule.train_dataloader()) == 3  # one epoch = the 3 source images
    assert datamodule.train_dataset.rcs is not None
    # unequal classes: road 48 columns, car 16 columns; the temperature sets how much car is favoured
    skewed = write_cityscapes(tmp_path / "skewed", [split_label((32, 64), 0, 13, column=48)])
    sharp = make(skewed, fmb_tree)
    sharp.setup("fit")
    assert sharp.train_dataset.rcs.classes.tolist() == [13, 0]
    assert sharp.train_dataset.rcs.probs[0] > 0.99  # exp(50) : 1 at T = 0.01
    warm = make(skewed, fmb_tree, rcs_temperature=100.0, rcs_min_crop_ratio=0.25)
    warm.setup("fit")
    assert abs(warm.train_dataset.rcs.probs[0] - 0.5) < 0.01  # ~uniform at T = 100
    assert warm.train_dataset.rcs_min_crop_ratio == 0.25
    with pytest.raises(ValueError, match=r"no source image has more than data\.rcs_min_pixels=2000"):
        make(cityscapes_tree, fmb_tree, rcs_min_pixels=2000).setup("fit")


# ------------------------------------------------------------------------- target train labels
def coordinate_dsec(root: Path, count: int = 3) -> FakeTree:
    """DSEC whose train edge image ``i`` (16x32) reads R = 8 * column, G = 16 * row, B = 50 * i, with a
    train label ``(3 * row + column + i) % 11`` (255 on row 0) in ``train_semantic_labels``."""
    tree = write_dsec(root, [split_label((16, 32), 5, 8)], train_count=count)
    rows, columns = np.mgrid[:16, :32]
    for i, name in enumerate(tree.train_images):
        write_png(root / name, np.stack([8 * columns, 16 * rows, np.full_like(rows, 50 * i)], axis=-1))
        label = (3 * rows + columns + i) % 11
        label[0] = 255
        sequence, file = name.split("/")[1:]
        write_png(root / "train_semantic_labels" / sequence / "11classes" / file, label)
    return tree


def test_target_label_is_cropped_and_flipped_with_the_target_image(
    cityscapes_tree: FakeTree, tmp_path: Path
) -> None:
    dsec = coordinate_dsec(tmp_path / "dsec")
    # target_resize = the stored size: every target pixel tells its image, row and column
    options = {"task": "rgb2event", "target_resize": (16, 32), "epoch_length": 12}
    batches = train_batches(make(cityscapes_tree, dsec, target_train_labels=True, **options), 6)
    flips = set()
    for batch in batches:
        assert batch["target_label"].shape == (2, 16, 16) and batch["target_label"].dtype == torch.int64
        pixels = torch.round(batch["target_image"] * 255).long()  # (B,3,h,w)
        column, row, image = pixels[:, 0] // 8, pixels[:, 1] // 16, pixels[:, 2] // 50
        expected = (3 * row + column + image) % 11
        expected[row == 0] = 255
        assert torch.equal(batch["target_label"], expected)
        flips |= {bool(f) for f in (column[:, 0, 0] > column[:, 0, -1]).tolist()}
    assert flips == {True, False}  # both flipped and unflipped crops were checked

    # without the option: the same draws, so the same source and target tensors, and no target label
    plain = train_batches(make(cityscapes_tree, dsec, **options), 6)
    assert all(set(b) == {"source_image", "source_label", "target_image"} for b in plain)
    assert same(plain, [{k: v for k, v in b.items() if k != "target_label"} for b in batches])


def test_target_label_is_resized_nearest_with_the_target_image(
    cityscapes_tree: FakeTree, fmb_tree: FakeTree
) -> None:
    # four 8-column stripes: grey g_k and FMB id f_k each; resized 16x32 -> 24x48, then cropped 16x16
    greys, fmb_ids, task_ids = [40, 90, 140, 190], [1, 9, 7, 14], [4, 7, 0, 3]  # road car sky pole
    for name in fmb_tree.train_images:
        stripes = np.repeat(np.arange(4), 8)[None, :].repeat(16, axis=0)
        write_png(fmb_tree.root / name, np.asarray(greys, np.uint8)[stripes])
        write_png(
            fmb_tree.root / name.replace("/Infrared/", "/Label/"), np.asarray(fmb_ids, np.uint8)[stripes]
        )
    batches = train_batches(make(cityscapes_tree, fmb_tree, target_train_labels=True, target_resize=(24, 48)))
    checked = 0
    for batch in batches:
        grey, label = torch.round(batch["target_image"][:, 0] * 255).long(), batch["target_label"]
        assert set(label.unique().tolist()) <= set(task_ids)
        for value, task_id in zip(greys, task_ids):
            inside = grey == value  # a stripe's interior (bilinear blends only its borders)
            assert (label[inside] == task_id).all()
            checked += int(inside.sum())
    assert checked > 0.5 * sum(b["target_label"].numel() for b in batches)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32x64 synthetic world: 2 source scenes, 3 train and 1 test scene per target modality."""
    root = tmp_path_factory.mktemp("tiny_world") / "world"
    generate(root, height=32, width=64, source_train=2, target_train=3, target_test=1, workers=1)
    return root


@pytest.mark.parametrize(
    ("task", "folder"), [("rgb2depth", "deliver"), ("rgb2infrared", "fmb"), ("rgb2event", "dsec")]
)
def test_target_train_labels_of_the_synthetic_world(task: str, folder: str, tiny_world: Path) -> None:
    # stored size = target_resize: each sample's crop is found in a stored image (position and flip),
    # and its label must be the same crop of that image's stored label
    datamodule = CrossModalityDataModule(
        task=task,
        source_root=str(tiny_world / "cityscapes"),
        target_root=str(tiny_world / folder),
        source_resize=(32, 64),
        crop_size=(32, 32),
        target_resize=(32, 64),
        test_size=(32, 32),
        epoch_length=4,
        rcs=False,
        target_train_labels=True,
    )
    target = datamodule.target_dataset("train")
    stored = [target.load(i) for i in range(len(target))]
    for batch in train_batches(datamodule, 2):
        for image, label in zip(batch["target_image"], batch["target_label"]):
            image = torch.round(image * 255).to(torch.uint8).permute(1, 2, 0).numpy()
            matches = []
            for sample in stored:
                for flip in (False, True):
                    view = sample.image[:, ::-1] if flip else sample.image
                    view_label = sample.label[:, ::-1] if flip else sample.label
                    for left in range(64 - 32 + 1):
                        if np.array_equal(view[:, left : left + 32], image):
                            matches.append(view_label[:, left : left + 32])
            assert matches
            assert all(np.array_equal(m, label.numpy()) for m in matches)
            assert set(np.unique(label.numpy()).tolist()) <= set(range(datamodule.num_classes)) | {255}


def test_missing_target_train_labels_name_the_option(cityscapes_tree: FakeTree, fmb_tree: FakeTree) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"missing: train/Label\).*set data\.target_train_labels=false",
    ):
        make(cityscapes_tree, fmb_tree, target_train_labels=True).setup("fit")


def test_val_test_predict_batches(cityscapes_tree: FakeTree, fmb_tree: FakeTree) -> None:
    predict_root = Path(fmb_tree.root) / "train" / "Infrared"
    datamodule = make(cityscapes_tree, fmb_tree, val_batch_size=2, predict_root=str(predict_root))
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    assert set(batch) == {"image", "label", "name", "in_reference_share"}
    # the reference's rank-0 share of 2 test images on 2 GPUs: the first one
    assert batch["in_reference_share"].tolist() == [True, False]
    assert datamodule.reference_share.indices == frozenset({0})
    assert batch["image"].shape == (2, 3, 8, 16)
    assert batch["label"].shape == (2, 8, 16)
    assert batch["label"].dtype == torch.int64
    assert batch["name"] == ["test/Infrared/00100", "test/Infrared/00101"]
    assert batch["label"][:, 0, 0].tolist() == [4, 0]  # FMB road, sky
    assert batch["label"][:, -1, -1].tolist() == [7, 3]  # FMB car, pole
    assert torch.equal(next(iter(datamodule.test_dataloader()))["label"], batch["label"])
    datamodule.setup("predict")
    batch = next(iter(datamodule.predict_dataloader()))
    assert set(batch) == {"image", "name", "size", "error"}
    assert batch["image"].shape == (2, 3, 8, 16)
    assert batch["size"].tolist() == [[16, 32], [16, 32]]
    assert batch["name"] == ["00001.png", "00002.png"]  # the relative path with the full file name
    assert batch["error"] == ["", ""]


def test_reference_share_of_a_deliver_scan_follows_the_reference_order(
    cityscapes_tree: FakeTree, tmp_path: Path
) -> None:
    # A scan sorts MAP_1_point2 before MAP_1_point22; the reference's lists (sorted with '\\' as the
    # separator) put point22 first, so its rank-0 share (2 of 3 images) is the two point22 images.
    root = tmp_path / "deliver"
    for folder, frame in (("MAP_1_point2", 100), ("MAP_1_point22", 200), ("MAP_1_point22", 300)):
        write_png(
            root / f"depth/cloud/test/{folder}/{frame:06d}_depth_front.png", np.zeros((16, 32, 3), np.uint8)
        )
        write_png(
            root / f"semantic/cloud/test/{folder}/{frame:06d}_semantic_front.png",
            np.ones((16, 32, 3), np.uint8),
        )
    datamodule = make(cityscapes_tree, FakeTree(root), task="rgb2depth", val_batch_size=3)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    assert [name.split("/")[3] for name in batch["name"]] == [
        "MAP_1_point2",
        "MAP_1_point22",
        "MAP_1_point22",
    ]
    assert batch["in_reference_share"].tolist() == [False, True, True]
    assert datamodule.reference_share.order == "scan"


def test_dsec_frames_option_selects_and_reports(
    cityscapes_tree: FakeTree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsec = write_dsec(tmp_path / "dsec", [split_label((16, 32), 5, 8)], train_count=2)  # 000002, 000004
    for frame in (1, 3, 5):
        write_png(
            dsec.root / f"69mask_train_edges/zurich_city_00_a/{frame:06d}.png", np.zeros((16, 32), np.uint8)
        )
    caplog.set_level(logging.INFO)
    every = make(cityscapes_tree, dsec, task="rgb2event", rcs=False)
    every.setup("fit")
    assert len(every.train_dataset.target) == 5
    assert "dropped" not in caplog.text
    reference = make(cityscapes_tree, dsec, task="rgb2event", rcs=False, dsec_frames="reference")
    reference.setup("fit")
    assert len(reference.train_dataset.target) == 2
    assert "DSEC train: kept 2 frames, dropped 3 (data.dsec_frames='reference'" in caplog.text
    assert "DSEC test: kept 1 frames, dropped 0" in caplog.text


def test_folder_kind_with_label_map(cityscapes_tree: FakeTree, folder_tree: FakeTree, tmp_path) -> None:
    datamodule = make(
        cityscapes_tree, folder_tree, target_kind="folder", label_map=str(tmp_path / "mycam_labels.yaml")
    )
    datamodule.setup("fit")
    assert set(train_batches(datamodule, 1)[0]) == {"source_image", "source_label", "target_image"}
    batch = next(iter(datamodule.val_dataloader()))
    label = batch["label"]
    assert (label[0, 0, 0].item(), label[0, -1, -1].item()) == (4, 7)  # raw 1 -> road, raw 2 -> 7
    assert "in_reference_share" not in batch and datamodule.reference_share is None  # not a paper dataset
    # a folder without a test split: no validation in fit, a clear error for validate
    bare = make(cityscapes_tree, write_image_folder(tmp_path / "bare"), target_kind="folder")
    bare.setup("fit")
    assert bare.val_dataloader() == []
    with pytest.raises(FileNotFoundError, match=r"no test split under data\.target_root=.*test/images/"):
        bare.setup("validate")


def test_file_lists(cityscapes_tree: FakeTree, fmb_tree: FakeTree, tmp_path: Path) -> None:
    train_list = write_file_list(
        tmp_path / "train.json",
        source=(cityscapes_tree.train_images[:2], cityscapes_tree.train_labels[:2]),
        target_images=fmb_tree.train_images[2:],
    )
    test_list = write_file_list(
        tmp_path / "test.json", target_images=fmb_tree.test_images[1:], target_labels=fmb_tree.test_labels[1:]
    )
    datamodule = make(
        cityscapes_tree, fmb_tree, train_file_list=str(train_list), test_file_list=str(test_list), rcs=False
    )
    datamodule.setup("fit")
    assert len(datamodule.train_dataset.source) == 2
    assert len(datamodule.train_dataset.target) == 1
    assert len(datamodule.val_dataset) == 1
    targets = torch.cat([b["target_image"] for b in train_batches(datamodule, 2)])
    assert torch.allclose(targets, torch.full_like(targets, image_value(2) / 255))  # only the listed image


class _Recorder(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.append(torch.cat([batch[k].flatten().float() for k in sorted(batch)]))
        return (self.weight**2).sum() + 1.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(datamodule: CrossModalityDataModule, root: Path, ckpt_path: Path | None = None) -> _Recorder:
    model = _Recorder()
    trainer = Trainer(
        max_steps=5,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=root,
        callbacks=[ModelCheckpoint(dirpath=root, filename="{step}", every_n_train_steps=2, save_top_k=-1)],
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_resume_continues_the_same_batches(cityscapes_tree: FakeTree, fmb_tree: FakeTree, tmp_path) -> None:
    """5 steps over epochs of 3 batches, and the same run resumed from its step-2 checkpoint (mid
    epoch): the resumed run trains on exactly batches 2, 3, 4 of the uninterrupted one, and Lightning
    sees a resumable loader (no "dataloader is not resumable" warning)."""
    full = _fit(make(cityscapes_tree, fmb_tree, epoch_length=6), tmp_path / "full")
    assert len(full.seen) == 5
    assert len({tuple(t.tolist()) for t in full.seen}) == 5  # no batch repeats across epochs
    checkpoint = torch.load(tmp_path / "full/step=2.ckpt", weights_only=False)
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"train_batches_seen": 2}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = _fit(
            make(cityscapes_tree, fmb_tree, epoch_length=6),
            tmp_path / "resumed",
            tmp_path / "full/step=2.ckpt",
        )
    assert not [w for w in caught if "not resumable" in str(w.message)]
    assert len(resumed.seen) == 3
    assert all(torch.equal(a, b) for a, b in zip(full.seen[2:], resumed.seen, strict=True))


def test_loader_state_alone_positions_the_sampler(cityscapes_tree: FakeTree, fmb_tree: FakeTree) -> None:
    """The loader's own state (what Lightning restores) continues the sequence, as the datamodule's does."""
    reference = train_batches(make(cityscapes_tree, fmb_tree), 3)
    datamodule = make(cityscapes_tree, fmb_tree)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    loader.load_state_dict({"train_batches_seen": 1})
    assert loader.state_dict() == {"train_batches_seen": 1}
    assert same(list(iter(loader))[:2], reference[1:])  # batches 1 and 2 of the uninterrupted run


def test_16_bit_target_images_follow_one_rule_in_train_validation_and_predict(
    cityscapes_tree: FakeTree, fmb_tree: FakeTree
) -> None:
    # every target image becomes a constant 16-bit image of raw value 2000
    for relative in fmb_tree.train_images + fmb_tree.test_images:
        Image.fromarray(np.full((16, 32), 2000, np.uint16)).save(fmb_tree.root / relative)
    predict_root = str(fmb_tree.root / "test" / "Infrared")
    for options, value in (
        ({}, round(2000 / 65535 * 255)),  # the full 16-bit range by default
        ({"image_range": [1000, 3000]}, 128),  # 2000 is half way: round(0.5 * 255)
        ({"image_percentiles": [1, 99]}, 0),  # per image: a constant image maps to 0
    ):
        datamodule = make(cityscapes_tree, fmb_tree, predict_root=predict_root, **options)
        target = torch.cat([b["target_image"] for b in train_batches(datamodule, 2)])
        datamodule.setup("validate")
        validation = next(iter(datamodule.val_dataloader()))["image"]
        datamodule.setup("predict")
        predict = next(iter(datamodule.predict_dataloader()))["image"]
        for stage, images in (("train", target), ("validation", validation), ("predict", predict)):
            assert torch.equal(images, torch.full_like(images, value / 255)), (options, stage)
    with pytest.raises(ValueError, match=r"data\.image_range=\[1000, 3000\] and data\.image_percentiles"):
        make(cityscapes_tree, fmb_tree, image_range=[1000, 3000], image_percentiles=[1, 99])


def test_unreadable_predict_image_is_an_item_with_its_error(
    cityscapes_tree: FakeTree, fmb_tree: FakeTree
) -> None:
    folder = fmb_tree.root / "test" / "Infrared"
    (folder / "00100.png").write_bytes((folder / "00100.png").read_bytes()[:30])  # truncated
    datamodule = make(cityscapes_tree, fmb_tree, predict_root=str(folder), val_batch_size=2)
    datamodule.setup("predict")
    batch = next(iter(datamodule.predict_dataloader()))
    assert batch["name"] == ["00100.png", "00101.png"]
    assert batch["error"][0].startswith(f"cannot read image '{folder / '00100.png'}'")
    assert batch["error"][1] == ""
    assert (batch["image"][0] == 0).all()  # a placeholder the writer skips


def test_state_dict_round_trip(cityscapes_tree: FakeTree, fmb_tree: FakeTree) -> None:
    datamodule = make(cityscapes_tree, fmb_tree)
    datamodule.train_batches_seen = 7
    state = datamodule.state_dict()
    other = make(cityscapes_tree, fmb_tree)
    other.load_state_dict(state)
    assert other.train_batches_seen == 7
    with pytest.warns(UserWarning, match=r"resuming with data\.seed=5 but the checkpoint used 42"):
        make(cityscapes_tree, fmb_tree, seed=5).load_state_dict(state)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"persistent_workers": True}, ValueError, r"persistent_workers=true needs data\.num_workers > 0"),
        (
            {"crop_size": (16, 64)},
            ValueError,
            r"data\.crop_size \(16, 64\) is larger than data\.source_resize",
        ),
        ({"test_size": (8,)}, ValueError, r"data\.test_size must be \[height, width\]"),
        ({"batch_size": 0}, ValueError, r"data\.batch_size must be >= 1"),
        ({"target_kind": "sonar"}, ValueError, r"unknown data\.target_kind 'sonar'"),
        ({"target_kind": "dsec"}, ValueError, r"target_kind='dsec' does not fit task 'rgb2infrared'"),
        ({"label_map": "x.yaml"}, ValueError, r"data\.label_map applies only to data\.target_kind='folder'"),
        ({"task": "rgb2sonar"}, ValueError, r"unknown task 'rgb2sonar'"),
        ({"epoch_length": 1}, ValueError, r"data\.epoch_length=1 is smaller than data\.batch_size=2"),
        (
            {"dsec_frames": "odd"},
            ValueError,
            r"data\.dsec_frames='odd': expected one of \['all', 'reference'\]",
        ),
        (
            {"dsec_frames": "reference"},
            ValueError,
            r"dsec_frames='reference' applies only to data\.target_kind='dsec'",
        ),
    ],
)
def test_bad_options(cityscapes_tree: FakeTree, fmb_tree: FakeTree, options, error, message) -> None:
    with pytest.raises(error, match=message):
        make(cityscapes_tree, fmb_tree, **options)


def test_bad_roots(cityscapes_tree: FakeTree, fmb_tree: FakeTree, tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"FMB not found under data\.target_root='.*nowhere': expected train/Infrared/",
    ):
        make(cityscapes_tree, fmb_tree, target_root=str(tmp_path / "nowhere"), rcs=False).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"Cityscapes not found under data\.source_root='.*fmb'"):
        make(cityscapes_tree, fmb_tree, source_root=str(fmb_tree.root)).prepare_data()
    with pytest.raises(ValueError, match=r"predict needs data\.predict_root"):
        make(cityscapes_tree, fmb_tree).setup("predict")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no images .* under data\.predict_root="):
        make(cityscapes_tree, fmb_tree, predict_root=str(empty)).setup("predict")
    write_png(Path(fmb_tree.root) / fmb_tree.test_labels[0], split_label((16, 32), 1, 99))
    datamodule = make(cityscapes_tree, fmb_tree)
    datamodule.setup("validate")
    with pytest.raises(ValueError, match=r"00100\.png': label ids \[99\] are outside the label map"):
        next(iter(datamodule.val_dataloader()))

"""TensorBoard as a user sees it: the logger's filtering, and every tag of a short real ``fit`` read back
from the event files (scalars, pictures and their sizes, the same validation images at each validation)."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from madm_pl.callbacks.images import GAP, nearest_upscale, title_height, visual_to_rgb
from madm_pl.callbacks.tensorboard import SCALAR_LAYOUT, MADMTensorBoardLogger, flat_hyperparameters
from madm_pl.cli import main
from madm_pl.data import CrossModalityDataModule
from madm_pl.evaluation import REFERENCE_PROTOCOL
from madm_pl.labels import TASKS
from tests.cli_runs import DEMO, small_run_args

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def read_events(folder: Path) -> EventAccumulator:
    """The run's own events (not those of the recipe levels, comparison.RecipeComparison's run folders)."""
    events = sorted(
        p for p in folder.rglob("events.out.tfevents.*") if not p.parent.name.startswith("recipe_")
    )
    assert len({path.parent for path in events}) == 1, events
    accumulator = EventAccumulator(str(events[0].parent), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def hparams_metrics(accumulator: EventAccumulator) -> tuple[set[str], set[str]]:
    """(hyper-parameter names, metric tags) of the HParams experiment summary."""
    content = accumulator.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    names = {info.name for info in experiment.hparam_infos}
    return names, {info.name.tag for info in experiment.metric_infos}


def decoded(accumulator: EventAccumulator, tag: str) -> list[tuple[int, np.ndarray]]:
    """(step, (H,W,3) uint8) of every image written under ``tag``."""
    return [
        (event.step, np.array(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")))
        for event in accumulator.Images(tag)
    ]


def test_flat_hyperparameters():
    params = {"model": {"lr": 1e-4, "size": [64, 64], "_instantiator": "x", "head": None}, "seed": 42}
    assert flat_hyperparameters(params) == {
        "model/lr": 1e-4,
        "model/size": "[64, 64]",
        "model/head": "None",
        "seed": 42,
    }


def test_logger_drops_epoch_and_writes_hparams_with_the_real_metric(tmp_path: Path):
    logger = MADMTensorBoardLogger(save_dir=tmp_path, name="run")
    logger.log_hyperparams({"lr": 1e-4, "mode": "madm"})
    logger.log_metrics({"epoch": 0, "train/loss": 1.5}, step=3)
    logger.finalize("success")
    accumulator = read_events(tmp_path)
    assert accumulator.Tags()["scalars"] == ["train/loss"]  # no epoch, no hp_metric
    assert [(e.step, e.value) for e in accumulator.Scalars("train/loss")] == [(3, 1.5)]
    assert hparams_metrics(accumulator) == ({"lr", "mode"}, {"val/miou"})
    layout = layout_pb2.Layout.FromString(
        tensor_util.make_ndarray(accumulator.Tensors("custom_scalars__config__")[0].tensor_proto).item()
    )
    assert [category.title for category in layout.category] == list(SCALAR_LAYOUT)
    charts = {chart.title: list(chart.multiline.tag) for c in layout.category for chart in c.chart}
    assert charts["per-class IoU (%)"] == [r"val_iou/.*"]
    # the first chart answers "is adaptation working?": the target mIoU (its levels are runs of their own)
    first = layout.category[0].chart[0]
    assert first.title.startswith("target mIoU") and list(first.multiline.tag) == [r"val/miou$"]


def test_fit_writes_every_tag(synthetic_root: Path, tmp_path: Path) -> None:
    """4 iterations, validations after 2 and 4 on 2 of the 5 test images (64x64), pictures every 2."""
    main(
        [
            "fit",
            "-c",
            str(DEMO),
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=2",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--image_logger.every_n_steps=2",
            "--validation_images.num_images=2",
            "--data.init_args.target_train_labels=true",
        ]
        + small_run_args(synthetic_root, tmp_path)
    )
    accumulator = read_events(tmp_path / "logs")
    scalars = set(accumulator.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/loss_source",
        "train/loss_lplr_source",
        "train/loss_target",
        "train/loss_lplr_target",
        "train/dplg_timestep",
        "train/pseudo_label_weight",
        "train/pseudo_label_accuracy",
        "train/lr",  # one curve: every parameter group has the same rate in the demo recipe
        "val/miou",
        "val_iou/road",  # road and sky are in every synthetic test image
        "val_iou/sky",
    }
    assert expected <= scalars, sorted(expected - scalars)
    classes = {f"val_iou/{name.replace(' ', '_')}" for name in TASKS["rgb2infrared"].classes}
    # The whole split and the reference's rank-0 share of it (evaluation.REFERENCE_PROTOCOL); nothing else:
    # no epoch, no hp_metric, no curve per parameter group.
    allowed = classes | {"val/miou"} | {f"{tag}_{REFERENCE_PROTOCOL}" for tag in classes | {"val/miou"}}
    assert scalars - expected <= allowed, sorted(scalars - expected - allowed)
    # Pictures sit on the steps of the curves they explain: Lightning logs iteration i at step i and the
    # validation after iterations 2 and 4 at steps 1 and 3.
    assert [e.step for e in accumulator.Scalars("train/loss")] == [0, 1, 2, 3]
    assert [e.step for e in accumulator.Scalars("val/miou")] == [1, 3]
    assert hparams_metrics(accumulator)[1] == {"val/miou"}
    assert {"lr", "dplg_t0", "crop_size"} <= hparams_metrics(accumulator)[0]  # model and data

    # 64x64 crops and test images, upscaled x3 to 192x192 panels; 2 rows (batch 2, 2 test images).
    top, panel = title_height(192), 192
    height = top + 2 * panel + GAP
    sizes = {
        "visual_train/source": (height, 4 * panel + 3 * GAP),
        "visual_train/target": (height, 3 * panel + 2 * GAP),
        "visual_train/mixed": (height, 3 * panel + 2 * GAP),
        "visual_val/student_prediction": (height, 3 * panel + 2 * GAP),
        "visual_val/teacher_pseudo_label": (height, 4 * panel + 3 * GAP),
        "visual_val/confusion_matrix": (800, 800),
    }
    assert set(accumulator.Tags()["images"]) == set(sizes)
    for tag, size in sizes.items():
        steps = [0, 2] if tag.startswith("visual_train") else [1, 3]  # iterations 0 and 2; validations
        events = accumulator.Images(tag)
        assert [(e.step, e.height, e.width) for e in events] == [(s, *size) for s in steps], tag

    # The validation pictures show test images 0 and 4 (evenly spaced over 5) at both validations:
    # the image and ground-truth columns are those items, nearest-upscaled, pixel for pixel.
    data = CrossModalityDataModule(
        task="rgb2infrared",
        source_root=str(synthetic_root / "cityscapes"),
        target_root=str(synthetic_root / "fmb"),
        source_resize=(64, 128),
        crop_size=(64, 64),
        target_resize=(64, 96),
        test_size=(64, 64),  # as small_run_args
    )
    data.setup("validate")
    items = [data.val_dataset[0], data.val_dataset[4]]
    palette = torch.from_numpy(TASKS["rgb2infrared"].palette)
    image = torch.stack([item["image"] for item in items])
    label = torch.stack([item["label"] for item in items])
    expected_image = nearest_upscale(visual_to_rgb("target_image", image, palette), 3).permute(0, 2, 3, 1)
    expected_truth = nearest_upscale(visual_to_rgb("target_label", label, palette), 3).permute(0, 2, 3, 1)
    columns = {"visual_val/student_prediction": 2, "visual_val/teacher_pseudo_label": 3}  # ground truth
    for tag, truth_column in columns.items():
        pictures = decoded(accumulator, tag)
        assert [step for step, _ in pictures] == [1, 3]
        for _, picture in pictures:
            for row in range(2):
                y = top + row * (panel + GAP)
                x = truth_column * (panel + GAP)
                shown, truth = picture[y : y + panel, :panel], picture[y : y + panel, x : x + panel]
                np.testing.assert_array_equal(shown, expected_image[row].numpy())
                np.testing.assert_array_equal(truth, expected_truth[row].numpy())


def test_runs_started_at_once_never_share_a_version_folder(tmp_path: Path) -> None:
    (tmp_path / "task" / "version_0").mkdir(parents=True)  # an earlier run
    count = 8
    ready = threading.Barrier(count)

    def start_a_run(_: int) -> int:
        logger = MADMTensorBoardLogger(tmp_path, name="task")
        ready.wait()  # all list the folder at the same moment
        return logger.version

    with ThreadPoolExecutor(count) as pool:
        versions = list(pool.map(start_a_run, range(count)))
    assert sorted(versions) == list(range(1, count + 1))
    assert sorted(p.name for p in (tmp_path / "task").iterdir()) == [f"version_{n}" for n in range(count + 1)]


def test_runs_started_at_once_in_two_processes_never_share_a_version_folder(tmp_path: Path) -> None:
    script = (
        "import sys; from madm_pl.callbacks.tensorboard import MADMTensorBoardLogger; "
        "print(MADMTensorBoardLogger(sys.argv[1], name='task').version)"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    versions = sorted(int(run.communicate(timeout=120)[0]) for run in runs)
    assert versions == [0, 1]


def test_a_read_only_log_folder_is_one_line(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    read_only = tmp_path / "mounted"  # a read-only file system: no new folder under it
    read_only.mkdir()
    mkdir = os.mkdir

    def read_only_file_system(path: str | os.PathLike, *args: object, **kwargs: object) -> None:
        if Path(path).resolve().is_relative_to(read_only):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only_file_system)
    args = ["fit", "-c", str(DEMO), *small_run_args(synthetic_root, tmp_path), "--trainer.max_steps=1"]
    with pytest.raises(SystemExit) as caught:
        main([*args, f"--trainer.logger.init_args.save_dir={read_only / 'runs'}"])
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"madm-pl: error: the log folder '{read_only / 'runs' / 'rgb2infrared'}' cannot take a new run "
        "(Read-only file system): fix trainer.logger.init_args.save_dir (or trainer.default_root_dir)"
    )

"""The command line: three entry points, the demo config, errors that name the option, predict output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from madm_pl.cli import main
from madm_pl.labels import TASKS

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo" / "rgb2infrared.yaml"
BIN = Path(sys.executable).parent


def small_run_args(root: Path, tmp_path: Path) -> list[str]:
    """Overrides that point the demo config at the small synthetic world and shrink it for CPU tests."""
    return [
        f"--data.init_args.source_root={root / 'cityscapes'}",
        f"--data.init_args.target_root={root / 'fmb'}",
        "--data.init_args.source_resize=[64, 128]",
        "--data.init_args.crop_size=[64, 64]",
        "--data.init_args.target_resize=[64, 96]",
        "--data.init_args.test_size=[64, 64]",
        "--data.init_args.rcs_min_pixels=20",
        "--data.init_args.num_workers=0",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
        f"--checkpoint.dirpath={tmp_path / 'checkpoints'}",
    ]


@pytest.mark.parametrize("entry", ["madm-pl", "lightning"])
def test_console_scripts_fast_dev_run(entry: str, synthetic_root: Path, tmp_path: Path) -> None:
    command = [str(BIN / entry), "fit", "-c", str(DEMO), "--trainer.fast_dev_run=true"]
    result = subprocess.run(
        command + small_run_args(synthetic_root, tmp_path),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # fast_dev_run runs one validation batch: the IoU table is printed.
    assert "mIoU" in result.stdout + result.stderr


def test_python_dash_m_prints_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "madm_pl", "--help"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in result.stdout


def test_unknown_config_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(DEMO), "--model.init_args.dplg_tt0=3"])
    assert "dplg_tt0" in capsys.readouterr().err


def test_unknown_key_in_yaml_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(DEMO.read_text().replace("    classmix: true", "    class_mix: true"))
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(config)])
    assert "class_mix" in capsys.readouterr().err


def test_missing_data_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"data\.source_root"):
        main(
            ["fit", "-c", str(DEMO), "--trainer.fast_dev_run=true"]
            + small_run_args(tmp_path, tmp_path)
            + [f"--data.init_args.source_root={missing}"]
        )


def test_predict_writes_label_and_colour_pngs(synthetic_root: Path, tmp_path: Path) -> None:
    images = tmp_path / "my_images"
    images.mkdir()
    sources = sorted((synthetic_root / "fmb" / "test" / "Infrared").glob("*.png"))[:2]
    for source in sources:
        (images / source.name).write_bytes(source.read_bytes())
    out = tmp_path / "predictions"
    main(
        ["predict", "-c", str(DEMO)]
        + small_run_args(synthetic_root, tmp_path)
        + [f"--data.init_args.predict_root={images}", f"--prediction_writer.output_dir={out}"]
    )
    palette = TASKS["rgb2infrared"].palette
    for source in sources:
        label = np.array(Image.open(out / "labels" / source.name))
        colour = np.array(Image.open(out / "colour" / source.name))
        original = Image.open(source)
        assert label.shape == (original.height, original.width)  # back at the original size
        assert label.max() < len(palette)
        np.testing.assert_array_equal(colour, palette[label])
    assert not list(out.rglob("*.tmp.png"))


def test_tensorboard_scalars_written(synthetic_root: Path, tmp_path: Path) -> None:
    main(
        [
            "fit",
            "-c",
            str(DEMO),
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.log_every_n_steps=1",
            "--image_logger.every_n_steps=1",
        ]
        + small_run_args(synthetic_root, tmp_path)
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    for tag in (
        "train/loss_source",
        "train/loss_target",
        "train/loss_lplr_source",
        "train/loss_lplr_target",
        "train/dplg_timestep",
        "train/pseudo_label_weight",
        "val/miou",
    ):
        assert tag in scalars, (tag, sorted(scalars))
    assert any(tag.startswith("lr/") for tag in scalars)
    assert "train_images/source" in accumulator.Tags()["images"]  # every tag: tests/callbacks/
    checkpoints = {p.name for p in (tmp_path).rglob("*.ckpt")}
    assert "last.ckpt" in checkpoints and len(checkpoints) >= 2

"""Fixtures: tiny fake trees in each real layout (see tests/fake_trees/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.fake_trees import (
    FakeTree,
    split_label,
    write_cityscapes,
    write_deliver,
    write_dsec,
    write_fmb,
    write_image_folder,
)

# One intra-op thread: the tiny models gain nothing from two, and two OpenMP threads next to a data
# loader worker or a second process on 2 cores spin-wait each other into ~50x slower steps.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the CLI subprocesses

# Cityscapes train ids: road | car, sky | person, building | bicycle.
CITYSCAPES_IDS = [(0, 13), (10, 11), (2, 18)]
# FMB ids: road | car, sky | pole.
FMB_IDS = [(1, 9), (7, 14)]
# DELIVER channel 0 as stored (DELIVER id + 1): building(1) | sky(13), road(7) | unlabelled 255.
DELIVER_IDS = [(1, 13), (7, 255)]
# DSEC 11-class ids: road | car, sky | ignore.
DSEC_IDS = [(5, 8), (0, 255)]


#: The signals whose handlers a Lightning fit installs (its SignalConnector) and does not always restore.
_FIT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    """Every test starts with the handlers the session started with: a fit that ends in an exception can
    leave Lightning's SIGTERM/SIGUSR1 handlers installed, which later tests' forked workers would inherit."""
    before = {number: signal.getsignal(number) for number in _FIT_SIGNALS}
    yield
    for number, handler in before.items():
        if signal.getsignal(number) is not handler:
            signal.signal(number, handler)


@pytest.fixture
def cityscapes_tree(tmp_path: Path) -> FakeTree:
    """Three 32x64 Cityscapes images, labels of ``CITYSCAPES_IDS`` (left half | right half)."""
    return write_cityscapes(tmp_path / "cityscapes", [split_label((32, 64), a, b) for a, b in CITYSCAPES_IDS])


@pytest.fixture
def fmb_tree(tmp_path: Path) -> FakeTree:
    """FMB: 3 train images 16x32, 2 labelled test images of ``FMB_IDS``."""
    return write_fmb(tmp_path / "fmb", [split_label((16, 32), a, b) for a, b in FMB_IDS], train_count=3)


@pytest.fixture
def deliver_tree(tmp_path: Path) -> FakeTree:
    """DELIVER: 2 train images, 2 labelled test images of ``DELIVER_IDS`` (stored channel 0)."""
    return write_deliver(tmp_path / "deliver", [split_label((16, 32), a, b) for a, b in DELIVER_IDS])


@pytest.fixture
def dsec_tree(tmp_path: Path) -> FakeTree:
    """DSEC: 2 train edge images, 2 labelled test images of ``DSEC_IDS``."""
    return write_dsec(tmp_path / "dsec", [split_label((16, 32), a, b) for a, b in DSEC_IDS])


@pytest.fixture
def folder_tree(tmp_path: Path) -> FakeTree:
    """Your own modality: 2 train JPEGs, 1 test image with raw ids 1 | 2 and a label map file."""
    tree = write_image_folder(tmp_path / "mycam", [split_label((16, 32), 1, 2)])
    (tmp_path / "mycam_labels.yaml").write_text("1: road\n2: 7\n0: ignore\n")
    return tree


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic world (64x128, all three target modalities) shared by the training tests."""
    from madm_pl.synthetic import main as make_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "world"
    make_synthetic(
        [
            "--out",
            str(root),
            "--height",
            "64",
            "--width",
            "128",
            "--source-train",
            "8",
            "--target-train",
            "8",
            "--target-test",
            "5",
            "--workers",
            "1",
        ]
    )
    return root


@dataclass(frozen=True)
class TrainedRun:
    """A finished 2-iteration demo run of the ``lightning`` console script.

    Attributes:
        root: its ``trainer.default_root_dir`` (``small_run_args``' ``tmp_path``).
        version: ``<root>/logs/rgb2infrared/version_0``, the run's folder.
        output: everything it printed (stdout and stderr, warnings as a user sees them).
    """

    root: Path
    version: Path
    output: str


@pytest.fixture(scope="session")
def trained_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """``lightning fit`` of the demo config for 2 iterations (validation and checkpoints at 2, a
    progress line every iteration: output is not a terminal), in a subprocess as a user runs it."""
    from tests.cli_runs import DEMO, REPO, small_run_args

    root = tmp_path_factory.mktemp("trained")
    command = [
        str(Path(sys.executable).parent / "lightning"),
        "fit",
        "-c",
        str(DEMO),
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        "--trainer.log_every_n_steps=1",
        "--image_logger.every_n_steps=1",
        "--progress_bar.every_n_steps=1",
        *small_run_args(synthetic_root, root),
    ]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return TrainedRun(root, root / "logs" / "rgb2infrared" / "version_0", output)

"""The figure (``make figure``): the newest run's last checkpoint, written into that run's folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from madm_pl.callbacks.images import GAP, class_legend, title_height
from madm_pl.labels import TASKS
from madm_pl.visualize import main
from tests.cli_runs import REPO
from tests.conftest import TrainedRun
from tests.malicious import RunsACommand


def test_figure_of_the_newest_run_goes_into_its_folder(
    trained_run: TrainedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    tracked = REPO / "docs" / "figures" / "demo_rgb2infrared.png"
    before = hashlib.sha256(tracked.read_bytes()).hexdigest()
    main(["--runs", str(trained_run.version.parent), "--images", "2"])
    out = capsys.readouterr().out
    checkpoint = trained_run.version / "checkpoints" / "last.ckpt"
    assert f"figure of {checkpoint} (the newest run's last checkpoint)" in out
    assert "columns = target image, teacher pseudo-label, student prediction, ground truth" in out
    figure = np.array(Image.open(trained_run.version / "figure.png"))
    # 2 test images (test_size 64x64) x 4 columns, upscaled x3 to 192x192 panels under a title bar
    grid_height = title_height(192) + 2 * 192 + GAP
    assert figure.shape[1] == 4 * 192 + 3 * GAP and figure.shape[0] > grid_height
    assert (figure[: title_height(192)] < 128).any()  # the column titles
    legend = figure[grid_height:]
    for colour in TASKS["rgb2infrared"].palette:  # a swatch of every class, named (class_legend)
        assert (legend == colour).all(-1).any(), colour
    assert hashlib.sha256(tracked.read_bytes()).hexdigest() == before  # the README figure is untouched


def test_figure_needs_a_run_or_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--runs", str(tmp_path)])
    assert f"no {tmp_path}/version_*/checkpoints/last.ckpt: train first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
    assert "give --runs" in capsys.readouterr().err


def test_a_checkpoint_that_runs_a_command_is_refused(
    trained_run: TrainedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    crafted = torch.load(trained_run.version / "checkpoints" / "last.ckpt", weights_only=True)
    crafted["datamodule_hyper_parameters"]["x"] = RunsACommand(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(crafted, evil)
    with pytest.raises(SystemExit) as caught:
        main(["--ckpt", str(evil), "--out", str(tmp_path / "figure.png")])
    assert caught.value.code == 1
    assert not marker.exists()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(
        f"python -m madm_pl.visualize: error: cannot read the checkpoint '{evil}': "
        "torch.load(weights_only=True) refused it (Trying to load unsupported GLOBAL posix.system"
    )
    assert not (tmp_path / "figure.png").exists()


def test_class_legend_names_every_class_in_rows_that_fit() -> None:
    palette = TASKS["rgb2infrared"].palette
    classes = TASKS["rgb2infrared"].classes
    wide = class_legend(classes, palette, 2000)
    narrow = class_legend(classes, palette, 300)
    assert wide.shape[1] == 2000 and narrow.shape[1] == 300
    assert narrow.shape[0] > wide.shape[0]  # more rows when narrower
    for colour in [*palette, (0, 0, 0)]:  # every class and "ignored" (black)
        assert (narrow == np.array(colour, np.uint8)).all(-1).any()

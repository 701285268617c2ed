"""PredictionWriter: one output per input name, no silent overwrite of a folder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from madm_pl.callbacks.predictions import PredictionWriter, output_name
from madm_pl.labels import TASKS


def test_output_names_keep_path_and_full_name() -> None:
    names = ["a.png", "a.jpg", "sub/a.png", "frame.001.png", "frame.002.png", "B.PNG", "x.tiff"]
    outputs = [output_name(name) for name in names]
    assert outputs == [
        "a.png",
        "a.jpg.png",
        "sub/a.png",
        "frame.001.png",
        "frame.002.png",
        "B.PNG",
        "x.tiff.png",
    ]
    assert len(set(outputs)) == len(names)


def test_non_empty_output_folder_needs_overwrite(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "old.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"is not empty \(1 files.*--prediction_writer\.overwrite=true"):
        PredictionWriter(str(tmp_path)).setup(None, None, "predict")
    PredictionWriter(str(tmp_path)).setup(None, None, "fit")  # only predict writes
    PredictionWriter(str(tmp_path), overwrite=True).setup(None, None, "predict")
    PredictionWriter(str(tmp_path / "new")).setup(None, None, "predict")  # a missing folder is empty


def _batch(names: list[str], errors: list[str]) -> tuple[dict, dict]:
    labels = torch.tensor([[[1, 2], [3, 4]]] * len(names))
    prediction = {"prediction": labels, "name": names, "size": torch.tensor([[2, 2]] * len(names))}
    return prediction, {"error": errors}


def test_writer_writes_each_input_skips_unreadable_and_refuses_collisions(tmp_path: Path) -> None:
    writer = PredictionWriter(str(tmp_path))
    module = SimpleNamespace(task=TASKS["rgb2infrared"])
    writer.setup(None, module, "predict")
    prediction, batch = _batch(["a.jpg", "bad.png", "sub/a.png"], ["", "cannot read image 'bad.png'", ""])
    with pytest.warns(UserWarning, match=r"skipped 'bad\.png': cannot read image"):
        writer.write_on_batch_end(None, module, prediction, None, batch, 0)
    assert writer.skipped == ["bad.png"]
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "labels" / "a.jpg.png")), [[1, 2], [3, 4]])
    assert (tmp_path / "colour" / "sub" / "a.png").is_file()
    assert not (tmp_path / "labels" / "bad.png").exists()
    prediction, batch = _batch(["a.jpg.png"], [""])
    with pytest.raises(ValueError, match=r"inputs 'a\.jpg' and 'a\.jpg\.png' would both be written"):
        writer.write_on_batch_end(None, module, prediction, None, batch, 1)

"""Loading a Stable Diffusion folder: pickled weights are read with weights_only=True, and a part that
cannot be loaded is one line naming it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from madm_pl.models.presets import load_stack
from madm_pl.module import MADMModule
from tests.malicious import RunsACommand

PRIOR = Path(__file__).resolve().parents[2] / "priors" / "tiny"


@pytest.mark.parametrize(
    ("part", "safetensors", "pickled"),
    [
        ("unet", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),  # diffusers
        ("text_encoder", "model.safetensors", "pytorch_model.bin"),  # transformers
    ],
)
def test_a_pickled_part_that_runs_a_command_is_refused(
    part: str, safetensors: str, pickled: str, tmp_path: Path
) -> None:
    folder = tmp_path / "sd"
    shutil.copytree(PRIOR, folder)
    # the part's weights as a pickled .bin (older diffusers downloads) holding an object besides them
    state = load_file(folder / part / safetensors)
    (folder / part / safetensors).unlink()
    marker = tmp_path / "ran"
    torch.save({**state, "x": RunsACommand(marker)}, folder / part / pickled)
    with pytest.raises(ValueError) as caught:
        load_stack(folder)
    assert not marker.exists()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"diffusion stack '{folder}': cannot load {part}/ (")
    assert "weights_only=True" in message
    with pytest.raises(
        ValueError, match=rf"^model\.backbone='{folder}': diffusion stack .* cannot load {part}/"
    ):
        MADMModule(task="rgb2infrared", backbone=str(folder))
    assert not marker.exists()

"""Shared by the converter tests: a reference-layout state dict on the tiny prior (priors/tiny)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel

from madm_pl.models.presets import load_stack
from tests.convert.reference_layout import reference_state_dict

PRIOR = Path(__file__).resolve().parents[2] / "priors" / "tiny"

#: The demo config's head (configs/demo/rgb2infrared.yaml), so that a converted fixture loads into it.
DEMO_WIDTHS = {
    "embed_dim": 32,
    "projection_channels": 64,
    "decoded_projection_channels": 32,
    "bottleneck_width": 32,
}
DEMO_HEAD = {"head": {"class_path": "madm_pl.models.MADMHead", "init_args": DEMO_WIDTHS}}


def tap_channels(unet: UNet2DConditionModel) -> tuple[int, int, int]:
    """s3, s4, s5 channels: the last layer of up blocks 3, 2, 1 (SD v1-4: 320, 640, 1280)."""
    return tuple(unet.up_blocks[index].resnets[-1].out_channels for index in (3, 2, 1))


@pytest.fixture(scope="module")
def prior_reference() -> dict[str, torch.Tensor]:
    """A reference state dict trained on the tiny prior, at the demo head's sizes, 9 classes."""
    stack = load_stack(PRIOR)
    text_encoder = CLIPTextModel.from_pretrained(PRIOR / "text_encoder", local_files_only=True)
    return reference_state_dict(
        unet=stack.unet.state_dict(),
        vae=stack.vae.state_dict(),
        text_encoder=text_encoder.state_dict(),
        uncond=stack.uncond,
        tap_channels=tap_channels(stack.unet),
        num_classes=9,
        embed_dim=DEMO_WIDTHS["embed_dim"],
        projection_channels=DEMO_WIDTHS["projection_channels"],
        decoded_channels=DEMO_WIDTHS["decoded_projection_channels"],
        bottleneck_width=DEMO_WIDTHS["bottleneck_width"],
    )

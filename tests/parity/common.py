"""madm-pl's side of the parity checks: the goldens, the parity stack and module with the reference's weights.

The goldens (``goldens/``) were written by ``tools/parity/regenerate.py`` from the reference's own code in a
side environment; these helpers rebuild, in madm-pl, the same stack with the same weights (``fixtures.fill``
by reference name, mapped with the checkpoint converter's table) so that the tests compare like with like.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from torch import Tensor

import madm_pl.models.backbone as backbone_module
from madm_pl.convert.table import REFERENCE_VAE, reference_key
from madm_pl.models.presets import DiffusionStack
from tests.parity import fixtures as fx

GOLDENS = Path(__file__).parent / "goldens"
REPO = Path(__file__).parents[2]

#: The parity stack's name for ``model.init_args.backbone`` (``build_stack`` is patched to answer it).
PARITY_BACKBONE = "parity"


@cache
def golden_json(name: str) -> dict[str, Any]:
    """``goldens/<name>.json``."""
    return json.loads((GOLDENS / f"{name}.json").read_text())


@cache
def golden_tensors(name: str) -> dict[str, Tensor]:
    """``goldens/<name>.safetensors`` (labels and masks are stored as uint8)."""
    return load_file(str(GOLDENS / f"{name}.safetensors"))


def parity_stack(source: str) -> DiffusionStack:
    """``build_stack`` for the parity stack (random weights here; ``fill_module`` sets them)."""
    if source != PARITY_BACKBONE:
        raise ValueError(f"the parity tests build only backbone={PARITY_BACKBONE!r}, got {source!r}")
    return DiffusionStack(
        AutoencoderKL(**fx.PARITY_VAE_CONFIG),
        UNet2DConditionModel(**fx.PARITY_UNET_CONFIG),
        DDPMScheduler(**fx.SCHEDULER_CONFIG),
        torch.zeros(1, 77, fx.CONTEXT_DIM),
    )


def reference_name(madm_key: str) -> str:
    """The reference's name of a madm-pl parameter (the converter's table; the VAE by its SD prefix)."""
    if madm_key.startswith("backbone.vae."):
        return REFERENCE_VAE + madm_key.removeprefix("backbone.vae.")
    if madm_key == "backbone.uncond":
        return fx.UNCOND_KEY
    name = reference_key(madm_key)
    if name is None:
        raise KeyError(f"no reference name for {madm_key!r}")
    return name


@torch.no_grad()
def fill_module(module: torch.nn.Module) -> None:
    """The parity weights: student, UNet, VAE and ``uncond`` from ``fixtures.fill``, the teacher a copy.

    Only parameters are filled (BatchNorm buffers keep their defaults on both sides), as the reference's are.
    """
    for name, param in module.named_parameters():
        if not name.startswith("teacher."):
            param.copy_(fx.fill(reference_name(name), param.shape))
    module.backbone.uncond.copy_(fx.fill(fx.UNCOND_KEY, module.backbone.uncond.shape))
    if module.teacher is not None:
        module.teacher.load_state_dict(module.student.state_dict())


def paper_config(*overrides: str) -> Any:
    """configs/rgb2infrared.yaml (the published infrared recipe) parsed by ``madm-pl fit``'s parser, with the
    parity stack and head sizes (and ``overrides``)."""
    from madm_pl.cli import parse_config

    return parse_config(
        [
            "-c",
            str(REPO / "configs" / "rgb2infrared.yaml"),
            f"--model.init_args.backbone={PARITY_BACKBONE}",
            f"--model.init_args.head.init_args.embed_dim={fx.HEAD_EMBED_DIM}",
            f"--model.init_args.head.init_args.projection_channels={fx.HEAD_PROJECTION_CHANNELS}",
            f"--model.init_args.head.init_args.decoded_projection_channels={fx.HEAD_DECODED_CHANNELS}",
            f"--model.init_args.head.init_args.bottleneck_width={fx.HEAD_BOTTLENECK_WIDTH}",
            # memory settings that change no value (recompute in backward); off to keep the step simple
            "--model.init_args.unet_gradient_checkpointing=false",
            "--model.init_args.head.init_args.activation_checkpointing=false",
            *overrides,
        ]
    )


def build_module(monkeypatch: Any, *overrides: str) -> Any:
    """The paper recipe's ``MADMModule`` on the parity stack with the reference's weights."""
    from madm_pl.cli import instantiate

    monkeypatch.setattr(backbone_module, "build_stack", parity_stack)
    config = paper_config(*overrides)
    module = instantiate(config.model)
    fill_module(module)
    return module, config


def assert_close(actual: Tensor, expected: Tensor, rtol: float, atol: float, what: str) -> None:
    """``torch.testing.assert_close`` in float64 with a message naming the compared quantity."""
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}"
    )


def assert_sample(actual: Tensor, golden: dict[str, Any], rtol: float, atol: float, what: str) -> None:
    """Compare a tensor with a golden ``sample`` (shape, checksum, seeded elements)."""
    assert list(actual.shape) == golden["shape"], f"{what}: shape {list(actual.shape)} != {golden['shape']}"
    flat = actual.detach().reshape(-1).double()
    indices = torch.tensor(golden["indices"])
    assert_close(flat[indices], torch.tensor(golden["values"]), rtol, atol, f"{what} (sampled elements)")
    checksum = torch.tensor(fx.checksum(actual))
    scale = flat.numel() ** 0.5
    assert_close(checksum, torch.tensor(golden["checksum"]), rtol, atol * scale * 4, f"{what} (sums)")

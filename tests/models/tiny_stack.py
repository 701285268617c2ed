"""A stack folder of the ``tiny`` preset for the loading tests (only tests write one)."""

from __future__ import annotations

import os
from pathlib import Path

from madm_pl.models.presets import build_stack, build_tiny_text_encoder, build_tiny_tokenizer, save_stack


def write_tiny_stack(path: str | os.PathLike) -> Path:
    """Write the ``tiny`` preset (fixed random weights) as a stack folder.

    Args:
        path: the folder to write.

    Returns:
        The folder; ``DiffusionBackbone(source=str(path))`` loads the same network as ``source="tiny"``.
    """
    stack = build_stack("tiny")
    return save_stack(
        path,
        vae=stack.vae,
        unet=stack.unet,
        scheduler=stack.scheduler,
        tokenizer=build_tiny_tokenizer(),
        text_encoder=build_tiny_text_encoder(),
    )

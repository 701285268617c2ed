"""Models: the Stable Diffusion backbone, the learned conditioning, the segmentation head (METHOD.md §3)."""

import os

# Nothing is ever downloaded: huggingface_hub reads this once, when it is first imported (by diffusers or
# transformers), so it must be set before the imports below (and before any other module of the package
# imports those libraries: madm_pl/__init__.py should set it as well).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from madm_pl.models.backbone import BackboneOutput, DiffusionBackbone
from madm_pl.models.conditioning import PromptConditioning
from madm_pl.models.head import Bottleneck, HeadFactory, MADMHead

__all__ = [
    "BackboneOutput",
    "Bottleneck",
    "DiffusionBackbone",
    "HeadFactory",
    "MADMHead",
    "PromptConditioning",
]

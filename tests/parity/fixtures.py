"""What both sides of a parity check build identically: the stack's sizes, its weights, the inputs, dropout.

This module is imported by madm-pl's parity tests and, by file path, by the regeneration script
(``tools/parity/regenerate.py``) inside the reference's side environment. So it may use only the standard
library and torch (both sides run torch 2.13.0 on CPU, whose generators give the same numbers), and never
madm-pl or the reference.

- The *parity stack*: SD v1-4's UNet block layout (``layers_per_block=2``, so the reference's tap indices
  ``unet_block_indices=[5, 8, 11]`` point at the last layer of up blocks 1-3, as they do on SD) at tiny
  widths, SD's 768-wide context and DDPM schedule, and a tiny stride-8 VAE. Images are 512x512 because the
  reference hard-codes that width (``AttentionFeatureExtractorBackbone.forward_features`` keys the taps by
  ``512 // stride``) and its fixed noise is drawn at the 64x64 latent.
- Weights: every tensor is filled from a seed derived from its **reference** name (``fill``), so the two
  sides hold the same values whatever order their constructors draw in. madm-pl's test maps its own names
  to the reference's with ``madm_pl.convert.table.reference_key``, the checkpoint converter's table.
- Inputs: a source image, its label (train ids and 255) and a target image, made from seeds.
- Dropout: ``ReplayDropout2d`` replaces the head's ``Dropout2d`` on both sides with channel masks drawn from
  a seed per (module, call), since the two sides consume the global RNG differently.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Image size (H, W): 512 wide because the reference keys its taps by width and hard-codes 512 (see the
#: module docstring); 64 high to keep the step cheap on a CPU. The latent is 8x64, and the reference's
#: ``LdmDiffusers.latent_image_size`` (a size constant, 64x64 for 512x512) is set to it so that its fixed
#: noise is drawn at that size, as madm-pl draws it, instead of resized.
IMAGE_SIZE = (64, 512)
LATENT_SIZE = (IMAGE_SIZE[0] // 8, IMAGE_SIZE[1] // 8)

#: The infrared task: FMB's 9 classes.
TASK = "rgb2infrared"
NUM_CLASSES = 9

#: SD v1-4's UNet layout (block types, layers_per_block=2, 768-wide context) at tiny widths.
PARITY_UNET_CONFIG: dict = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (16, 16, 32, 32),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 8,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 2,
}

#: Tiny VAE: stride 8 (four blocks), 4 latent channels, SD's scaling factor.
PARITY_VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (8, 16, 16, 16),
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

#: SD's DDPM training schedule.
SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}

#: Width of SD's time embedding here (4 x block_out_channels[0]); the reference's class constant is 1280.
TIME_EMBED_DIM = 4 * PARITY_UNET_CONFIG["block_out_channels"][0]
CONTEXT_DIM = PARITY_UNET_CONFIG["cross_attention_dim"]

#: Tap channels (stride 32, 16, 8): the last resnet of up blocks 1, 2, 3.
TAP_CHANNELS = tuple(reversed(PARITY_UNET_CONFIG["block_out_channels"]))[1:]

#: Head sizes (the paper's 256 / 512 / 128 / 128 made tiny; GroupNorm(32) needs multiples of 32).
HEAD_EMBED_DIM = 16
HEAD_PROJECTION_CHANNELS = 32
HEAD_DECODED_CHANNELS = 32
HEAD_BOTTLENECK_WIDTH = 32

#: Classifier weights are scaled up so that a share of the teacher's pixels passes the 0.968 confidence
#: (q > 0): with q = 0 the target terms would vanish and test nothing.
CLASSIFIER_GAIN = 12.0

#: Reference names of the pieces that get special fills.
UNCOND_KEY = "backbone.feature_extractor.ldm_extractor.uncond_inputs"
_CONDITIONING_SCALES = {
    "prompt_embed": 0.5,
    "alpha_cond_prompt": 0.5,
    "alpha_uncond_prompt": 0.5,
    "alpha_cond_time": 0.5,
    "time_embed": 0.5,
}


def _generator(key: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def fill(key: str, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """The value of the tensor named ``key`` (a reference state-dict name) in the parity stack.

    Normal draws from a generator seeded by ``crc32(key)``: weights of rank >= 2 scaled by
    ``1/sqrt(fan_in)`` (the classifier by :data:`CLASSIFIER_GAIN` more), norm weights ``1 + 0.1 n``, biases
    ``0.05 n``, the prompt, its gates, the time embedding and its gate ``0.5 n`` plus 0.5 for the prompt
    gates, the empty-prompt embedding and the test inputs named ``parity/...`` ``n``.

    Args:
        key: the reference's name of the tensor.
        shape: its shape in the reference's layout.

    Returns:
        float32 tensor of ``shape`` on CPU.
    """
    shape = tuple(shape)
    noise = torch.randn(shape, generator=_generator(key))
    leaf = key.rsplit(".", 1)[-1]
    if key == UNCOND_KEY or key.startswith("parity/"):
        return noise
    if leaf in _CONDITIONING_SCALES:
        offset = 0.5 if leaf.startswith("alpha_") and leaf.endswith("prompt") else 0.0
        return offset + _CONDITIONING_SCALES[leaf] * noise
    if leaf == "bias":
        return 0.05 * noise
    if len(shape) == 1:
        return 1.0 + 0.1 * noise
    fan_in = 1
    for size in shape[1:]:
        fan_in *= size
    gain = CLASSIFIER_GAIN if key.endswith("conv_seg.weight") else 1.0
    return gain * noise / fan_in**0.5


# ---------------------------------------------------------------------------------------------- inputs
def _smooth_field(seed: int, channels: int, cells: tuple[int, int] = (2, 16)) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, channels, *cells, generator=generator)
    return F.interpolate(coarse, size=IMAGE_SIZE, mode="bilinear", align_corners=False)


def source_label(seed: int = 0) -> Tensor:
    """(1,64,512) int64: column bands of classes 0-3, discs of 4-8 and an ignore (255) rectangle."""
    generator = torch.Generator().manual_seed(seed)
    height, width = IMAGE_SIZE
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    label = (xs // (width // 4)).clamp(max=3)
    for cls in range(4, NUM_CLASSES):
        cy = float(torch.rand(1, generator=generator)) * height
        cx = float(torch.rand(1, generator=generator)) * (width - 80) + 40
        radius = 10 + 20 * float(torch.rand(1, generator=generator))
        label[(ys - cy) ** 2 + (xs - cx) ** 2 < radius**2] = cls
    x0 = int(float(torch.rand(1, generator=generator)) * (width - 64))
    label[8:40, x0 : x0 + 48] = 255
    return label[None].long()


def source_image(label: Tensor, seed: int = 1) -> Tensor:
    """(1,3,64,512) float32 in [0,1], multiples of 1/255 (as 8-bit images): a smooth field whose colour
    depends on the label's class."""
    palette = torch.randn(256, 3, generator=torch.Generator().manual_seed(seed + 1000))
    colour = palette[label[0]].permute(2, 0, 1)[None]
    return _eight_bit(torch.sigmoid(0.8 * _smooth_field(seed, 3) + colour))


def target_image(seed: int = 2) -> Tensor:
    """(1,3,64,512) float32 in [0,1], multiples of 1/255: a grey (one channel repeated, like infrared)
    smooth field."""
    return _eight_bit(torch.sigmoid(1.5 * _smooth_field(seed, 1, cells=(3, 24)))).repeat(1, 3, 1, 1)


def _eight_bit(image: Tensor) -> Tensor:
    # k/255 exactly as madm-pl's loader divides 8-bit pixels, and as the reference's (x - 0) / 255 gives them.
    return (image * 255).round() / 255


def batch(micro_batch: int) -> dict[str, Tensor]:
    """The inputs of one micro-batch (one image = one reference GPU) of the full training step.

    Returns:
        ``source_image`` (1,3,64,512), ``source_label`` (1,64,512) int64, ``target_image`` (1,3,64,512).
    """
    label = source_label(10 * micro_batch)
    return {
        "source_image": source_image(label, 10 * micro_batch + 1),
        "source_label": label,
        "target_image": target_image(10 * micro_batch + 2),
    }


def checksum(tensor: Tensor) -> list[float]:
    """Sum and sum of squares in float64: enough to tell that both sides built the same input."""
    values = tensor.detach().double()
    return [float(values.sum()), float((values * values).sum())]


# --------------------------------------------------------------------------------------------- dropout
class ReplayDropout2d(nn.Module):
    """Dropout2d with masks drawn from a seed per (name, call): the same on both sides of the parity check.

    Each call zeroes whole channels with the replaced module's probability p and scales the rest by
    1/(1-p), as ``nn.Dropout2d`` does in train mode; in eval mode it is the identity.

    Args:
        name: which head this is (``student`` or ``teacher``); part of the seed.
        p: the drop probability of the module it replaces.
    """

    def __init__(self, name: str, p: float) -> None:
        super().__init__()
        self.name = name
        self.p = p
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        generator = _generator(f"dropout/{self.name}/{self.calls}")
        self.calls += 1
        keep = torch.rand(x.shape[0], x.shape[1], 1, 1, generator=generator) >= self.p
        return x * (keep.to(x.dtype) / (1 - self.p))


def replace_dropout(head: nn.Module, name: str) -> ReplayDropout2d:
    """Swap the one ``nn.Dropout2d`` of ``head`` for a ``ReplayDropout2d`` with its p; returns the new one.

    Raises:
        ValueError: ``head`` holds no ``Dropout2d`` or more than one.
    """
    found = [
        (parent, child_name, child)
        for parent in head.modules()
        for child_name, child in parent.named_children()
        if isinstance(child, nn.Dropout2d)
    ]
    if len(found) != 1:
        raise ValueError(f"expected one Dropout2d in the head, found {len(found)}")
    parent, child_name, child = found[0]
    replay = ReplayDropout2d(name, float(child.p))
    setattr(parent, child_name, replay)
    return replay


def subsample_indices(numel: int, count: int, key: str) -> Tensor:
    """Up to ``count`` distinct flat indices of a tensor with ``numel`` elements, from a seed per ``key``."""
    if numel <= count:
        return torch.arange(numel)
    return torch.randperm(numel, generator=_generator(f"subsample/{key}"))[:count].sort().values


def named_tensors(state: dict[str, Tensor]) -> Iterator[tuple[str, Tensor]]:
    """The items of a state dict in sorted-name order (both sides write and read goldens in this order)."""
    for key in sorted(state):
        yield key, state[key]

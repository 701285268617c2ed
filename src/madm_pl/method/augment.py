"""DACS strong augmentation of the mixed image: colour jitter, then Gaussian blur (METHOD.md §4.3).

The reference applies kornia's ``ColorJitter`` and ``GaussianBlur2d`` modules, whose factors come from
the global random state. Here the factors are drawn from an explicit ``torch.Generator`` and applied
with the kornia functions those modules call, so the operations are kornia's and the draws are
reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch
from torch import Tensor


def _adjust_hue_turns(image: Tensor, turns: float) -> Tensor:
    return kornia.enhance.adjust_hue(image, turns * 2 * math.pi)  # kornia's hue shift is in radians


# The four steps of kornia's ColorJitter (PIL-aligned), by index. kornia.enhance.adjust_brightness and
# adjust_contrast are the additive / plain-multiplicative variants, not ColorJitter's.
_STEPS = {
    0: kornia.enhance.adjust_brightness_accumulative,  # x * b
    1: kornia.enhance.adjust_contrast_with_mean_subtraction,  # blend with the image's mean luma
    2: kornia.enhance.adjust_saturation_with_gray_subtraction,  # blend with the pixel's luma
    3: _adjust_hue_turns,  # rotation in HSV
}


def color_jitter(
    image: Tensor, brightness: float, contrast: float, saturation: float, hue: float, order: Sequence[int]
) -> Tensor:
    """Deterministic colour jitter of RGB images with given factors: kornia ``ColorJitter``'s steps.

    Brightness ``x * b``; contrast ``(x - m) * c + m`` with m the mean luma of each image; saturation
    ``(x - y) * s + y`` with y the pixel's luma (ITU-R 601 weights); hue rotation by ``hue`` turns in
    HSV. The first three clamp to [0, 1]; the result is clamped to [0, 1], as ``ColorJitter`` does.

    Args:
        image: (N,3,H,W) float in [0,1].
        brightness: multiplicative factor (1 = unchanged).
        contrast: factor (1 = unchanged).
        saturation: factor (1 = unchanged).
        hue: shift in turns, in [-0.5, 0.5] (0 = unchanged; kornia takes radians, 2 pi per turn).
        order: the steps to apply, in order: indices into (brightness, contrast, saturation, hue).

    Returns:
        (N,3,H,W) float in [0,1].
    """
    factors = (brightness, contrast, saturation, hue)
    for step in order:
        if step not in _STEPS:
            raise ValueError(f"color_jitter: order must be a permutation of 0..3, got {list(order)}")
        image = _STEPS[step](image, float(factors[step]))
    return image.clamp(0, 1)


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel size about 10% of ``size``: the DACS/reference formula, float quirks kept.

    ``floor(ceil(0.1 * size) - 0.5 + ceil(0.1 * size) % 2)``, i.e. ``c`` if ``c = ceil(0.1 * size)``
    is odd, else ``c - 1`` (512 -> 51, 128 -> 13, 30 -> 3 because 0.1 * 30 = 3.0000000000000004).
    """
    ceiled = math.ceil(0.1 * size)
    return math.floor(ceiled - 0.5 + ceiled % 2)


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of (N,C,H,W) with the reference's kernel size per axis and reflect border.

    kornia's ``gaussian_blur2d`` (what ``GaussianBlur2d`` calls) with kernel ``blur_kernel_size`` of
    each axis' length, the same ``sigma`` on both axes and taps normalised to sum 1.
    """
    kernel_size = (blur_kernel_size(image.shape[-2]), blur_kernel_size(image.shape[-1]))
    return kornia.filters.gaussian_blur2d(image, kernel_size, (sigma, sigma), border_type="reflect")


def strong_augment(
    images: Tensor,
    generator: torch.Generator,
    strength: float = 0.2,
    jitter_threshold: float = 0.2,
    blur_threshold: float = 0.5,
) -> Tensor:
    """DACS strong augmentation of mixed images: colour jitter, then Gaussian blur (METHOD.md §4).

    Per sample, with uniform draws u_j, u_b in [0,1): colour jitter when ``u_j > jitter_threshold``
    (factors for brightness, contrast and saturation from U(1 - strength, 1 + strength), hue shift
    from U(-strength, strength) turns, the four in a random order), then Gaussian blur when
    ``u_b > blur_threshold`` with sigma ~ U(0.15, 1.15) and ``blur_kernel_size`` per axis. The
    reference decides per GPU batch (one image per GPU in the recipe), so per sample is the recipe.

    Draw order (for reproducibility): ``torch.rand(B, 7)`` = (u_j, u_b, brightness, contrast,
    saturation, hue, sigma) per sample, then one ``torch.randperm(4)`` per sample.

    Args:
        images: (B,3,H,W) float in [0,1].
        generator: random source.
        strength: jitter strength s (0 disables every jitter factor).
        jitter_threshold: jitter applies when the draw exceeds this (0.2: with probability 0.8;
            1.0 never).
        blur_threshold: blur applies when the draw exceeds this (0.5: with probability 0.5;
            1.0 never).

    Returns:
        (B,3,H,W) float in [0,1], a new tensor. Labels are not touched by this augmentation.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"strong_augment: images must be (B,3,H,W), got shape {tuple(images.shape)}")
    batch = images.shape[0]
    draws = torch.rand(batch, 7, generator=generator, device=generator.device).tolist()
    orders = [torch.randperm(4, generator=generator, device=generator.device).tolist() for _ in range(batch)]
    out = []
    for i in range(batch):
        u_jitter, u_blur, b, c, s, h, sigma = draws[i]
        image = images[i : i + 1]
        if u_jitter > jitter_threshold:
            image = color_jitter(
                image,
                brightness=1 + strength * (2 * b - 1),
                contrast=1 + strength * (2 * c - 1),
                saturation=1 + strength * (2 * s - 1),
                hue=strength * (2 * h - 1),
                order=orders[i],
            )
        if u_blur > blur_threshold:
            image = gaussian_blur(image, sigma=0.15 + sigma)
        out.append(image)
    return torch.cat(out).clamp(0, 1)

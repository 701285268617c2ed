"""DACS strong augmentation of the mixed image: colour jitter, then Gaussian blur (METHOD.md §4.3).

The reference applies kornia's ``ColorJitter`` and ``GaussianBlur2d`` modules, whose factors come from
the global random state. Here the factors are drawn from an explicit ``torch.Generator`` and applied
with the same operations, so the draws are reproducible.

Two colour jitters (``color_jitter`` option, REFERENCE_NOTES.md §3):

- ``"kornia-0.6"`` (the default of every recipe): kornia 0.6's ``ColorJitter``, the version the
  reference's environment installs (``requirements.txt`` pins ``stable-diffusion-sdkit==2.1.3``, whose
  metadata requires ``kornia==0.6``). Written here from its formulas: brightness adds ``b - 1``, contrast
  multiplies by ``c`` (no blend towards a mean), saturation scales S in HSV, hue rotates H in HSV; each
  step clamps to [0, 1] (brightness, contrast, saturation) or stays in it (hue). kornia 0.6 itself is not
  a dependency: its import downloads feature weights (``kornia.feature``) and it predates the torch used
  here.
- ``"kornia-0.9"``: the PIL-aligned operations of current kornia's ``ColorJitter``, called from kornia:
  brightness ``x * b``, contrast and saturation blended towards the mean luma / the pixel's luma.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import kornia
import torch
from torch import Tensor

#: The ``color_jitter`` option's values; the first is the default.
COLOR_JITTERS = ("kornia-0.6", "kornia-0.9")


# ------------------------------------------------------------------------------ kornia 0.6 semantics
def rgb_to_hsv(image: Tensor, eps: float = 1e-8) -> Tensor:
    """RGB to HSV as kornia 0.6 computes it.

    V = max(R,G,B); S = (max - min) / (max + eps); H from the channel holding the maximum, in radians in
    [0, 2 pi) (0 where max = min).

    Args:
        image: (N,3,H,W) float in [0,1].
        eps: keeps S finite on black pixels.

    Returns:
        (N,3,H,W) float: H in [0, 2 pi), S in [0,1], V in [0,1].
    """
    maximum, argmax = image.max(dim=-3)
    minimum = image.min(dim=-3).values
    delta = maximum - minimum
    saturation = delta / (maximum + eps)
    safe_delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    red, green, blue = (maximum.unsqueeze(-3) - image).unbind(dim=-3)
    # Hue in sixths of a turn, by the channel that holds the maximum (R: 0, G: 2, B: 4 sixths).
    sixths = torch.stack((blue - green, red - blue + 2 * safe_delta, green - red + 4 * safe_delta), dim=-3)
    hue = torch.gather(sixths / safe_delta.unsqueeze(-3), -3, argmax.unsqueeze(-3)).squeeze(-3)
    hue = 2 * math.pi * ((hue / 6) % 1)
    return torch.stack((hue, saturation, maximum), dim=-3)


def hsv_to_rgb(image: Tensor) -> Tensor:
    """HSV (H in radians) to RGB, as kornia 0.6: the sector of H selects (V, T, P, Q) per channel.

    Args:
        image: (N,3,H,W) float: H in radians (any value: it is taken modulo 2 pi), S and V in [0,1].

    Returns:
        (N,3,H,W) float in [0,1].
    """
    hue, saturation, value = image.unbind(dim=-3)
    sixths = hue / (2 * math.pi) * 6
    sector = torch.floor(sixths) % 6
    fraction = sixths % 6 - sector
    p = value * (1 - saturation)
    q = value * (1 - fraction * saturation)
    t = value * (1 - (1 - fraction) * saturation)
    # Per sector 0..5: R = V Q P P T V, G = T V V Q P P, B = P P T V V Q.
    red = torch.stack((value, q, p, p, t, value), dim=-3)
    green = torch.stack((t, value, value, q, p, p), dim=-3)
    blue = torch.stack((p, p, t, value, value, q), dim=-3)
    index = sector.long().unsqueeze(-3)
    return torch.cat([torch.gather(channel, -3, index) for channel in (red, green, blue)], dim=-3)


def adjust_brightness_additive(image: Tensor, factor: float) -> Tensor:
    """kornia 0.6 ``ColorJitter`` brightness: ``clamp(x + (factor - 1), 0, 1)``. (N,3,H,W) in [0,1]."""
    return (image + (factor - 1)).clamp(0, 1)


def adjust_contrast_multiplicative(image: Tensor, factor: float) -> Tensor:
    """kornia 0.6 contrast: ``clamp(x * factor, 0, 1)``, no blend towards a mean. (N,3,H,W) in [0,1]."""
    return (image * factor).clamp(0, 1)


def adjust_saturation_hsv(image: Tensor, factor: float) -> Tensor:
    """kornia 0.6 saturation: S times ``factor`` in HSV, clamped to [0,1]. (N,3,H,W) in [0,1]."""
    hue, saturation, value = rgb_to_hsv(image).unbind(dim=-3)
    return hsv_to_rgb(torch.stack((hue, (saturation * factor).clamp(0, 1), value), dim=-3))


def adjust_hue_hsv(image: Tensor, turns: float) -> Tensor:
    """kornia 0.6 hue: H + ``turns`` x 2 pi, ``fmod`` 2 pi (kornia's factor is in radians). (N,3,H,W)."""
    hue, saturation, value = rgb_to_hsv(image).unbind(dim=-3)
    hue = torch.fmod(hue + turns * 2 * math.pi, 2 * math.pi)
    return hsv_to_rgb(torch.stack((hue, saturation, value), dim=-3))


# ------------------------------------------------------------------------------ kornia 0.9 semantics
def _adjust_hue_turns(image: Tensor, turns: float) -> Tensor:
    return kornia.enhance.adjust_hue(image, turns * 2 * math.pi)  # kornia's hue shift is in radians


Step = Callable[[Tensor, float], Tensor]

# The four steps of each ColorJitter, by index (brightness, contrast, saturation, hue), as its ``order``
# numbers them. kornia 0.9's adjust_brightness / adjust_contrast are the additive / plain-multiplicative
# functions (0.6's), not its ColorJitter's.
_STEPS: dict[str, dict[int, Step]] = {
    "kornia-0.6": {
        0: adjust_brightness_additive,
        1: adjust_contrast_multiplicative,
        2: adjust_saturation_hsv,
        3: adjust_hue_hsv,
    },
    "kornia-0.9": {
        0: kornia.enhance.adjust_brightness_accumulative,  # x * b
        1: kornia.enhance.adjust_contrast_with_mean_subtraction,  # blend with the image's mean luma
        2: kornia.enhance.adjust_saturation_with_gray_subtraction,  # blend with the pixel's luma
        3: _adjust_hue_turns,  # rotation in HSV
    },
}


def color_jitter(
    image: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    order: Sequence[int],
    semantics: str = "kornia-0.6",
) -> Tensor:
    """Deterministic colour jitter of RGB images with given factors: kornia ``ColorJitter``'s steps.

    ``"kornia-0.6"``: brightness ``x + b - 1``; contrast ``x * c``; saturation ``S * s`` in HSV; hue
    ``H + 2 pi h`` (fmod 2 pi) in HSV. Each step stays in [0, 1] (the first three clamp).
    ``"kornia-0.9"``: brightness ``x * b``; contrast ``(x - m) * c + m`` with m the mean luma of each
    image; saturation ``(x - y) * s + y`` with y the pixel's luma (ITU-R 601 weights); hue rotation by
    ``hue`` turns in HSV. The first three clamp to [0, 1].
    Either way the result is clamped to [0, 1] (kornia 0.9's ColorJitter does; 0.6's steps already are).

    Args:
        image: (N,3,H,W) float in [0,1].
        brightness: factor (1 = unchanged).
        contrast: factor (1 = unchanged).
        saturation: factor (1 = unchanged).
        hue: shift in turns, in [-0.5, 0.5] (0 = unchanged; kornia takes radians, 2 pi per turn).
        order: the steps to apply, in order: indices into (brightness, contrast, saturation, hue).
        semantics: ``"kornia-0.6"`` or ``"kornia-0.9"`` (:data:`COLOR_JITTERS`).

    Returns:
        (N,3,H,W) float in [0,1].
    """
    if semantics not in _STEPS:
        raise ValueError(f"color_jitter={semantics!r}: expected one of {list(COLOR_JITTERS)}")
    steps = _STEPS[semantics]
    factors = (brightness, contrast, saturation, hue)
    for step in order:
        if step not in steps:
            raise ValueError(f"color_jitter: order must be a permutation of 0..3, got {list(order)}")
        image = steps[step](image, float(factors[step]))
    return image.clamp(0, 1)


# strong_augment's option is called color_jitter (the model option's name), which hides the function.
_color_jitter = color_jitter


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
    image: Tensor,
    generator: torch.Generator,
    strength: float = 0.2,
    jitter_threshold: float = 0.2,
    blur_threshold: float = 0.5,
    color_jitter: str = "kornia-0.6",
) -> Tensor:
    """DACS strong augmentation of mixed images: colour jitter, then Gaussian blur (METHOD.md §4).

    Per sample, with uniform draws u_j, u_b in [0,1): colour jitter when ``u_j > jitter_threshold``
    (factors for brightness, contrast and saturation from U(1 - strength, 1 + strength), hue shift
    from U(-strength, strength) turns, the four in a random order: what the reference's
    ``ColorJitter(s, s, s, s)`` draws, with the operations of ``color_jitter``), then Gaussian blur when
    ``u_b > blur_threshold`` with sigma ~ U(0.15, 1.15) and ``blur_kernel_size`` per axis. The
    reference decides per GPU batch (one image per GPU in the recipe), so per sample is the recipe.

    Draw order (for reproducibility): ``torch.rand(B, 7)`` = (u_j, u_b, brightness, contrast,
    saturation, hue, sigma) per sample, then one ``torch.randperm(4)`` per sample.

    Args:
        image: (B,3,H,W) float in [0,1].
        generator: random source.
        strength: jitter strength s (0 disables every jitter factor).
        jitter_threshold: jitter applies when the draw exceeds this (0.2: with probability 0.8;
            1.0 never).
        blur_threshold: blur applies when the draw exceeds this (0.5: with probability 0.5;
            1.0 never).
        color_jitter: the jitter's operations, ``"kornia-0.6"`` (the reference's environment) or
            ``"kornia-0.9"`` (:func:`color_jitter`).

    Returns:
        (B,3,H,W) float in [0,1], a new tensor. Labels are not touched by this augmentation.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"strong_augment: image must be (B,3,H,W), got shape {tuple(image.shape)}")
    if color_jitter not in COLOR_JITTERS:
        raise ValueError(f"color_jitter={color_jitter!r}: expected one of {list(COLOR_JITTERS)}")
    batch = image.shape[0]
    draws = torch.rand(batch, 7, generator=generator, device=generator.device).tolist()
    orders = [torch.randperm(4, generator=generator, device=generator.device).tolist() for _ in range(batch)]
    out = []
    for i in range(batch):
        u_jitter, u_blur, b, c, s, h, sigma = draws[i]
        sample = image[i : i + 1]
        if u_jitter > jitter_threshold:
            sample = _color_jitter(
                sample,
                brightness=1 + strength * (2 * b - 1),
                contrast=1 + strength * (2 * c - 1),
                saturation=1 + strength * (2 * s - 1),
                hue=strength * (2 * h - 1),
                order=orders[i],
                semantics=color_jitter,
            )
        if u_blur > blur_threshold:
            sample = gaussian_blur(sample, sigma=0.15 + sigma)
        out.append(sample)
    return torch.cat(out).clamp(0, 1)

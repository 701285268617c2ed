"""Pure functions of the MADM training step: EMA, ClassMix, strong augmentation, DPLG, pseudo-labels,
palette painting, CE and LPLR losses, the LR factor and the mIoU rule (SPEC sections 4, 5, 6).

No Lightning, no file I/O, no global random state: every random draw takes an explicit
``torch.Generator``. Tensors are created on the device of the inputs. The behaviour was checked
against the reference implementation (XiaRho/MADM); see ``docs/REFERENCE_NOTES.md`` for the
verified facts and the places where madm-pl deliberately differs.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from madm_pl.labels import IGNORE_INDEX

# Recipe constants of SPEC section 5 (the reference's detectron2/fvcore scheduler configuration).
LR_WARMUP_LENGTH = 500 / 184375
LR_WARMUP_FACTOR = 0.067
LR_MILESTONES = (0.88888, 0.96296)
LR_VALUES = (1.0, 0.1, 0.01)
# fvcore compares progress fractions with this slack; it decides the exact iterations of the steps.
_WHERE_EPSILON = 1e-6

# ITU-R 601 luma weights, as PIL / torchvision / kornia use for greyscale in colour jitter.
_LUMA = (0.299, 0.587, 0.114)


# --------------------------------------------------------------------------------------------------
# EMA teacher (SPEC section 4, step 1)
# --------------------------------------------------------------------------------------------------
def ema_alpha(iteration: int, max_alpha: float = 0.999) -> float:
    """EMA decay for a 0-based iteration: ``min(1 - 1/(iteration + 1), max_alpha)`` (SPEC section 4).

    Iteration 0 gives 0 (the teacher becomes a copy of the student), iteration 1 gives 0.5 and the
    decay reaches ``max_alpha`` from iteration 999 on (for 0.999).

    Args:
        iteration: 0-based optimiser step index, >= 0.
        max_alpha: upper bound of the decay, in [0, 1).

    Raises:
        ValueError: for a negative iteration.
    """
    if iteration < 0:
        raise ValueError(f"ema_alpha: iteration must be >= 0, got {iteration}")
    return min(1.0 - 1.0 / (iteration + 1), max_alpha)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """In place: ``teacher_param <- alpha * teacher_param + (1 - alpha) * student_param``.

    Parameters only (SPEC section 4): buffers such as BatchNorm running statistics are left as
    they are, exactly as the reference's ``_update_ema`` does. The teacher runs in train mode, so
    its BatchNorm layers use batch statistics and the running buffers never matter for it.

    Args:
        teacher: the EMA module; same architecture (parameter names and shapes) as ``student``.
        student: the trained module.
        alpha: decay in [0, 1]; 0 copies the student, 1 keeps the teacher.

    Raises:
        ValueError: when the two modules' parameters do not match by name and shape, or alpha is
            outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"ema_update: alpha must lie in [0, 1], got {alpha}")
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    if teacher_params.keys() != student_params.keys():
        missing = sorted(teacher_params.keys() ^ student_params.keys())
        raise ValueError(f"ema_update: teacher and student parameters differ: {missing[:5]}")
    targets, sources = [], []
    for name, teacher_param in teacher_params.items():
        student_param = student_params[name]
        if teacher_param.shape != student_param.shape:
            raise ValueError(
                f"ema_update: parameter {name!r} has shape {tuple(teacher_param.shape)} in the teacher "
                f"but {tuple(student_param.shape)} in the student"
            )
        targets.append(teacher_param)
        sources.append(student_param.detach().to(teacher_param.dtype))
    # Multi-tensor kernels: two launches for the whole model instead of two per parameter.
    torch._foreach_mul_(targets, alpha)
    torch._foreach_add_(targets, sources, alpha=1.0 - alpha)


# --------------------------------------------------------------------------------------------------
# ClassMix (SPEC section 4, step 3)
# --------------------------------------------------------------------------------------------------
def classmix_masks(labels: Tensor, generator: torch.Generator, include_ignore: bool = True) -> Tensor:
    """Per-sample ClassMix masks: half of the classes present in each label, rounded up.

    For each sample, the n distinct values of its label are shuffled with ``generator`` and the first
    ``ceil(n / 2)`` are kept; the mask is 1 where the pixel's value is kept. With ``include_ignore``
    (the reference's draw: ``torch.unique`` over the per-GPU batch, i.e. the one image of the recipe,
    ``IGNORE_INDEX`` included) the ignore label counts as a class: when it is drawn, the ignored source
    pixels are pasted with label 255 and count in no loss. Without it, only train ids are drawn and
    ignored source pixels are never pasted.

    Args:
        labels: (B,H,W) int64 source labels, train ids or ``IGNORE_INDEX``.
        generator: random source; one ``randperm`` per sample, in batch order.
        include_ignore: draw 255 like a class (the reference, SPEC section 4.3) or leave it out.

    Returns:
        (B,1,H,W) float32 in {0, 1}, on ``labels.device``; without ``include_ignore`` all zeros for a
        label that is all ignore.
    """
    if labels.dim() != 3:
        raise ValueError(f"classmix_masks: labels must be (B,H,W), got shape {tuple(labels.shape)}")
    masks = []
    for label in labels:
        classes = torch.unique(label if include_ignore else label[label != IGNORE_INDEX])
        order = torch.randperm(classes.numel(), generator=generator, device=generator.device)
        chosen = classes[order[: (classes.numel() + 1) // 2].to(classes.device)]
        masks.append(torch.isin(label, chosen))
    return torch.stack(masks)[:, None].float()


def mix(mask: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """ClassMix paste: ``mask * source + (1 - mask) * target``.

    Args:
        mask: (B,1,H,W) float in {0, 1} from ``classmix_masks``.
        source: (B,C,H,W) float images (or weights), or (B,H,W) integer labels.
        target: same shape and dtype as ``source``.

    Returns:
        Same shape and dtype as ``source``. Labels are selected with ``where`` so that they stay
        exact integers.
    """
    if source.shape != target.shape:
        raise ValueError(f"mix: source {tuple(source.shape)} and target {tuple(target.shape)} differ")
    if source.dim() == 3:
        if mask.shape != (source.shape[0], 1, *source.shape[1:]):
            raise ValueError(f"mix: mask {tuple(mask.shape)} does not fit labels {tuple(source.shape)}")
        return torch.where(mask[:, 0] > 0.5, source, target)
    if source.dim() != 4 or mask.shape != (source.shape[0], 1, *source.shape[2:]):
        raise ValueError(f"mix: mask {tuple(mask.shape)} does not fit images {tuple(source.shape)}")
    mask = mask.to(source.dtype)
    return mask * source + (1 - mask) * target


# --------------------------------------------------------------------------------------------------
# Strong augmentation (SPEC section 4, step 3): colour jitter and Gaussian blur on [0,1] tensors
# --------------------------------------------------------------------------------------------------
def _grey(image: Tensor) -> Tensor:
    """(N,3,H,W) in [0,1] -> (N,1,H,W) luma."""
    r, g, b = image.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b)[:, None]


def _rgb_to_hsv(image: Tensor) -> Tensor:
    """(N,3,H,W) RGB in [0,1] -> (N,3,H,W) HSV with hue in turns [0,1), saturation and value in [0,1]."""
    r, g, b = image.unbind(1)
    maxc, argmax = image.max(1)
    minc = image.min(1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    # Hue sector by which channel is largest (ties resolve to the first, as in colorsys).
    hue = torch.where(
        argmax == 0, (g - b) / safe, torch.where(argmax == 1, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    saturation = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), 0.0)
    return torch.stack([hue, saturation, maxc], 1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of ``_rgb_to_hsv``."""
    hue, saturation, value = hsv.unbind(1)
    sector = torch.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    sector = sector.long() % 6
    p = value * (1 - saturation)
    q = value * (1 - fraction * saturation)
    t = value * (1 - (1 - fraction) * saturation)
    # Rows: the (r, g, b) source for each of the 6 hue sectors.
    candidates = torch.stack([value, q, p, t], 1)  # indices 0=v, 1=q, 2=p, 3=t
    table = torch.tensor(
        [[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]], device=hsv.device
    )
    index = table[sector].permute(0, 3, 1, 2)  # (N,3,H,W)
    return torch.gather(candidates, 1, index)


def adjust_hue(image: Tensor, shift: float) -> Tensor:
    """Rotate the hue of (N,3,H,W) RGB images in [0,1] by ``shift`` turns (0.5 = 180 degrees)."""
    hsv = _rgb_to_hsv(image)
    hsv = torch.stack([(hsv[:, 0] + shift) % 1.0, hsv[:, 1], hsv[:, 2]], 1)
    return _hsv_to_rgb(hsv)


def color_jitter(
    image: Tensor, brightness: float, contrast: float, saturation: float, hue: float, order: Sequence[int]
) -> Tensor:
    """Deterministic colour jitter of (N,3,H,W) RGB in [0,1] with given factors (PIL semantics).

    Same operations as kornia's ``ColorJitter`` (the reference's), each clamped to [0, 1]:
    brightness ``x * b``; contrast ``(x - m) * c + m`` with m the mean luma of each image;
    saturation ``(x - y) * s + y`` with y the pixel's luma; hue rotation by ``hue`` turns in HSV.

    Args:
        image: (N,3,H,W) float in [0,1].
        brightness: multiplicative factor (1 = unchanged).
        contrast: factor (1 = unchanged).
        saturation: factor (1 = unchanged).
        hue: shift in turns (0 = unchanged).
        order: permutation of (0, 1, 2, 3) = (brightness, contrast, saturation, hue).

    Returns:
        (N,3,H,W) float in [0,1].
    """
    for step in order:
        if step == 0:
            image = (image * brightness).clamp(0, 1)
        elif step == 1:
            mean = _grey(image).mean((-2, -1), keepdim=True)
            image = (image * contrast + mean * (1 - contrast)).clamp(0, 1)
        elif step == 2:
            grey = _grey(image)
            image = (image * saturation + grey * (1 - saturation)).clamp(0, 1)
        elif step == 3:
            image = adjust_hue(image, hue).clamp(0, 1)
        else:
            raise ValueError(f"color_jitter: order must be a permutation of 0..3, got {list(order)}")
    return image


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel size about 10% of ``size``: the DACS/reference formula, float quirks kept.

    ``floor(ceil(0.1 * size) - 0.5 + ceil(0.1 * size) % 2)``, i.e. ``c`` if ``c = ceil(0.1 * size)``
    is odd, else ``c - 1`` (512 -> 51, 128 -> 13, 30 -> 3 because 0.1 * 30 = 3.0000000000000004).
    """
    ceiled = math.ceil(0.1 * size)
    return math.floor(ceiled - 0.5 + ceiled % 2)


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N,C,H,W) with the reference kernel size and reflect padding.

    The kernel per axis has ``blur_kernel_size`` of that axis' length, taps at integer offsets
    from the centre, normalised to sum 1 (as kornia's ``GaussianBlur2d``, border ``reflect``).
    """
    _, channels, height, width = image.shape
    out = image
    for axis, size in ((2, height), (3, width)):
        k = blur_kernel_size(size)
        offsets = torch.arange(k, device=image.device, dtype=image.dtype) - k // 2
        taps = torch.exp(-(offsets**2) / (2 * sigma**2))
        taps = taps / taps.sum()
        shape = (1, 1, k, 1) if axis == 2 else (1, 1, 1, k)
        pad = (0, 0, k // 2, k // 2) if axis == 2 else (k // 2, k // 2, 0, 0)
        if k > 1:
            out = F.conv2d(
                F.pad(out, pad, mode="reflect"),
                taps.reshape(shape).expand(channels, -1, -1, -1),
                groups=channels,
            )
    return out


def strong_augment(
    images: Tensor,
    generator: torch.Generator,
    strength: float = 0.2,
    jitter_threshold: float = 0.2,
    blur_threshold: float = 0.5,
) -> Tensor:
    """DACS strong augmentation of mixed images: colour jitter, then Gaussian blur (SPEC section 4).

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


# --------------------------------------------------------------------------------------------------
# DPLG (SPEC section 4, step 4)
# --------------------------------------------------------------------------------------------------
def draw_dplg_t0(base: int, generator: torch.Generator) -> int:
    """DPLG start timestep t0, uniform from {base, base + 1} (reference: ``randint(a, a + 1)``)."""
    return base + int(torch.randint(0, 2, (1,), generator=generator, device=generator.device).item())


def dplg_timestep(iteration: int, t0: int, t_end: int) -> int:
    """Teacher timestep under DPLG: ``int(t0 * (1 - iteration / t_end))`` up to ``t_end``, then 0.

    ``int`` truncates (50 * 0.5 = 25, 51 * 0.5 = 25.5 -> 25). At ``iteration == t_end`` both
    branches give 0, so ``<=`` and ``<`` agree. The student always uses t = 0.

    Args:
        iteration: 0-based optimiser step index.
        t0: start timestep from ``draw_dplg_t0``.
        t_end: the step at which the noise reaches 0 (8000; depth: 5000), > 0.
    """
    if t_end <= 0:
        raise ValueError(f"dplg_timestep: t_end must be > 0, got {t_end}")
    if iteration > t_end:
        return 0
    return int(t0 * (1 - iteration / t_end))


# --------------------------------------------------------------------------------------------------
# Pseudo-labels (SPEC section 4, step 4)
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def pixel_accuracy(prediction: Tensor, label: Tensor) -> Tensor:
    """Share of the labelled pixels (label != 255) where ``prediction == label``; NaN with none.

    Args:
        prediction: (B,H,W) int64 class ids.
        label: (B,H,W) int64 class ids or 255.

    Returns:
        Scalar float32 in [0, 1].
    """
    valid = label != IGNORE_INDEX
    return ((prediction == label) & valid).sum().float() / valid.sum().float()


@torch.no_grad()
def confidence_mask(logits: Tensor, threshold: float = 0.968) -> Tensor:
    """The confident pixels: maximum softmax probability ``>= threshold``; q is their share per sample.

    Args:
        logits: (B,C,H,W) float, unnormalised teacher logits.
        threshold: confidence threshold in [0, 1].

    Returns:
        (B,H,W) bool.
    """
    return torch.softmax(logits.float(), dim=1).amax(dim=1) >= threshold


@torch.no_grad()
def pseudo_label(logits: Tensor, threshold: float = 0.968) -> tuple[Tensor, Tensor]:
    """Teacher pseudo-labels and their confidence weight q, one per sample.

    q is the fraction of ALL pixels of the sample whose maximum softmax probability is
    ``>= threshold`` (the reference computes it per GPU with one image per GPU; SPEC section 5).

    Args:
        logits: (B,C,H,W) float, unnormalised teacher logits at label resolution.
        threshold: confidence threshold in [0, 1].

    Returns:
        label: (B,H,W) int64 argmax class (never ``IGNORE_INDEX``).
        weight: (B,) float32 q in [0, 1].
    """
    label = logits.argmax(dim=1)
    weight = confidence_mask(logits, threshold).float().mean(dim=(1, 2))
    return label, weight


def mixed_weight(mask: Tensor, q: Tensor) -> Tensor:
    """Per-pixel weight of the mixed label: 1 on pasted source pixels, q of the sample elsewhere.

    Args:
        mask: (B,1,H,W) float in {0, 1}, the ClassMix mask.
        q: (B,) float, pseudo-label weights from ``pseudo_label``.

    Returns:
        (B,H,W) float.
    """
    if q.shape != (mask.shape[0],):
        raise ValueError(f"mixed_weight: q must be ({mask.shape[0]},), got {tuple(q.shape)}")
    q_map = q.to(mask.dtype)[:, None, None].expand(-1, *mask.shape[2:])
    return torch.where(mask[:, 0] > 0.5, torch.ones_like(q_map), q_map)


# --------------------------------------------------------------------------------------------------
# Palette painting for LPLR (SPEC section 4, step 2)
# --------------------------------------------------------------------------------------------------
def paint_palette(label: Tensor, palette: Tensor) -> Tensor:
    """Paint train ids with the task palette and scale to [-1, 1]; ignore (and any id >= C) is black.

    Args:
        label: (B,H,W) int64, train ids or ``IGNORE_INDEX``.
        palette: (C,3) uint8 RGB (``Task.palette``; a numpy array is accepted too).

    Returns:
        (B,3,H,W) float32 in [-1, 1]: ``colour / 255 * 2 - 1``; black (-1, -1, -1) for ignore.
    """
    palette = torch.as_tensor(palette, device=label.device)
    if palette.dim() != 2 or palette.shape[1] != 3 or palette.shape[0] > IGNORE_INDEX:
        raise ValueError(f"paint_palette: palette must be (C,3) with C < 255, got {tuple(palette.shape)}")
    # A 256-entry table, black past the palette, as the reference's zero-padded PIL palette.
    table = torch.full((256, 3), -1.0, device=label.device)
    table[: palette.shape[0]] = palette.float() / 255 * 2 - 1
    return table[label.long().clamp(0, 255)].permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------------
# Losses (SPEC section 4, steps 2 and 5)
# --------------------------------------------------------------------------------------------------
def segmentation_loss(logits: Tensor, label: Tensor, pixel_weight: Tensor | None = None) -> Tensor:
    """Pixel-weighted cross-entropy, mean over ALL pixels (ignored ones count 0 in the numerator).

    Args:
        logits: (B,C,H,W) float, unnormalised, at the label's resolution.
        label: (B,H,W) int64, train ids or ``IGNORE_INDEX``.
        pixel_weight: optional (B,H,W) float weights (``mixed_weight`` for the target term).

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: when the logits are not at the label's resolution (resize them first; the head
            outputs full resolution) or the weight's shape differs from the label's.
    """
    if logits.dim() != 4 or label.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"segmentation_loss: logits {tuple(logits.shape)} must be (B,C,H,W) at the label's "
            f"resolution {tuple(label.shape)}"
        )
    loss = F.cross_entropy(logits.float(), label, ignore_index=IGNORE_INDEX, reduction="none")
    if pixel_weight is not None:
        if pixel_weight.shape != label.shape:
            raise ValueError(
                f"segmentation_loss: pixel_weight {tuple(pixel_weight.shape)} must match label "
                f"{tuple(label.shape)}"
            )
        loss = loss * pixel_weight.float()
    return loss.mean()


def lplr_loss(
    pred_latent: Tensor, target_latent: Tensor, label: Tensor, weight: Tensor | None = None
) -> Tensor:
    """LPLR: masked L1 between the UNet output latent and the encoded painted label.

    ``sum(|pred - target| * mask) / (B * 4 * h * w)`` with mask = (label != 255), times ``weight``
    of the sample on every pixel, resized NEAREST (``F.interpolate`` default, top-left sample of
    each cell) to (h, w) and repeated over the latent channels. The denominator is the element
    count, not the mask sum.

    Args:
        pred_latent: (B,4,h,w) float, the student's UNet output (carries the gradient).
        target_latent: (B,4,h,w) float, VAE encoding of ``paint_palette(label)``; detached here
            because it is a label, never a path for gradients.
        label: (B,H,W) int64, the label that was painted (source label or mixed pseudo-label).
        weight: optional (B,) float per-sample weight (q for the target term).

    Returns:
        Scalar float32 loss.
    """
    if pred_latent.shape != target_latent.shape or pred_latent.dim() != 4:
        raise ValueError(
            f"lplr_loss: pred {tuple(pred_latent.shape)} and target {tuple(target_latent.shape)} "
            "must be the same (B,4,h,w)"
        )
    if label.dim() != 3 or label.shape[0] != pred_latent.shape[0]:
        raise ValueError(f"lplr_loss: label must be (B,H,W), got {tuple(label.shape)}")
    mask = (label != IGNORE_INDEX).float()[:, None]
    if weight is not None:
        if weight.shape != (label.shape[0],):
            raise ValueError(f"lplr_loss: weight must be ({label.shape[0]},), got {tuple(weight.shape)}")
        mask = mask * weight.float()[:, None, None, None]
    mask = F.interpolate(mask, size=pred_latent.shape[-2:], mode="nearest")
    distance = (pred_latent.float() - target_latent.detach().float()).abs()
    return (distance * mask).sum() / distance.numel()


# --------------------------------------------------------------------------------------------------
# Learning-rate factor (SPEC section 5)
# --------------------------------------------------------------------------------------------------
def lr_factor(
    iteration: int,
    max_iterations: int,
    warmup_length: float = LR_WARMUP_LENGTH,
    warmup_factor: float = LR_WARMUP_FACTOR,
    milestones: Sequence[float] = LR_MILESTONES,
    values: Sequence[float] = LR_VALUES,
) -> float:
    """LR multiplier for 0-based ``iteration`` of ``max_iterations`` (N), as the reference computes it.

    With p = iteration / N and M = 2N - 1 (the reference's ``num_updates``):
    warm-up while ``p + 1e-6 <= warmup_length``: ``warmup_factor + (1 - warmup_factor) * p / warmup_length``
    (linear towards the first value); afterwards ``values[k]`` with k the number of milestones
    ``int(f * M)`` that are <= ``int((p + 1e-6) * M)``. For N = 10,000: warm-up i = 0..27, 0.1 from
    i = 8,889 (milestone 17,776), 0.01 from i = 9,630 (milestone 19,258). The same fractions apply
    to any N. Derivation in docs/REFERENCE_NOTES.md.

    Args:
        iteration: 0-based step, 0 <= iteration <= max_iterations.
        max_iterations: total optimiser steps N > 0.
        warmup_length: warm-up as a fraction of the run.
        warmup_factor: multiplier at iteration 0, relative to ``values[0]``.
        milestones: increasing fractions of ``2N - 1`` updates where the value steps down.
        values: the multipliers, one more than milestones.
    """
    if max_iterations <= 0 or not 0 <= iteration <= max_iterations:
        raise ValueError(
            f"lr_factor: need 0 <= iteration <= max_iterations, got {iteration}/{max_iterations}"
        )
    if len(values) != len(milestones) + 1:
        raise ValueError(f"lr_factor: need len(values) == len(milestones) + 1, got {values}, {milestones}")
    num_updates = 2 * max_iterations - 1
    steps = [int(fraction * num_updates) for fraction in milestones]

    def multistep(where: float) -> float:
        return values[bisect.bisect_right(steps, int((where + _WHERE_EPSILON) * num_updates))]

    where = iteration / max_iterations
    if where + _WHERE_EPSILON <= warmup_length:
        start, end = warmup_factor * multistep(0.0), multistep(warmup_length)
        progress = where / warmup_length
        return end * progress + start * (1 - progress)
    return multistep(where)


# --------------------------------------------------------------------------------------------------
# mIoU (SPEC section 6)
# --------------------------------------------------------------------------------------------------
def miou_from_confusion(confusion: Tensor) -> tuple[float, Tensor]:
    """mIoU by the reference's rule from a confusion matrix with ground truth in rows.

    IoU = TP / (TP + FP + FN). mIoU = sum of IoU over classes present in the labels, divided by
    the number of classes present in the labels OR the predictions: a class predicted but absent
    from the labels counts 0; a class absent from both is skipped. (torchmetrics'
    ``MulticlassConfusionMatrix(ignore_index=255)`` has this layout: rows = target.)

    Args:
        confusion: (C,C) integer counts, ``confusion[gt, pred]``, ignored pixels excluded.

    Returns:
        miou: float in [0, 1], nan when no class occurs at all.
        iou: (C,) float64 per class; 0 for a class only predicted, nan for a class absent from both.
    """
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"miou_from_confusion: confusion must be (C,C), got {tuple(confusion.shape)}")
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    in_labels = confusion.sum(dim=1)
    in_predictions = confusion.sum(dim=0)
    union = in_labels + in_predictions - true_positive
    occurs = union > 0
    iou = torch.where(occurs, true_positive / union.clamp(min=1), torch.full_like(union, math.nan))
    if not occurs.any():
        return math.nan, iou
    miou = iou[in_labels > 0].sum() / occurs.sum()
    return float(miou), iou

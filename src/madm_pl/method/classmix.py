"""ClassMix: half of the source classes pasted onto the target (METHOD.md §4.3)."""

from __future__ import annotations

import torch
from torch import Tensor

from madm_pl.labels import IGNORE_INDEX


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
        include_ignore: draw 255 like a class (the reference, METHOD.md §4.3) or leave it out.

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

"""Teacher pseudo-labels, their confidence weight q and the mixed label's weight (METHOD.md §4.4)."""

from __future__ import annotations

import torch
from torch import Tensor


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
    ``>= threshold`` (the reference computes it per GPU with one image per GPU; METHOD.md §5).

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

"""Teacher pseudo-labels, their confidence weight q and the mixed label's weight (METHOD.md §4.4).

``pseudo_labels`` is the one rule: the training step and the validation pictures both call it (through
``MADMModule.pseudo_labels``), so the confident pixels shown are exactly those counted in q.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PseudoLabels:
    """The teacher's pseudo-labels of a batch and what the confidence threshold keeps.

    Attributes:
        label: (B,H,W) int64 argmax class (never ``IGNORE_INDEX``).
        confident: (B,H,W) bool, the pixels whose maximum softmax probability is ``>= threshold``.
    """

    label: Tensor
    confident: Tensor

    @property
    def weight(self) -> Tensor:
        """(B,) float32 q in [0, 1]: the share of ALL pixels of a sample that are confident."""
        return self.confident.float().mean(dim=(1, 2))


@torch.no_grad()
def pseudo_labels(logits: Tensor, threshold: float) -> PseudoLabels:
    """Teacher pseudo-labels and their confident pixels, from one softmax.

    q (``PseudoLabels.weight``) is the fraction of ALL pixels of the sample whose maximum softmax
    probability is ``>= threshold`` (the reference computes it per GPU with one image per GPU; METHOD.md §5).

    Args:
        logits: (B,C,H,W) float, unnormalised teacher logits at label resolution.
        threshold: confidence threshold in [0, 1] (inclusive).

    Returns:
        ``PseudoLabels``: the argmax of the logits (ties to the first class) and the confident pixels.
    """
    confident = torch.softmax(logits.float(), dim=1).amax(dim=1) >= threshold
    return PseudoLabels(label=logits.argmax(dim=1), confident=confident)


def pseudo_label(logits: Tensor, threshold: float = 0.968) -> tuple[Tensor, Tensor]:
    """``pseudo_labels`` as the pair (label, q), the reference's two outputs.

    Args:
        logits: (B,C,H,W) float, unnormalised teacher logits at label resolution.
        threshold: confidence threshold in [0, 1].

    Returns:
        label: (B,H,W) int64 argmax class (never ``IGNORE_INDEX``).
        weight: (B,) float32 q in [0, 1].
    """
    labels = pseudo_labels(logits, threshold)
    return labels.label, labels.weight


def mixed_weight(mask: Tensor, q: Tensor) -> Tensor:
    """Per-pixel weight of the mixed label: 1 on pasted source pixels, q of the sample elsewhere.

    Args:
        mask: (B,1,H,W) float in {0, 1}, the ClassMix mask.
        q: (B,) float, pseudo-label weights (``PseudoLabels.weight``).

    Returns:
        (B,H,W) float.
    """
    if q.shape != (mask.shape[0],):
        raise ValueError(f"mixed_weight: q must be ({mask.shape[0]},), got {tuple(q.shape)}")
    q_map = q.to(mask.dtype)[:, None, None].expand(-1, *mask.shape[2:])
    return torch.where(mask[:, 0] > 0.5, torch.ones_like(q_map), q_map)

"""The segmentation loss: pixel-weighted cross-entropy (METHOD.md §4.2 and §4.5)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from madm_pl.labels import IGNORE_INDEX


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

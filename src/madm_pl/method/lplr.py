"""LPLR: latent palette label regression onto the painted label's latent (METHOD.md §4.2)."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from madm_pl.labels import IGNORE_INDEX, colorize


def painted_label(label: Tensor, palette: Tensor | np.ndarray) -> Tensor:
    """The label painted with the task palette, in the VAE's input range: ``colorize`` scaled to [-1, 1].

    Args:
        label: (B,H,W) int64, train ids or ``IGNORE_INDEX``.
        palette: (C,3) uint8 RGB, C <= 255 (``Task.palette``, numpy, or the module's palette buffer).

    Returns:
        (B,3,H,W) float32 in [-1, 1] on ``label.device``: ``colour / 255 * 2 - 1``; black (-1, -1, -1)
        for ignore and any id past the palette, as the reference's zero-padded PIL palette.
    """
    # colorize returns a channels-last view; the VAE gets plain (B,3,H,W) memory, as before
    return colorize(label, palette).contiguous().float() / 255 * 2 - 1


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
        target_latent: (B,4,h,w) float, VAE encoding of ``painted_label(label)``; detached here
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

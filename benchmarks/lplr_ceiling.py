"""How much could LPLR's full-resolution level add? Its ceiling against a perfect coarse class map (issue
25, probe a).

LPLR makes the UNet output a latent that the frozen VAE decodes into the label painted with the palette;
with LPLR on, the head reads that decode as its full-resolution level. Its best possible reading is the
exact painted label sent through the VAE (encode, then decode) and read back by nearest palette colour.
Against it, a perfect class map at the head's coarser levels (stride 8, the finest UNet tap; stride 4,
the VAE encoder level the head uses without LPLR), upsampled bilinearly as the head upsamples its logits:

- ``stride s, class fractions``: per s x s cell the share of each class (ignored pixels left out), the best
  a classifier at stride s can output, upsampled bilinearly (align_corners=False), argmax;
- ``stride s, nearest label``: the label sampled at stride s (nearest), one-hot, upsampled the same way;
- ``VAE round trip``: the painted label encoded and decoded by the prior's VAE, nearest palette colour
  (black, the colour of ignore, counts as a miss).

Scored on the task's target test labels at each ``--sizes`` (the demo tests at 64x128; the synthetic
world is rendered at 128x256) with the project's mIoU rule. Every step is deterministic (no random
draw), so there is no spread over seeds to report.

    python -m benchmarks.lplr_ceiling --sizes 64x128 128x256
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.adapt.runs import demo_config, run_options


def parse_size(text: str) -> tuple[int, int]:
    """``"64x128"`` -> (64, 128)."""
    height, _, width = text.partition("x")
    return int(height), int(width)


def test_labels(task: str, size: tuple[int, int], data_root: str) -> Tensor:
    """The target test labels at ``size`` (the data pipeline's nearest resize): (N,H,W) int64, 255 ignored."""
    from madm_pl.cli import instantiate

    setup = {"backbone": "priors/tiny", "data": data_root, "overrides": {"data.test_size": list(size)}}
    data = instantiate(demo_config(task, run_options(task, "source-only", 0, setup)).data)
    data.setup("validate")
    return torch.stack([data.val_dataset[i]["label"] for i in range(len(data.val_dataset))])


def scores(prediction: Tensor, label: Tensor, num_classes: int) -> tuple[float, list[float]]:
    """mIoU and per-class IoU (%) by the project's rule (METHOD.md §6); a prediction of 255 (no class) is a
    miss of the labelled class and nobody's false positive.

    Args:
        prediction: (N,H,W) int64 in [0, C) or 255; label: (N,H,W) int64 in [0, C) or 255 (ignored).
    """
    from madm_pl.labels import IGNORE_INDEX

    valid = label != IGNORE_INDEX
    predicted = torch.where(prediction == IGNORE_INDEX, num_classes, prediction)[valid]
    confusion = torch.bincount(
        label[valid] * (num_classes + 1) + predicted, minlength=num_classes * (num_classes + 1)
    )
    confusion = confusion.reshape(num_classes, num_classes + 1).double()
    true_positive = confusion.diagonal()
    in_labels = confusion.sum(1)
    in_predictions = confusion[:, :num_classes].sum(0)
    union = in_labels + in_predictions - true_positive
    present = union > 0
    iou = torch.where(present, true_positive / union.clamp(min=1), torch.nan)
    return 100 * iou[present].mean().item(), (100 * iou).tolist()


def coarse_map(label: Tensor, stride: int, num_classes: int, kind: str) -> Tensor:
    """A perfect class map at ``stride``, upsampled bilinearly (align_corners=False) and argmaxed.

    Args:
        label: (N,H,W) int64, 255 ignored; H and W multiples of ``stride``.
        kind: ``"fractions"`` (per-cell class shares) or ``"nearest"`` (the label sampled at the stride).

    Returns:
        (N,H,W) int64 class ids.
    """
    from madm_pl.labels import IGNORE_INDEX

    valid = label != IGNORE_INDEX
    one_hot = F.one_hot(torch.where(valid, label, 0), num_classes).permute(0, 3, 1, 2).float()
    one_hot = one_hot * valid[:, None]
    if kind == "fractions":
        coarse = F.avg_pool2d(one_hot, stride)
    else:
        coarse = F.interpolate(one_hot, scale_factor=1 / stride, mode="nearest")
    return F.interpolate(coarse, size=label.shape[-2:], mode="bilinear", align_corners=False).argmax(1)


@torch.no_grad()
def vae_round_trip(label: Tensor, palette: Tensor, backbone: str, batch: int = 20) -> Tensor:
    """The painted label encoded and decoded by ``backbone``'s VAE, read back by nearest palette colour.

    Returns:
        (N,H,W) int64 class ids, 255 where black (ignore's colour) is nearest.
    """
    from madm_pl.method.lplr import painted_label
    from madm_pl.models import DiffusionBackbone
    from madm_pl.prior.evaluate import nearest_class

    model = DiffusionBackbone(backbone).eval()
    out = []
    for part in label.split(batch):
        decoded = model.decode(model.encode(painted_label(part, palette)))
        out.append(nearest_class(((decoded.float() + 1) / 2).clamp(0, 1), palette))
    return torch.cat(out)


def main(argv: Sequence[str] | None = None) -> dict:
    from madm_pl.labels import get_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rgb2infrared")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(64, 128), (128, 256)])
    parser.add_argument("--strides", nargs="+", type=int, default=[8, 4])
    parser.add_argument("--backbone", default="priors/tiny")
    parser.add_argument("--data", default="data/synthetic")
    args = parser.parse_args(argv)
    task = get_task(args.task)
    palette = torch.from_numpy(task.palette)
    results = {}
    for size in args.sizes:
        label = test_labels(args.task, size, args.data)
        rows = {}
        for stride in args.strides:
            for kind in ("fractions", "nearest"):
                rows[f"stride {stride}, class {kind}"] = scores(
                    coarse_map(label, stride, task.num_classes, kind), label, task.num_classes
                )
        rows["VAE round trip of the painted label"] = scores(
            vae_round_trip(label, palette, args.backbone), label, task.num_classes
        )
        results[size] = rows
        print(f"\n{args.task}, {len(label)} target test labels at {size[0]}x{size[1]}:\n")
        print("| map | mIoU | " + " | ".join(task.classes) + " |")
        print("| --- | --- |" + " --- |" * len(task.classes))
        for name, (miou, iou) in rows.items():
            print(f"| {name} | {miou:.1f} | " + " | ".join(f"{v:.0f}" for v in iou) + " |", flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

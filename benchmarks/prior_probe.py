"""Do a prior's UNet features carry across modalities? A linear probe trained on RGB, read on the others.

For each backbone, the UNet's three feature taps (t = 0, the empty prompt, upsampled to the finest tap
and concatenated) are computed for held-out prior-split scenes rendered in all four modalities. A linear
classifier per position is trained on the RGB features of one set of scenes (9-class labels of the
layout) and scored, frozen, on each modality of another set: the drop from RGB to a modality is what a
segmenter trained on RGB would lose if the UNet were frozen. For scale, the same probe trained on that
modality itself ("same-modality"). Issue 12 compared the committed prior with cross-modally aligned ones
(BENCHMARKS.md, "The small recipe"):

    python -m benchmarks.prior_probe --backbones priors/tiny /path/to/aligned_prior --scenes 48
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from madm_pl.labels import CITYSCAPES_TO_9, IGNORE_INDEX
from madm_pl.method.metrics import miou_from_confusion
from madm_pl.models.backbone import tap_layers, tap_output
from madm_pl.models.presets import build_stack
from madm_pl.prior.scenes import HELDOUT_START, render_paired_pool
from madm_pl.synthetic import MODALITIES, SPLIT_PRIOR, render_scene, scene_seed_sequence

NUM_CLASSES = 9
HEIGHT, WIDTH = 64, 128


def scenes(start: int, count: int) -> tuple[Tensor, Tensor]:
    """Images (count, modalities, 3, H, W) uint8 and 9-class labels (count, H, W) of prior-split scenes."""
    images = render_paired_pool(0, count, HEIGHT, WIDTH, start=start, progress=False)
    layouts = np.stack(
        [
            render_scene(scene_seed_sequence(0, SPLIT_PRIOR, "rgb", i), HEIGHT, WIDTH).layout
            for i in range(start, start + count)
        ]
    )
    table = np.full(256, IGNORE_INDEX, dtype=np.int64)
    table[: len(CITYSCAPES_TO_9)] = np.where(CITYSCAPES_TO_9 < 0, IGNORE_INDEX, CITYSCAPES_TO_9)
    return images, torch.from_numpy(table[layouts])


@torch.no_grad()
def features(stack, images: Tensor) -> Tensor:
    """The UNet's taps at t = 0 for uint8 images (N, 3, H, W): (N, C, h, w) at the finest tap's size."""
    taps: list[Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda m, a, out: taps.append(tap_output(out)))
        for layer in tap_layers(stack.unet)
    ]
    try:
        latents = stack.vae.encode(images.float() / 127.5 - 1).latent_dist.mean
        latents = latents * stack.vae.config.scaling_factor
        timesteps = torch.zeros(len(images), dtype=torch.long)
        stack.unet(latents, timesteps, stack.uncond.expand(len(images), -1, -1))
    finally:
        for hook in hooks:
            hook.remove()
    size = max((tap.shape[-2:] for tap in taps), key=lambda s: s[0] * s[1])
    return torch.cat([F.interpolate(tap, size=size, mode="bilinear") for tap in taps], 1)


def positions(feature: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position feature rows (N*h*w, C) and their labels (nearest), ignored positions dropped."""
    small = F.interpolate(labels[:, None].float(), size=feature.shape[-2:], mode="nearest")[:, 0].long()
    rows, targets = feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1]), small.reshape(-1)
    keep = targets != IGNORE_INDEX
    return rows[keep], targets[keep]


def miou(prediction: Tensor, target: Tensor) -> float:
    """Mean IoU (%) by the project's evaluation rule (``miou_from_confusion``, METHOD.md §6): a class
    only predicted counts 0, a class absent from both is skipped.

    Args:
        prediction: (N,) int64 class ids.
        target: (N,) int64 class ids (ignored positions already dropped).
    """
    confusion = torch.bincount(target * NUM_CLASSES + prediction, minlength=NUM_CLASSES**2)
    return 100 * miou_from_confusion(confusion.reshape(NUM_CLASSES, NUM_CLASSES))[0]


def fit_probe(rows: Tensor, targets: Tensor, steps: int = 300) -> Callable[[Tensor], Tensor]:
    """A linear classifier on standardised rows (Adam, full batch); returns rows -> predicted class."""
    mean, std = rows.mean(0), rows.std(0) + 1e-6
    linear = torch.nn.Linear(rows.shape[1], NUM_CLASSES)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(linear((rows - mean) / std), targets).backward()
        optimizer.step()
    return lambda x: linear((x - mean) / std).argmax(1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["priors/tiny"])
    parser.add_argument("--scenes", type=int, default=48, help="held-out scenes to train and to test on")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    train_images, train_labels = scenes(HELDOUT_START, args.scenes)
    test_images, test_labels = scenes(HELDOUT_START + 1000, args.scenes)
    for source in args.backbones:
        stack = build_stack(source)
        stack.unet.eval()
        stack.vae.eval()
        train = {m: features(stack, train_images[:, i]) for i, m in enumerate(MODALITIES)}
        test = {m: features(stack, test_images[:, i]) for i, m in enumerate(MODALITIES)}
        rgb_probe = fit_probe(*positions(train["rgb"], train_labels))
        cells = []
        for modality in MODALITIES:
            rows, targets = positions(test[modality], test_labels)
            own = miou(rgb_probe(rows), targets)
            if modality == "rgb":
                cells.append(f"rgb {own:.1f}")
            else:
                same = fit_probe(*positions(train[modality], train_labels))
                cells.append(f"{modality} {own:.1f} (same-modality {miou(same(rows), targets):.1f})")
        print(f"{source}: RGB-trained probe mIoU on " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

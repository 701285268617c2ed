"""Measure a diffusion prior against the random-weight ``tiny`` preset (``python -m madm_pl.prior.evaluate``).

Everything is measured on held-out prior scenes (``SPLIT_PRIOR`` indices from
:data:`~madm_pl.prior.scenes.HELDOUT_START` on, never in a training pool), rendered at the pool size:

- VAE reconstruction PSNR (posterior mean, decoded, clipped; images in [0,1]) per modality and on
  palette-painted layouts; PSNR of the mean squared error over the set.
- Palette accuracy: paint a layout with a task palette (ignore -> black), encode, decode, map every pixel to
  the nearest colour of the palette (or black): the share of the non-ignored pixels back to their class.
- UNet denoising loss: epsilon MSE at t = 0, 50, 500 on held-out latents (modality images and palette
  paintings, encoded by the evaluated prior's VAE, so both UNets see the same latents), with one fixed noise
  draw, conditioned on the stack's empty-prompt embedding.
- ``DiffusionBackbone`` forward times (no gradient, and forward + backward) at 128x128, batch 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torch import Tensor

from madm_pl.labels import remap
from madm_pl.models.backbone import DiffusionBackbone
from madm_pl.models.presets import DiffusionStack, build_stack
from madm_pl.prior.scenes import (
    HELDOUT_START,
    PALETTES,
    encode_mean,
    paint_layout,
    palette_tables,
    render_pool,
)
from madm_pl.synthetic import MODALITIES

#: Timesteps at which the denoising loss is reported.
TIMESTEPS = (0, 50, 500)


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: Tensor, batch_size: int = 16) -> Tensor:
    """Encode (posterior mean) and decode uint8 images, as the backbone does.

    Args:
        vae: the autoencoder.
        images: (N,3,H,W) uint8.

    Returns:
        (N,3,H,W) float32 in [0,1].
    """
    decoded = []
    for start in range(0, len(images), batch_size):
        latent = encode_mean(vae, images[start : start + batch_size])
        decoded.append(vae.decode(latent).sample.clamp(-1.0, 1.0))
    return (torch.cat(decoded) + 1.0) / 2.0


def psnr(reconstruction: Tensor, images: Tensor) -> float:
    """PSNR in dB of the mean squared error over the whole set.

    Args:
        reconstruction: (N,3,H,W) float in [0,1].
        images: (N,3,H,W) uint8.
    """
    mse = (reconstruction - images.float() / 255.0).pow(2).mean().item()
    return 10.0 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


def nearest_class(decoded: Tensor, palette: Tensor) -> Tensor:
    """Map every pixel to the nearest palette colour; black (ignore's colour) maps to 255.

    Args:
        decoded: (N,3,H,W) float in [0,1].
        palette: (C,3) uint8.

    Returns:
        (N,H,W) int64 class ids, 255 where black is nearest.
    """
    colours = torch.cat([palette.float(), torch.zeros(1, 3)]) / 255.0  # (C+1,3), black last
    distance = (decoded.unsqueeze(1) - colours[None, :, :, None, None]).pow(2).sum(dim=2)
    label = distance.argmin(dim=1)
    return torch.where(label == len(palette), 255, label)


def palette_accuracy(vae: AutoencoderKL, layouts: Tensor, palette_index: int) -> tuple[float, float]:
    """Paint layouts with a task palette, reconstruct them, read the classes back by nearest colour.

    Args:
        vae: the autoencoder.
        layouts: (N,H,W) uint8 world ids (Cityscapes 19, 255 void).
        palette_index: 0 for the 11-class palette, 1 for the 9-class one (:data:`PALETTES`).

    Returns:
        (accuracy over non-ignored pixels in [0,1], reconstruction PSNR of the paintings in dB).
    """
    world_to_task, colours = palette_tables()[palette_index]
    painting = paint_layout(layouts, world_to_task, colours)
    label = remap(layouts, world_to_task)
    decoded = reconstruct(vae, painting)
    palette = torch.from_numpy(colours)
    valid = label != 255
    correct = (nearest_class(decoded, palette) == label) & valid
    return correct.sum().item() / max(valid.sum().item(), 1), psnr(decoded, painting)


@torch.no_grad()
def denoising_losses(stack: DiffusionStack, latents: Tensor, seed: int = 0) -> dict[int, float]:
    """Epsilon MSE of the stack's UNet at :data:`TIMESTEPS`, with one fixed noise draw.

    Args:
        stack: supplies the UNet, the schedule and ``uncond``.
        latents: (N,4,h,w) float, SD's latent scale; h, w multiples of 8.
        seed: seed of the noise.

    Returns:
        t -> mean squared error between the predicted and the true noise.
    """
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    stack.unet.eval()
    losses = {}
    for timestep in TIMESTEPS:
        total = 0.0
        for start in range(0, len(latents), 16):
            clean, eps = latents[start : start + 16], noise[start : start + 16]
            timesteps = torch.full((len(clean),), timestep, dtype=torch.long)
            noisy = stack.scheduler.add_noise(clean, eps, timesteps)
            context = stack.uncond.expand(len(clean), -1, -1)
            prediction = stack.unet(noisy, timesteps, context).sample
            total += (prediction - eps).pow(2).sum().item()
        losses[timestep] = total / latents.numel()
    return losses


def backbone_times(source: str, repeats: int = 5, size: int = 128) -> dict[str, float]:
    """Median ``DiffusionBackbone`` times at ``size`` x ``size``, batch 2, t = 0, on CPU.

    Returns:
        ``forward_ms`` (no gradient) and ``forward_backward_ms`` (gradient of the taps and the latent).
    """
    backbone = DiffusionBackbone(source)
    image = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cond, time_offset = backbone.uncond, torch.zeros(1, backbone.time_embed_dim)
    times: dict[str, list[float]] = {"forward_ms": [], "forward_backward_ms": []}
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        with torch.no_grad():
            backbone(image, 0, cond, time_offset)
        forward = time.perf_counter() - start
        start = time.perf_counter()
        output = backbone(image, 0, cond, time_offset)
        (sum(feature.mean() for feature in output.features) + output.latent.mean()).backward()
        if repeat:  # the first pass warms up
            times["forward_ms"].append(1000 * forward)
            times["forward_backward_ms"].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def evaluate(
    prior: str, count: int = 16, seed: int = 0, height: int = 128, width: int = 256, timing: bool = True
) -> dict:
    """All measurements of a prior and of the random ``tiny`` preset on the same held-out scenes.

    Args:
        prior: the prior's folder (or any ``build_stack`` source).
        count: held-out scenes per modality (their layouts, ``4 x count``, give the palette paintings).
        seed: the world seed the prior was trained with (its held-out scenes are ``SPLIT_PRIOR`` indices
            from :data:`HELDOUT_START`).
        height, width: render size.
        timing: also time ``DiffusionBackbone`` forwards.

    Returns:
        ``{"prior": {...}, "random": {...}, "held_out": {...}}``; per stack: ``psnr`` (modality -> dB and
        ``palette-11``, ``palette-9``), ``palette_accuracy`` (``11-class``, ``9-class``), ``denoising_mse``
        (t -> MSE) and, with ``timing``, ``backbone``.
    """
    images, layouts = render_pool(seed, count, height, width, start=HELDOUT_START, progress=False)
    stacks = {"prior": build_stack(prior), "random": build_stack("tiny")}
    # Latents of the evaluated prior's VAE for both UNets: the comparison is about the UNet alone.
    prior_vae = stacks["prior"].vae.eval()
    paintings = torch.cat(
        [paint_layout(layouts, *tables) for tables in palette_tables()]  # both palettes on every layout
    )
    latents = encode_mean(prior_vae, torch.cat([*images.values(), paintings]))
    latents = latents * prior_vae.config.scaling_factor
    results: dict = {
        "held_out": {
            "split_code": 3,
            "scene_indices": [HELDOUT_START, HELDOUT_START + count],
            "size": [height, width],
            "images_per_modality": count,
            "layouts": len(layouts),
            "latent_std": latents.std().item(),
        }
    }
    for name, stack in stacks.items():
        vae = stack.vae.eval()
        record: dict = {"psnr": {}, "palette_accuracy": {}}
        for modality in MODALITIES:
            record["psnr"][modality] = psnr(reconstruct(vae, images[modality]), images[modality])
        for index, (palette_name, _, _) in enumerate(PALETTES):
            accuracy, painting_psnr = palette_accuracy(vae, layouts, index)
            record["palette_accuracy"][palette_name] = accuracy
            record["psnr"][f"palette-{palette_name.split('-')[0]}"] = painting_psnr
        record["denoising_mse"] = denoising_losses(stack, latents, seed)
        if timing:
            record["backbone"] = backbone_times(prior if name == "prior" else "tiny")
        results[name] = record
    return results


def format_table(results: dict) -> str:
    """The results as a markdown table (prior vs random-weight tiny preset)."""
    rows = ["| measure | prior | random tiny |", "| --- | --- | --- |"]
    prior, random = results["prior"], results["random"]
    for key in prior["psnr"]:
        rows.append(f"| VAE PSNR {key} (dB) | {prior['psnr'][key]:.2f} | {random['psnr'][key]:.2f} |")
    for key in prior["palette_accuracy"]:
        rows.append(
            f"| palette accuracy {key} | {100 * prior['palette_accuracy'][key]:.2f} % | "
            f"{100 * random['palette_accuracy'][key]:.2f} % |"
        )
    for key in prior["denoising_mse"]:
        rows.append(
            f"| UNet epsilon MSE t={key} | {prior['denoising_mse'][key]:.4f} | "
            f"{random['denoising_mse'][key]:.4f} |"
        )
    for key in prior.get("backbone", {}):
        rows.append(f"| backbone {key} | {prior['backbone'][key]:.1f} | {random['backbone'][key]:.1f} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m madm_pl.prior.evaluate``: print the measurements as a markdown table (and JSON)."""
    parser = argparse.ArgumentParser(
        prog="python -m madm_pl.prior.evaluate", description="Measure a diffusion prior on held-out scenes."
    )
    parser.add_argument("--prior", default="priors/tiny", help="prior folder (default priors/tiny)")
    parser.add_argument("--count", type=int, default=16, help="held-out scenes per modality (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="world seed of the prior (default 0)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--no-timing", action="store_true", help="skip the backbone forward timings")
    args = parser.parse_args(argv)
    if not Path(args.prior).is_dir():
        parser.error(f"--prior {args.prior!r} is not a folder: run `make prior` or pass the prior's folder")
    results = evaluate(args.prior, count=args.count, seed=args.seed, timing=not args.no_timing)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"held-out: SPLIT_PRIOR scenes {results['held_out']['scene_indices']}, {args.count} per modality",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

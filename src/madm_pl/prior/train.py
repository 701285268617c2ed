"""Train the tiny diffusion prior: a VAE and UNet of the ``tiny`` preset's architecture (``make prior``).

MADM's gains come from what the pretrained Stable Diffusion stack already knows: its VAE turns palette
images into meaningful latents, its decoder turns the UNet output into a readable label image, its UNet
features carry across modalities. The ``tiny`` preset has random weights, so CPU demos and benchmarks on it
would measure noise. This module gives the tiny architecture a small pretraining of its own:

1. **Pool** (:mod:`madm_pl.prior.scenes`). Scenes of the synthetic world from their own split code
   (``scene_seed_sequence(seed, SPLIT_PRIOR, modality, index)``, index < ``pool_size``), so no layout of a
   source, target-train or target-test scene is ever seen. Each (modality, index) is its own scene,
   rendered in that modality (rgb, depth, infrared, event; single channels repeated to 3). Their layouts
   are also painted flat with the 11- and 9-class palettes of :mod:`madm_pl.labels` (ignore -> black),
   as LPLR paints labels; labels are used only as pictures, never as supervision.
2. **VAE** (``TINY_VAE_CONFIG``, or :func:`~madm_pl.models.presets.tiny_vae_config` at another stride):
   random crops, a quarter modality images and three quarters palette paintings (what LPLR encodes and
   what the decoder must give back readably), L1 plus squared-error
   reconstruction plus an L1 term on image gradients (keeps the palette edges sharp) plus a small KL term.
   Afterwards the latent scale is folded into ``quant_conv`` / ``post_quant_conv`` (an exact
   reparametrisation, :func:`fold_latent_scale`), so that latents x SD's scaling factor 0.18215 have unit
   standard deviation, as SD's do, without changing the preset's config.
3. **UNet** (``TINY_UNET_CONFIG``): an epsilon-prediction denoiser on the frozen VAE's latents (modality
   images and palette paintings, encoded once at the pool size, then random latent crops) with SD's DDPM
   schedule (1000 steps, scaled_linear 0.00085-0.012), conditioned on the tiny text encoder's empty-prompt
   embedding (the stack's ``uncond``).
4. **Save** with :func:`~madm_pl.models.presets.save_stack` in the diffusers layout (plus ``TRAINING.json``),
   written to a temporary sibling folder and renamed into place (``data.io.atomic_folder``), so an
   interrupted run leaves no half prior.

Same seed, same machine and thread count -> same weights (``torch.manual_seed`` for the initialisation, inside
``fork_rng`` so the caller's RNG is untouched; an explicit generator for every draw).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import Tensor
from tqdm import tqdm

from madm_pl.data.io import atomic_folder
from madm_pl.models.backbone import tap_layers, tap_output
from madm_pl.models.presets import (
    SD14_SCHEDULER_CONFIG,
    TINY_UNET_CONFIG,
    build_stack,
    build_tiny_text_encoder,
    build_tiny_tokenizer,
    empty_prompt_embedding,
    save_stack,
    tiny_vae_config,
)
from madm_pl.prior.scenes import (
    HELDOUT_START,
    PAIRED_START,
    PALETTES,
    crop_offsets,
    encode_mean,
    paint_pool,
    render_paired_pool,
    render_pool,
    sample_vae_batch,
)
from madm_pl.synthetic import MODALITIES, SPLIT_PRIOR

#: Positions per tap level in the alignment loss (the finest tap of a 12-pair batch has 3072).
ALIGN_MAX_TOKENS = 768


@dataclass
class PriorOptions:
    """Everything that defines a prior (written to ``TRAINING.json``).

    Attributes:
        out: the prior folder to write (diffusers layout).
        seed: seed of the pool, the initialisation and every random draw.
        pool_size: scenes per modality in the training pool (indices ``[0, pool_size)`` of ``SPLIT_PRIOR``).
        height, width: render size of the pool scenes (the demo data's 128x256).
        size: side of the square image crops the VAE trains on (multiple of 8).
        unet_size: side of the square image crops (in pixels; latents are /vae_stride) the UNet trains on
            (multiple of 64: the tiny UNet downsamples the latent 3 times).
        steps_vae, steps_unet: optimiser steps.
        batch_vae, batch_unet: crops per step.
        lr_vae, lr_unet: peak AdamW learning rates (linear warm-up, cosine decay to 10 %).
        mse_weight: weight of the squared-error term (added to L1: it pulls colours back from grey faster).
        edge_weight: weight of the L1 term on image gradients.
        kl_weight: weight of the KL term (per latent element).
        painting_fraction: share of palette paintings in each VAE batch (the rest: modality images).
        unet_pool_fraction: share of the pool (modality images and as many palette paintings) encoded
            for the UNet's training set.
        paired_pool_size: scenes of the paired pool, each rendered in all four modalities (indices from
            :data:`PAIRED_START` of ``SPLIT_PRIOR``); 0 (the default, as the committed ``priors/tiny``)
            trains the UNet without the alignment. Aligned priors (256 scenes, weights 0.1 to 1) did not
            transfer better in training (BENCHMARKS.md, "Adaptation on the synthetic world").
        paired_fraction: share of each UNet batch taken by paired crops (two modalities of one scene).
        align_weight: weight of the cross-modal contrastive loss on the UNet's feature taps.
        align_temperature: temperature of that loss (cosine similarities divided by it).
        align_max_timestep: the pairs are noised at timesteps below this (MADM reads the taps at t <= 61;
            at large t the content is drowned in noise); the single crops at every timestep.
        vae_stride: spatial stride of the VAE (8 as SD's; 4 gives the UNet a latent twice as fine per side,
            :func:`~madm_pl.models.presets.tiny_vae_config`).
        vae_from: a prior folder whose VAE is reused as it is (its latent scale already folded): the VAE
            is not trained again and only the UNet is; None trains both.
    """

    out: str = "priors/tiny"
    seed: int = 0
    pool_size: int = 256
    height: int = 128
    width: int = 256
    size: int = 64
    unet_size: int = 128
    steps_vae: int = 1200
    steps_unet: int = 300
    batch_vae: int = 16
    batch_unet: int = 32
    lr_vae: float = 2e-3
    lr_unet: float = 1e-3
    mse_weight: float = 1.0
    edge_weight: float = 0.5
    kl_weight: float = 1e-5
    painting_fraction: float = 0.75
    unet_pool_fraction: float = 0.5
    paired_pool_size: int = 0
    paired_fraction: float = 0.75
    align_weight: float = 0.1
    align_temperature: float = 0.1
    align_max_timestep: int = 300
    vae_stride: int = 8
    vae_from: str | None = None


# ------------------------------------------------------------------------------------------------ losses
def gradient_l1(reconstruction: Tensor, image: Tensor) -> Tensor:
    """Mean L1 distance between horizontal and vertical finite differences (edge sharpness).

    Args:
        reconstruction, image: (B,3,H,W) float.

    Returns:
        Scalar float.
    """
    dx = (reconstruction.diff(dim=-1) - image.diff(dim=-1)).abs().mean()
    dy = (reconstruction.diff(dim=-2) - image.diff(dim=-2)).abs().mean()
    return 0.5 * (dx + dy)


def cross_modal_contrastive_loss(
    a: Tensor,
    b: Tensor,
    temperature: float,
    max_tokens: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Contrastive loss between feature maps of paired renderings (NT-Xent, as SimCLR).

    Every position of every sample is a token, L2-normalised over the channels. Each token of ``a`` must
    pick its pair (the same sample and position of ``b``) among ALL other tokens of both maps, and each
    token of ``b`` its pair in ``a``: the cross-entropy of the cosine similarities over the temperature,
    towards the pair, averaged over the 2T tokens. Because the other tokens of the token's own modality are
    candidates too, a feature shared by all tokens of one modality (a modality offset) makes the loss
    worse: the loss asks for features that are the same across sensors, not only matched within a batch.

    Args:
        a, b: (N,C,h,w) float, the same layer's features for two modalities of the same N crops.
        temperature: > 0.
        max_tokens: use at most this many positions (drawn with ``generator``), for speed at fine levels.
        generator: for the draw of ``max_tokens`` positions.

    Returns:
        loss: scalar float; ``log(2T - 1)`` for features that carry nothing (T tokens per map), 0 for
            perfect matches.
        accuracy: scalar float in [0, 1], the share of tokens whose most similar other token is the
            paired one (a retrieval score, without gradient).
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"cross_modal_contrastive_loss: a {tuple(a.shape)} and b {tuple(b.shape)} differ")
    tokens_a = a.flatten(2).transpose(1, 2).reshape(-1, a.shape[1])
    tokens_b = b.flatten(2).transpose(1, 2).reshape(-1, b.shape[1])
    if max_tokens is not None and len(tokens_a) > max_tokens:
        keep = torch.randperm(len(tokens_a), generator=generator)[:max_tokens].to(a.device)
        tokens_a, tokens_b = tokens_a[keep], tokens_b[keep]
    count = len(tokens_a)
    tokens = torch.nn.functional.normalize(torch.cat([tokens_a, tokens_b]), dim=1)
    logits = tokens @ tokens.T / temperature
    logits = logits.masked_fill(torch.eye(2 * count, dtype=torch.bool, device=a.device), float("-inf"))
    target = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(a.device)
    loss = torch.nn.functional.cross_entropy(logits, target)
    accuracy = (logits.detach().argmax(dim=1) == target).float().mean()
    return loss, accuracy


def warmup_cosine_factor(step: int, total: int, warmup: int = 20) -> float:
    """The prior's learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay from 1 to
    0.1 at ``total`` (the adaptation's step schedule is ``losses.lr_factor``)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def fold_latent_scale(vae: AutoencoderKL, scale: float) -> None:
    """Multiply the VAE's latent by ``scale`` without changing what it reconstructs (in place).

    ``quant_conv`` gives the posterior moments (mean, log-variance): its mean rows are scaled by ``scale``
    and the log-variance bias shifted by ``2 ln scale``; ``post_quant_conv``'s input weights are divided by
    ``scale``, so ``decode(scale · z)`` equals the old ``decode(z)`` exactly (up to rounding).

    Args:
        vae: an ``AutoencoderKL`` with ``quant_conv`` and ``post_quant_conv`` (diffusers' default).
        scale: > 0.
    """
    if scale <= 0:
        raise ValueError(f"fold_latent_scale: scale must be positive, got {scale}")
    channels = vae.config.latent_channels
    vae.quant_conv.weight[:channels] *= scale
    vae.quant_conv.bias[:channels] *= scale
    vae.quant_conv.bias[channels:] += 2.0 * math.log(scale)
    vae.post_quant_conv.weight /= scale


# ------------------------------------------------------------------------------------------------ training
def train_vae(
    vae: AutoencoderKL, images: Tensor, layouts: Tensor, options: PriorOptions, generator: torch.Generator
) -> dict[str, float]:
    """Train the VAE on reconstruction (L1 + squared error + gradient L1) plus a small KL term.

    Args:
        vae: the model, trained in place.
        images: (N,3,H,W) uint8 modality images.
        layouts: (M,H,W) uint8 world ids.
        options: steps, batch, crop size, learning rate, loss weights.
        generator: every draw (crops, palettes, posterior samples).

    Returns:
        Mean losses over the last 10 % of the steps: ``l1``, ``mse``, ``edge``, ``kl``, ``total``.
    """
    vae.train()
    # fused: one kernel for all parameters; the per-tensor loop costs ~0.2 s a step on 2 cores.
    optimizer = torch.optim.AdamW(vae.parameters(), lr=options.lr_vae, weight_decay=0.0, fused=True)
    history: list[list[float]] = []
    for step in tqdm(range(options.steps_vae), desc="prior VAE", unit="step", file=sys.stderr):
        for group in optimizer.param_groups:
            group["lr"] = options.lr_vae * warmup_cosine_factor(step, options.steps_vae)
        batch = sample_vae_batch(
            images, layouts, options.batch_vae, options.size, generator, options.painting_fraction
        )
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        error = reconstruction - batch
        l1, mse = error.abs().mean(), error.pow(2).mean()
        edge = gradient_l1(reconstruction, batch)
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
        loss = l1 + options.mse_weight * mse + options.edge_weight * edge + options.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append([l1.item(), mse.item(), edge.item(), kl.item(), loss.item()])
    vae.eval()
    return _tail_means(history, ("l1", "mse", "edge", "kl", "total"))


def train_unet(
    unet: UNet2DConditionModel,
    latents: Tensor,
    uncond: Tensor,
    scheduler: DDPMScheduler,
    options: PriorOptions,
    generator: torch.Generator,
    paired_latents: Tensor | None = None,
    latent_stride: int = 8,
) -> dict[str, float]:
    """Train the UNet as an epsilon-prediction denoiser on random latent crops, aligned across modalities.

    Each batch holds ``batch_unet`` crops: single crops of ``latents`` and, with ``paired_latents``, pairs
    of crops of one paired scene in two different modalities (the same window, the same timestep below
    ``align_max_timestep``, each its own noise, so that no shared noise pattern can make the two look
    alike). The loss is the epsilon MSE over all crops plus ``align_weight`` times
    :func:`cross_modal_contrastive_loss` on each of the three feature taps the segmentation head reads
    (``tap_layers``: strides 32, 16, 8), averaged over the taps. The denoising term keeps the features
    those of a diffusion model; the alignment makes them the same for a scene whatever the sensor, as
    Stable Diffusion's features are.

    Args:
        unet: the model, trained in place.
        latents: (N,4,h,w) float32, SD's scale (unit standard deviation): the single crops' source.
        uncond: (1,77,D) float32, the empty-prompt embedding (the only conditioning).
        scheduler: SD's DDPM schedule (``add_noise``).
        options: steps, batch, crop size, learning rate, pair share, alignment weight and temperature.
        generator: every draw (crops, modalities, timesteps, noise).
        paired_latents: (S,M,4,h,w) float32, every modality of S scenes, or None (no alignment).
        latent_stride: the VAE's stride: a crop of ``unet_size`` image pixels is ``unet_size / stride``
            latent pixels.

    Returns:
        Means over the last 10 % of the steps: ``mse``, ``align`` (contrastive loss) and ``align_top1``
        (retrieval accuracy of the paired position), the last two only with pairs.
    """
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=options.lr_unet, weight_decay=0.01, fused=True)
    crop = options.unet_size // latent_stride
    height, width = latents.shape[-2:]
    num_timesteps = scheduler.config.num_train_timesteps
    pairs = 0
    if paired_latents is not None and options.align_weight > 0:
        pairs = min(options.batch_unet // 2, round(options.batch_unet * options.paired_fraction / 2))
    singles = options.batch_unet - 2 * pairs
    context = uncond.expand(options.batch_unet, -1, -1)
    taps: list[Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda m, a, out: taps.append(tap_output(out)))
        for layer in tap_layers(unet)
    ]
    history: list[list[float]] = []
    try:
        for step in tqdm(range(options.steps_unet), desc="prior UNet", unit="step", file=sys.stderr):
            for group in optimizer.param_groups:
                group["lr"] = options.lr_unet * warmup_cosine_factor(step, options.steps_unet)
            crops, timesteps = [], []
            if pairs:
                scenes = torch.randint(0, len(paired_latents), (pairs,), generator=generator).tolist()
                views = [
                    torch.randperm(paired_latents.shape[1], generator=generator)[:2].tolist() for _ in scenes
                ]
                top, left, _ = crop_offsets(pairs, *paired_latents.shape[-2:], (crop, crop), generator)
                window = list(zip(scenes, views, top, left))
                for side in (0, 1):
                    crops += [
                        paired_latents[i, v[side], :, y : y + crop, x : x + crop] for i, v, y, x in window
                    ]
                # Pairs at low noise, where MADM reads the taps (t <= 61); the single crops cover every t.
                pair_timesteps = torch.randint(0, options.align_max_timestep, (pairs,), generator=generator)
                timesteps += [pair_timesteps, pair_timesteps]
            picks = torch.randint(0, len(latents), (singles,), generator=generator).tolist()
            top, left, _ = crop_offsets(singles, height, width, (crop, crop), generator)
            crops += [latents[i, :, y : y + crop, x : x + crop] for i, y, x in zip(picks, top, left)]
            timesteps.append(torch.randint(0, num_timesteps, (singles,), generator=generator))
            clean, timesteps_all = torch.stack(crops), torch.cat(timesteps)
            noise = torch.randn(clean.shape, generator=generator)
            taps.clear()
            prediction = unet(scheduler.add_noise(clean, noise, timesteps_all), timesteps_all, context).sample
            mse = torch.nn.functional.mse_loss(prediction, noise)
            loss, row = mse, [mse.item()]
            if pairs:
                results = [
                    cross_modal_contrastive_loss(
                        tap[:pairs], tap[pairs : 2 * pairs], options.align_temperature
                    )
                    for tap in taps
                ]
                align = torch.stack([r[0] for r in results]).mean()
                loss = loss + options.align_weight * align
                row += [align.item(), torch.stack([r[1] for r in results]).mean().item()]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(row)
    finally:
        for hook in hooks:
            hook.remove()
    unet.eval()
    return _tail_means(history, ("mse", "align", "align_top1") if pairs else ("mse",))


def _tail_means(history: list[list[float]], names: Sequence[str]) -> dict[str, float]:
    tail = np.asarray(history[-max(1, len(history) // 10) :]) if history else np.full((1, len(names)), np.nan)
    return {name: float(value) for name, value in zip(names, np.nanmean(tail, axis=0))}


def _validate(options: PriorOptions) -> None:
    if options.pool_size < 1 or options.pool_size > HELDOUT_START:
        raise ValueError(
            f"--pool-size must lie in [1, {HELDOUT_START}] (held-out scenes start there), "
            f"got {options.pool_size}"
        )
    if options.size % 8 or not 8 <= options.size <= min(options.height, options.width):
        raise ValueError(
            f"--size {options.size} must be a multiple of 8 and fit in the "
            f"{options.height}x{options.width} pool"
        )
    if options.vae_stride not in (2, 4, 8):
        raise ValueError(f"--vae-stride must be 2, 4 or 8, got {options.vae_stride}")
    divisor = 8 * options.vae_stride
    if options.unet_size % divisor or not divisor <= options.unet_size <= min(options.height, options.width):
        raise ValueError(
            f"--unet-size {options.unet_size} must be a multiple of {divisor} (VAE stride "
            f"{options.vae_stride} x 3 UNet downsamplings) "
            f"and fit in the {options.height}x{options.width} pool"
        )
    if options.height % 8 or options.width % 8:
        raise ValueError(f"--height/--width must be multiples of 8, got {options.height}x{options.width}")
    for name in ("steps_vae", "steps_unet"):
        if getattr(options, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("batch_vae", "batch_unet"):
        if getattr(options, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 <= options.painting_fraction <= 1.0:
        raise ValueError(f"painting_fraction must lie in [0, 1], got {options.painting_fraction}")
    if not 0 <= options.paired_pool_size <= HELDOUT_START - PAIRED_START:
        raise ValueError(
            f"--paired-pool-size must lie in [0, {HELDOUT_START - PAIRED_START}], "
            f"got {options.paired_pool_size}"
        )
    if options.align_weight < 0 or options.align_temperature <= 0:
        raise ValueError("--align-weight must be >= 0 and the alignment temperature > 0")
    if options.pool_size > PAIRED_START:
        raise ValueError(f"--pool-size must be <= {PAIRED_START} (the paired pool starts there)")
    if options.vae_from is not None and not Path(options.vae_from, "vae").is_dir():
        raise ValueError(f"--vae-from {options.vae_from!r}: no vae/ folder there; give a prior folder")


def train_prior(options: PriorOptions, progress: bool = True) -> Path:
    """Train the tiny prior and write it to ``options.out`` (atomically: temporary folder, then rename).

    Args:
        options: see :class:`PriorOptions`.
        progress: show the pool's tqdm bar (the training bars always show).

    Returns:
        The prior folder.

    Raises:
        ValueError: an option is out of range (the message names it).
    """
    _validate(options)
    start_time = time.perf_counter()
    times: dict[str, float] = {}
    generator = torch.Generator().manual_seed(options.seed)

    pool, layouts = render_pool(
        options.seed, options.pool_size, options.height, options.width, progress=progress
    )
    images = torch.cat([pool[modality] for modality in MODALITIES])
    times["render_s"] = time.perf_counter() - start_time

    # The initialisations come from the seed; the caller's global RNG state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        vae = AutoencoderKL(**tiny_vae_config(options.vae_stride))
        unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    scheduler = DDPMScheduler(**SD14_SCHEDULER_CONFIG)
    tokenizer, text_encoder = build_tiny_tokenizer(), build_tiny_text_encoder()
    uncond = empty_prompt_embedding(tokenizer, text_encoder)

    mark = time.perf_counter()
    if options.vae_from is None:
        vae_losses = train_vae(vae, images, layouts, options, generator)
    else:
        vae = build_stack(options.vae_from).vae.eval()
        vae_losses = {"reused_from": options.vae_from}
    vae.requires_grad_(False)
    times["vae_s"] = time.perf_counter() - mark

    # The UNet's set: a share of the modality images (every modality alike) and as many palette paintings.
    mark = time.perf_counter()
    per_modality = max(1, round(options.pool_size * options.unet_pool_fraction))
    unet_images = torch.cat([pool[modality][:per_modality] for modality in MODALITIES])
    unet_layouts = layouts[torch.randperm(len(layouts), generator=generator)[: len(unet_images)]]
    latents = encode_mean(vae, torch.cat([unet_images, paint_pool(unet_layouts, generator)]))
    scaling_factor = vae.config.scaling_factor
    if options.vae_from is None:
        # Fold the scale so that latents x 0.18215 (SD's factor, kept in the config) have unit std, as SD's.
        latent_scale = 1.0 / (scaling_factor * latents.std().item())
        fold_latent_scale(vae, latent_scale)
    else:
        latent_scale = 1.0  # folded when that VAE was trained
    latents = latents * latent_scale * scaling_factor
    paired_latents = None
    if options.paired_pool_size:
        paired = render_paired_pool(
            options.seed, options.paired_pool_size, options.height, options.width, progress=progress
        )
        flat = encode_mean(vae, paired.flatten(0, 1)) * scaling_factor
        paired_latents = flat.unflatten(0, paired.shape[:2])
    times["encode_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    stride = 2 ** (len(vae.config.block_out_channels) - 1)
    unet_losses = train_unet(unet, latents, uncond, scheduler, options, generator, paired_latents, stride)
    times["unet_s"] = time.perf_counter() - mark
    times["total_s"] = time.perf_counter() - start_time

    record = {
        "options": asdict(options),
        "pool": {
            "split_code": SPLIT_PRIOR,
            "scene_indices": [0, options.pool_size],
            "modalities": list(MODALITIES),
            "palettes": [name for name, _, _ in PALETTES],
            "unet_latents": len(latents),
            "paired_scene_indices": [PAIRED_START, PAIRED_START + options.paired_pool_size],
        },
        "latent_scale_folded": latent_scale,
        "times": {name: round(value, 1) for name, value in times.items()},
        "final_losses": {"vae": vae_losses, "unet": unet_losses},
        "parameters": {
            "vae": sum(p.numel() for p in vae.parameters()),
            "unet": sum(p.numel() for p in unet.parameters()),
        },
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "threads": torch.get_num_threads(),
    }
    return write_prior(
        options.out,
        record,
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
    )


def write_prior(path: str | os.PathLike, record: dict, **parts) -> Path:
    """Write a stack folder plus ``TRAINING.json`` atomically (``data.io.atomic_folder``): into a temporary
    sibling, then renamed; an existing folder at ``path`` is replaced only once the new one is complete.

    Args:
        path: the destination folder.
        record: written as ``TRAINING.json``.
        **parts: ``vae``, ``unet``, ``scheduler``, ``tokenizer``, ``text_encoder`` for ``save_stack``.

    Returns:
        The destination folder.
    """
    out = Path(path)
    with atomic_folder(out) as staging:
        save_stack(staging, **parts)
        (staging / "TRAINING.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry ``python -m madm_pl.prior``: train the tiny prior (see the module docstring)."""
    defaults = PriorOptions()
    parser = argparse.ArgumentParser(
        prog="python -m madm_pl.prior",
        description="Train the tiny diffusion prior (VAE + UNet of the tiny preset) on the synthetic world.",
    )
    parser.add_argument("--out", default=defaults.out, help=f"prior folder to write (default {defaults.out})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"seed (default {defaults.seed})")
    parser.add_argument("--steps-vae", type=int, default=defaults.steps_vae, help="VAE optimiser steps")
    parser.add_argument("--steps-unet", type=int, default=defaults.steps_unet, help="UNet optimiser steps")
    parser.add_argument("--pool-size", type=int, default=defaults.pool_size, help="prior scenes per modality")
    parser.add_argument("--size", type=int, default=defaults.size, help="VAE training crop side (pixels)")
    parser.add_argument(
        "--unet-size",
        type=int,
        default=defaults.unet_size,
        help="UNet training crop side (pixels, latents /8)",
    )
    parser.add_argument("--batch-vae", type=int, default=defaults.batch_vae, help="VAE crops per step")
    parser.add_argument("--batch-unet", type=int, default=defaults.batch_unet, help="UNet crops per step")
    parser.add_argument("--height", type=int, default=defaults.height, help="pool render height")
    parser.add_argument("--width", type=int, default=defaults.width, help="pool render width")
    parser.add_argument(
        "--paired-pool-size",
        type=int,
        default=defaults.paired_pool_size,
        help="scenes rendered in all four modalities for the UNet's cross-modal alignment (0: none)",
    )
    parser.add_argument(
        "--align-weight", type=float, default=defaults.align_weight, help="weight of the alignment loss"
    )
    parser.add_argument(
        "--vae-from", default=None, help="reuse this prior folder's VAE and train only the UNet"
    )
    parser.add_argument(
        "--vae-stride",
        type=int,
        default=defaults.vae_stride,
        help="VAE stride: 8 (SD's) or 4 (finer latents)",
    )
    args = parser.parse_args(argv)
    options = PriorOptions(**{key: value for key, value in vars(args).items()})
    try:
        out = train_prior(options)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote the tiny diffusion prior to {out}")
    return 0

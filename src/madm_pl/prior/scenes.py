"""The tiny prior's scenes: its pools of synthetic scenes, their palette paintings and VAE batches.

The pool holds scenes of the synthetic world from their own split code
(``scene_seed_sequence(seed, SPLIT_PRIOR, modality, index)``), so no layout of a source, target-train or
target-test scene is ever seen: the training pool from index 0, the paired pool (one layout in every
modality) from :data:`PAIRED_START`, the held-out scenes of evaluation and tests from
:data:`HELDOUT_START`. Their layouts are painted flat with the 11- and 9-class palettes of
:mod:`madm_pl.labels` (ignore -> black), as LPLR paints labels; labels are used only as pictures, never
as supervision. :mod:`madm_pl.prior.train` trains on them, :mod:`madm_pl.prior.evaluate` measures on them.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from diffusers import AutoencoderKL
from torch import Tensor
from tqdm import tqdm

from madm_pl.labels import CITYSCAPES_TO_9, CITYSCAPES_TO_11, colorize, palette_for, remap
from madm_pl.labels import CLASSES_9 as _CLASSES_9
from madm_pl.labels import CLASSES_11 as _CLASSES_11
from madm_pl.synthetic import MODALITIES, SPLIT_PRIOR, render_modality, render_scene, scene_seed_sequence

#: First scene index of the held-out prior scenes (evaluation and tests): far past any training pool.
HELDOUT_START = 100_000

#: First scene index of the paired pool (one layout rendered in every modality), after the unpaired pool.
PAIRED_START = 50_000

#: The two palettes LPLR paints with: (name, world (Cityscapes 19) id -> task id table, (C,3) uint8 colours).
PALETTES: tuple[tuple[str, np.ndarray, np.ndarray], ...] = (
    ("11-class", CITYSCAPES_TO_11, palette_for(_CLASSES_11)),
    ("9-class", CITYSCAPES_TO_9, palette_for(_CLASSES_9)),
)


def render_pool(
    seed: int, count: int, height: int, width: int, start: int = 0, progress: bool = True
) -> tuple[dict[str, Tensor], Tensor]:
    """Render ``count`` prior scenes per modality (indices ``[start, start + count)`` of ``SPLIT_PRIOR``).

    Args:
        seed: base seed of the synthetic world.
        count: scenes per modality.
        height, width: render size.
        start: first scene index (:data:`HELDOUT_START` for held-out scenes).
        progress: show a tqdm bar.

    Returns:
        images: modality -> (count,3,H,W) uint8 (single-channel modalities repeated to 3 channels).
        layouts: (4·count,H,W) uint8 world ids (Cityscapes 19 train ids, 255 void) of all those scenes,
            modality-major.
    """
    images: dict[str, list[np.ndarray]] = {modality: [] for modality in MODALITIES}
    layouts = []
    jobs = [(modality, index) for modality in MODALITIES for index in range(start, start + count)]
    for modality, index in tqdm(jobs, desc="prior pool", unit="scene", file=sys.stderr, disable=not progress):
        scene = render_scene(scene_seed_sequence(seed, SPLIT_PRIOR, modality, index), height, width)
        image = render_modality(scene, modality)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        images[modality].append(image.transpose(2, 0, 1))
        layouts.append(scene.layout)
    pool = {modality: torch.from_numpy(np.stack(stack)) for modality, stack in images.items()}
    return pool, torch.from_numpy(np.stack(layouts))


def render_paired_pool(
    seed: int, count: int, height: int, width: int, start: int = PAIRED_START, progress: bool = True
) -> Tensor:
    """Render ``count`` prior scenes, each in every modality (``MODALITIES`` order): paired renderings.

    The analogue of what taught Stable Diffusion that a photo, a thermal image and a depth map of a street
    show the same things (images of every kind with shared captions): here the same layout seen by the four
    sensors, without any label. Scene ``i`` is ``SPLIT_PRIOR`` index ``start + i`` (its seed sequence under
    the ``"rgb"`` code); :data:`PAIRED_START` keeps them apart from the unpaired pool and the held-out set.

    Returns:
        (count,M,3,H,W) uint8, M = len(MODALITIES) (single-channel modalities repeated to 3 channels).
    """
    scenes = []
    for index in tqdm(
        range(start, start + count), desc="paired pool", unit="scene", file=sys.stderr, disable=not progress
    ):
        scene = render_scene(scene_seed_sequence(seed, SPLIT_PRIOR, "rgb", index), height, width)
        views = []
        for modality in MODALITIES:
            image = render_modality(scene, modality)
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            views.append(image.transpose(2, 0, 1))
        scenes.append(np.stack(views))
    return torch.from_numpy(np.stack(scenes))


def palette_tables(
    permute: bool = False, generator: torch.Generator | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per palette: the world id -> task id table and the task's colours (:data:`PALETTES`).

    Args:
        permute: shuffle which class gets which colour of the palette (augmentation: flat regions of every
            colour next to every other).
        generator: for ``permute`` (one ``randperm`` per palette).

    Returns:
        [(world_to_task (256,) int16 label map of :mod:`madm_pl.labels`, palette (C,3) uint8)] for the 11-
        and 9-class palettes.
    """
    tables = []
    for _, world_to_task, palette in PALETTES:
        if permute:
            palette = palette[torch.randperm(len(palette), generator=generator).numpy()]
        tables.append((world_to_task, palette))
    return tables


def paint_layout(layout: Tensor, world_to_task: np.ndarray, palette: np.ndarray) -> Tensor:
    """Paint world layouts flat with a palette, as LPLR paints labels (ignore -> black): the world ids
    mapped to task ids (``labels.remap``), then painted (``labels.colorize``).

    Args:
        layout: (B,H,W) uint8 world ids (Cityscapes 19, 255 void).
        world_to_task: (256,) label map from world ids to task ids (255 ignore).
        palette: (C,3) uint8 colour per task id.

    Returns:
        (B,3,H,W) uint8.
    """
    return colorize(remap(layout, world_to_task), palette)


def to_unit_range(image: Tensor) -> Tensor:
    """(B,3,H,W) uint8 -> float32 in [-1,1] (the VAE's input range)."""
    return image.float() / 127.5 - 1.0


def crop_offsets(
    count: int, height: int, width: int, size: tuple[int, int], generator: torch.Generator
) -> tuple[list[int], list[int], list[bool]]:
    """Random crop windows: ``count`` (top, left) corners of ``size`` = (h, w) crops inside a
    ``height`` x ``width`` image, and whether each is flipped left-right (drawn in that order)."""
    top = torch.randint(0, height - size[0] + 1, (count,), generator=generator).tolist()
    left = torch.randint(0, width - size[1] + 1, (count,), generator=generator).tolist()
    flip = (torch.rand(count, generator=generator) < 0.5).tolist()
    return top, left, flip


def sample_vae_batch(
    images: Tensor,
    layouts: Tensor,
    batch_size: int,
    size: int,
    generator: torch.Generator,
    painting_fraction: float = 0.5,
) -> Tensor:
    """A VAE training batch: random flipped crops, first modality images, then palette paintings.

    Args:
        images: (N,3,H,W) uint8, the pool's modality images (all modalities).
        layouts: (M,H,W) uint8 world ids.
        batch_size: crops in the batch.
        size: crop side.
        generator: every draw.
        painting_fraction: share of palette paintings in the batch (rounded).

    Returns:
        (batch_size,3,size,size) float32 in [-1,1].
    """
    height, width = images.shape[-2:]
    num_paintings = round(batch_size * painting_fraction)
    num_images = batch_size - num_paintings
    crops = []
    picks = torch.randint(0, len(images), (num_images,), generator=generator).tolist()
    for index, top, left, flip in zip(
        picks, *crop_offsets(num_images, height, width, (size, size), generator)
    ):
        crop = images[index, :, top : top + size, left : left + size]
        crops.append(crop.flip(-1) if flip else crop)
    picks = torch.randint(0, len(layouts), (num_paintings,), generator=generator).tolist()
    palettes = torch.randint(0, len(PALETTES), (num_paintings,), generator=generator).tolist()
    permutes = (torch.rand(num_paintings, generator=generator) < 0.5).tolist()
    offsets = crop_offsets(num_paintings, height, width, (size, size), generator)
    for index, palette, permute, top, left, flip in zip(picks, palettes, permutes, *offsets):
        world_to_task, colours = palette_tables(permute, generator)[palette]
        crop = paint_layout(
            layouts[index : index + 1, top : top + size, left : left + size], world_to_task, colours
        )
        crops.append(crop[0].flip(-1) if flip else crop[0])
    return to_unit_range(torch.stack(crops))


def paint_pool(layouts: Tensor, generator: torch.Generator) -> Tensor:
    """Paint each layout with one of the two palettes (drawn), true colours (no permutation).

    Args:
        layouts: (M,H,W) uint8 world ids.
        generator: draws the palette of each layout.

    Returns:
        (M,3,H,W) uint8.
    """
    tables = palette_tables()
    choice = torch.randint(0, len(tables), (len(layouts),), generator=generator)
    paintings = torch.empty(len(layouts), 3, *layouts.shape[-2:], dtype=torch.uint8)
    for palette, (world_to_task, colours) in enumerate(tables):
        chosen = choice == palette
        if chosen.any():
            paintings[chosen] = paint_layout(layouts[chosen], world_to_task, colours)
    return paintings


@torch.no_grad()
def encode_mean(vae: AutoencoderKL, images: Tensor, batch_size: int = 16) -> Tensor:
    """Posterior means of uint8 images, unscaled.

    Args:
        images: (N,3,H,W) uint8.

    Returns:
        (N,4,H/8,W/8) float32.
    """
    return torch.cat(
        [
            vae.encode(to_unit_range(images[i : i + batch_size])).latent_dist.mean
            for i in range(0, len(images), batch_size)
        ]
    )

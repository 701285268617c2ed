"""Diffusion stacks (VAE, UNet, DDPM schedule, empty-prompt embedding): presets and folders (METHOD.md §3).

A *stack* is everything :class:`~madm_pl.models.backbone.DiffusionBackbone` needs from Stable Diffusion:
the VAE, the UNet, the DDPM noise schedule and the CLIP embedding of the empty prompt (``uncond``).
Three sources give one:

- ``"tiny"``: a small random UNet/VAE/CLIP text encoder built from the config dicts below, for CPU work.
  It keeps what the code relies on: VAE stride 8 (four blocks, three downsamplings), 4 latent channels,
  four UNet up blocks laid out as in SD (``UpBlock2D`` then three ``CrossAttnUpBlock2D``) and a 77-token
  context. Its ``uncond`` goes through the real path: a CLIP tokenizer (byte-level vocabulary, no merges)
  and a tiny ``CLIPTextModel``.
- ``"sd14-random"``: the exact SD v1-4 UNet and VAE architectures with random weights (for memory and
  speed checks without the real weights). Its ``uncond`` is a standard-normal (1,77,768) tensor from a
  fixed seed: a random CLIP text encoder of SD's size would cost ~0.5 GB and seconds to build for a
  tensor that carries no more meaning than noise, and CLIP's last hidden state is layer-normed, so its
  entries have roughly unit scale too.
- a folder in the diffusers layout (``vae/``, ``unet/``, ``text_encoder/``, ``tokenizer/``,
  ``scheduler/``), e.g. a local copy of CompVis/stable-diffusion-v1-4 or a stack written by
  :func:`save_stack`. Nothing is downloaded (``local_files_only=True``; ``HF_HUB_OFFLINE=1`` is set
  by ``madm_pl.models``).

Presets are fixed models, like a checkpoint: their random weights come from a fixed seed, so every
build of ``"tiny"`` is the same network whatever the global RNG state (built on CPU).

diffusers and transformers are imported where a stack is built, not with this module: every command
(``madm-pl --help`` too) imports the model's module, and their model classes take seconds to import.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

#: Names accepted by :func:`build_stack` besides a folder path.
PRESETS = ("tiny", "sd14-random")

# diffusers loads with low_cpu_mem_usage=True by default, which needs `accelerate` (not a dependency);
# without it, it warns twice per run and loads as with False. Asking for what is possible is silent.
_LOW_CPU_MEM_USAGE = importlib.util.find_spec("accelerate") is not None

#: The parts a stack folder must hold (diffusers layout of CompVis/stable-diffusion-v1-4).
STACK_PARTS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")

#: Seed of the random preset weights and of the ``sd14-random`` uncond.
PRESET_SEED = 0

#: SD v1-4's ``unet/config.json`` (860M parameters).
SD14_UNET_CONFIG: dict = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}

#: SD v1-4's ``vae/config.json``.
SD14_VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

#: SD's DDPM training schedule (its ``scheduler/`` folder holds a PNDM config with these betas).
SD14_SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}

#: Tiny UNet: SD's block layout at 32/64 channels, one layer per down block (two per up block).
TINY_UNET_CONFIG: dict = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 32, 64, 64),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
}

#: Tiny VAE: four blocks (stride 8), 4 latent channels, SD's scaling factor.
TINY_VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (16, 32, 32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 128,
    "scaling_factor": 0.18215,
}


def tiny_vae_config(stride: int = 8) -> dict:
    """The tiny VAE's config at another spatial stride: one block fewer per halving (4 -> three blocks).

    Stride 8 is :data:`TINY_VAE_CONFIG` itself (SD's stride). A smaller stride gives a finer latent for the
    same image (a 64x64 crop: 16x16 at stride 4 instead of 8x8), so the UNet's taps are finer too; the
    backbone reads the stride from the config (``DiffusionBackbone.size_divisor``).

    Raises:
        ValueError: a stride that is not 2, 4 or 8.
    """
    if stride not in (2, 4, 8):
        raise ValueError(f"tiny VAE stride must be 2, 4 or 8, got {stride}")
    blocks = stride.bit_length()  # 2 -> 2 blocks, 4 -> 3, 8 -> 4 (one downsampling between blocks)
    return TINY_VAE_CONFIG | {
        "down_block_types": ("DownEncoderBlock2D",) * blocks,
        "up_block_types": ("UpDecoderBlock2D",) * blocks,
        "block_out_channels": TINY_VAE_CONFIG["block_out_channels"][:blocks],
    }


#: Tiny CLIP text encoder: width 32 (= the tiny UNet's cross_attention_dim), 77 positions.
TINY_TEXT_ENCODER_CONFIG: dict = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
}


@dataclass
class DiffusionStack:
    """What the backbone keeps of a Stable Diffusion checkpoint.

    Attributes:
        vae: the autoencoder (image <-> latent, stride 8, 4 latent channels).
        unet: the denoising UNet.
        scheduler: the DDPM schedule used by ``add_noise`` (1000 steps).
        uncond: (1,77,D) float32, the CLIP text embedding of the empty prompt.
    """

    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: DDPMScheduler
    uncond: Tensor


def tiny_clip_vocab() -> dict[str, int]:
    """A minimal CLIP BPE vocabulary: the 256 byte symbols, each also with CLIP's ``</w>`` word end.

    With no merges, text tokenizes into single bytes, which is all the empty prompt needs.

    Returns:
        token -> id; ``<|startoftext|>`` is 512 and ``<|endoftext|>`` (also padding) is 513.
    """
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def build_tiny_tokenizer() -> CLIPTokenizer:
    """The tiny preset's CLIP tokenizer (byte-level vocabulary, no merges, 77 tokens), built in memory."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=tiny_clip_vocab(), merges=[], model_max_length=77)


def build_tiny_text_encoder() -> CLIPTextModel:
    """The tiny preset's random CLIP text encoder (fixed weights, seed :data:`PRESET_SEED`)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = tiny_clip_vocab()
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        **TINY_TEXT_ENCODER_CONFIG,
    )
    with _seeded():
        return CLIPTextModel(config).eval()


@torch.no_grad()
def empty_prompt_embedding(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> Tensor:
    """CLIP's embedding of the empty prompt, as SD's pipelines compute a negative prompt.

    Args:
        tokenizer: pads ``""`` to ``model_max_length`` (77) tokens: start, end, then end-token padding.
        text_encoder: its last hidden state (after the final layer norm) is the embedding.

    Returns:
        (1,77,D) float32 on CPU (METHOD.md §3: "uncond").
    """
    input_ids = tokenizer(
        "", padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    text_encoder.eval()
    return text_encoder(input_ids.to(text_encoder.device)).last_hidden_state.float().cpu()


def build_stack(source: str) -> DiffusionStack:
    """Build the stack named by ``source``.

    Args:
        source: ``"tiny"``, ``"sd14-random"`` or a folder in the diffusers layout (see module docstring).

    Returns:
        The stack, fp32, on CPU (or on the current default device for the random presets).

    Raises:
        FileNotFoundError: ``source`` is neither a preset nor an existing stack folder, or a part is missing.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    if source == "tiny":
        with _seeded():
            vae = AutoencoderKL(**TINY_VAE_CONFIG)
            unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
        uncond = empty_prompt_embedding(build_tiny_tokenizer(), build_tiny_text_encoder())
        return DiffusionStack(vae, unet, DDPMScheduler(**SD14_SCHEDULER_CONFIG), uncond)
    if source == "sd14-random":
        with _seeded():
            vae = AutoencoderKL(**SD14_VAE_CONFIG)
            unet = UNet2DConditionModel(**SD14_UNET_CONFIG)
        generator = torch.Generator().manual_seed(PRESET_SEED)
        uncond = torch.randn(
            1, 77, SD14_UNET_CONFIG["cross_attention_dim"], generator=generator, device="cpu"
        )
        return DiffusionStack(vae, unet, DDPMScheduler(**SD14_SCHEDULER_CONFIG), uncond)
    return load_stack(source)


@contextlib.contextmanager
def _no_transformers_progress_bar() -> Iterator[None]:
    """transformers' "Loading weights" bar off for the block, then as it was."""
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


@contextlib.contextmanager
def _naming_the_part(root: Path, part: str) -> Iterator[None]:
    """Turn a part's load failure (diffusers' and transformers' own errors, a traceback each) into one
    line naming the folder. Pickled ``.bin`` weights are read by both libraries with
    ``torch.load(weights_only=True)``: a pickled object (code) is refused and ends here too."""
    try:
        yield
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # torch's weights-only refusal is a page of text; the line naming the refused object says it
        reason = next((line for line in lines if "GLOBAL" in line), " ".join(lines))[:300]
        raise ValueError(
            f"diffusion stack {str(root)!r}: cannot load {part}/ ({type(error).__name__}: {reason}); its "
            "weights are missing, damaged, or a pickled .bin holding more than tensors (refused: madm-pl "
            "loads weights with weights_only=True); use the diffusers folder of "
            "CompVis/stable-diffusion-v1-4 (.safetensors weights)"
        ) from None


def load_stack(path: str | os.PathLike) -> DiffusionStack:
    """Load a stack from a local folder in the diffusers layout; the text encoder is used once and dropped.

    Each part is loaded from its own folder (``path/unet``) rather than with ``subfolder="unet"``: both
    work on local folders in diffusers 0.42, but the direct form sidesteps the subfolder bugs of some
    versions (diffusers issue 8898).

    Args:
        path: folder with ``vae/``, ``unet/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/``.

    Returns:
        The stack, fp32, on CPU.

    Raises:
        FileNotFoundError: the folder or one of its parts is missing (the message names them).
    """
    root = Path(path).expanduser()
    expected = ", ".join(f"{part}/" for part in STACK_PARTS)
    if not root.is_dir():
        raise FileNotFoundError(
            f"backbone source {str(path)!r} is neither a preset {PRESETS} nor a folder: expected a diffusers "
            f"Stable Diffusion folder with {expected} (e.g. a local copy of CompVis/stable-diffusion-v1-4)"
        )
    missing = [part for part in STACK_PARTS if not (root / part).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"diffusion stack {str(root)!r} lacks {', '.join(f'{part}/' for part in missing)}: expected the "
            f"diffusers layout {expected} (as in CompVis/stable-diffusion-v1-4); fix the backbone source path"
        )
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    with _naming_the_part(root, "vae"):
        vae = AutoencoderKL.from_pretrained(
            root / "vae", local_files_only=True, low_cpu_mem_usage=_LOW_CPU_MEM_USAGE
        )
    with _naming_the_part(root, "unet"):
        unet = UNet2DConditionModel.from_pretrained(
            root / "unet", local_files_only=True, low_cpu_mem_usage=_LOW_CPU_MEM_USAGE
        )
    # SD v1-4's scheduler/ holds a PNDM config; its betas define the same DDPM training schedule.
    with _naming_the_part(root, "scheduler"):
        scheduler = DDPMScheduler.from_pretrained(root / "scheduler", local_files_only=True)
    with _naming_the_part(root, "tokenizer"):
        tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
    # a bar for a local load of one text encoder says nothing
    with _naming_the_part(root, "text_encoder"), _no_transformers_progress_bar():
        text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder", local_files_only=True)
    uncond = empty_prompt_embedding(tokenizer, text_encoder)
    return DiffusionStack(vae.float(), unet.float(), scheduler, uncond)


def save_stack(
    path: str | os.PathLike,
    *,
    vae: AutoencoderKL,
    unet: UNet2DConditionModel,
    scheduler: DDPMScheduler,
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
) -> Path:
    """Write a stack folder in the diffusers layout, loadable by :func:`load_stack` (safetensors weights).

    Args:
        path: the folder to write (created; existing parts are overwritten).
        vae, unet, scheduler, tokenizer, text_encoder: the parts.

    Returns:
        The folder.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(root / "vae")
    unet.save_pretrained(root / "unet")
    scheduler.save_pretrained(root / "scheduler")
    tokenizer.save_pretrained(root / "tokenizer")
    text_encoder.save_pretrained(root / "text_encoder")
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (root / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    return root


@contextlib.contextmanager
def _seeded() -> Iterator[None]:
    """Run a block with the CPU RNG seeded to :data:`PRESET_SEED`, restoring the caller's RNG state after."""
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator: torch.manual_seed would also reseed (and not restore) CUDA's.
        torch.default_generator.manual_seed(PRESET_SEED)
        yield

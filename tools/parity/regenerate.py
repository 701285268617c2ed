"""Regenerate the parity goldens of ``tests/parity/goldens/`` from the reference implementation (XiaRho/MADM).

Not run by CI and not importable from madm-pl's environment: it runs in a **side environment** that holds
the reference's pinned libraries and imports the reference's code from a path (nothing of it is copied into
this repository). Every value it writes comes from the reference's own functions, classes and configs,
run on CPU with the seams listed below; madm-pl's tests (``tests/parity/``) compare against them.

The side environment (commands as run on the project's 2-core CPU machine; Python 3.11)::

    # the code: bare git mirrors (the session's fetch tool puts github:XiaRho/MADM at
    # /work/.mirror/XiaRho+MADM/repo, and so on), checked out outside the repository
    mkdir -p /work/refenv/src && cd /work/refenv/src
    M=/work/.mirror
    git --git-dir=$M/XiaRho+MADM/repo archive b455f3b | (mkdir MADM && tar -x -C MADM)
    git --git-dir=$M/facebookresearch+detectron2/repo archive 02b5c4e2 \\
        | (mkdir detectron2 && tar -x -C detectron2)
    git --git-dir=$M/open-mmlab+mmcv/repo archive v1.3.7 | (mkdir mmcv && tar -x -C mmcv)
    # the libraries: torch first (the CPU wheel madm-pl uses), then the reference's pins
    cd /work/refenv && python3.11 -m venv venv
    venv/bin/pip install torch==2.13.0
    venv/bin/pip install diffusers==0.25.0 huggingface-hub==0.20.3 transformers==4.26.1 kornia==0.6.0 \\
        timm==0.6.13 "numpy<2"
    venv/bin/pip uninstall -y torchvision torch && venv/bin/pip install torch==2.13.0  # timm pulls both
    venv/bin/pip install "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" "omegaconf>=2.1,<2.4" \\
        "hydra-core>=1.1" pycocotools termcolor yacs tabulate cloudpickle tqdm matplotlib Pillow addict \\
        yapf pyyaml einops opencv-python-headless==4.6.0.66 diffdist==0.1 packaging safetensors

Versions measured there: torch 2.13.0+cpu, diffusers 0.25.0, transformers 4.26.1, huggingface-hub 0.20.3,
kornia 0.6.0, timm 0.6.13, numpy 1.26.4, fvcore 0.1.5.post20221221, omegaconf 2.3.1, safetensors 0.8.0.
Why these: the reference's ``requirements.txt`` pins diffusers 0.25.0, huggingface-hub 0.20.3 and
``stable-diffusion-sdkit==2.1.3``, whose metadata requires ``kornia==0.6`` (so kornia 0.6.0 is installed
directly); transformers 4.26.1 still provides ``modeling_clip._expand_mask``, which the reference imports;
timm 0.6.11 (the pin) does not import on Python 3.11 (reported by the session that first ran the reference
on a CPU), 0.6.13 has the same ``trunc_normal_``; detectron2 (git master in the reference's README) and
mmcv 1.3.7 (its README's pin) are used from their source trees, whose pure-Python parts are all the recipe
reaches.

Regenerate, then check that a second run reproduces the committed files bit for bit::

    OMP_NUM_THREADS=1 /work/refenv/venv/bin/python tools/parity/regenerate.py \\
        --reference /work/refenv/src/MADM --detectron2 /work/refenv/src/detectron2 \\
        --mmcv /work/refenv/src/mmcv
    OMP_NUM_THREADS=1 /work/refenv/venv/bin/python tools/parity/regenerate.py --check \\
        --reference /work/refenv/src/MADM --detectron2 /work/refenv/src/detectron2 \\
        --mmcv /work/refenv/src/mmcv

Seams (what is changed in the reference's process, and why):

- ``.cuda()`` returns the tensor or module itself (CPU only); the VAE, which the reference loads in fp16
  for its fp16 autocast, is cast to fp32: both sides compute in fp32 here (autocast + GradScaler cannot run
  on a CPU; that part is checked by reading, docs/REFERENCE_NOTES.md).
- ``torchvision``, ``ldm``, ``open_clip``, ``peft`` and ``wandb`` are stub modules: none is on the recipe's
  path (``T.Resize`` to the image's own size is the identity; LoRA is off, ``lora_configs = []``).
- kornia 0.6.0 downloads HardNet weights while being imported (a default argument); the download is
  answered with an empty state dict during that import only.
- ``LdmDiffusers.exclude_unused_params`` feeds ``.half()`` tensors to the fp32 UNet under CUDA autocast;
  on the CPU ``.half()`` is the identity while it runs (it only decides which UNet weights get gradients).
- Sizes, and only sizes, are overridden: the task config's head and projection widths, the stack folder
  (a tiny UNet with SD v1-4's block layout, ``tests/parity/fixtures.py``), and the class constants
  ``LdmDiffusers.latent_image_size`` (to the 8x64 latent of a 64x512 image) and
  ``unet_time_embed_out_features`` (the tiny UNet's time-embedding width).
- Weights: every tensor is overwritten with ``fixtures.fill(<reference name>)``; the EMA copies are then
  copied from the student (as they are at iteration 0).
- The head's ``Dropout2d`` is replaced by ``fixtures.ReplayDropout2d`` (seeded masks) on both sides.
- The reference's random draws (Python ``random``, numpy, kornia's ColorJitter parameters) come from seeded
  generators and are recorded; madm-pl's test feeds the same values to its own draws.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import enum
import filecmp
import importlib.abc
import importlib.machinery
import importlib.util
import json
import random
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

REPO = Path(__file__).resolve().parents[2]
GOLDENS = REPO / "tests" / "parity" / "goldens"
INFRARED_CONFIG = "config_files/SemSeg/MTMADISE/mtmadise_cityscapes_rgb_to_infrared_9.py"
TASK_CONFIGS = {
    "rgb2infrared": INFRARED_CONFIG,
    "rgb2depth": "config_files/SemSeg/MTMADISE/mtmadise_cityscapes_rgb_to_depth_11.py",
    "rgb2event": "config_files/SemSeg/MTMADISE/mtmadise_cityscapes_rgb_to_event_11.py",
}
#: Elements kept per tensor where a golden stores a sample rather than the whole tensor.
SAMPLE = 64
#: The seeds of the reference's draws for the two images of the full step (0: jitter, blur, t0 = 50;
#: 1: jitter, no blur, t0 = 51).
STEP_SEEDS = (1000, 1003)
#: Elements per parameter kept of the full step's gradients and updates.
STEP_SAMPLE = 8


def _load_fixtures() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "parity_fixtures", REPO / "tests" / "parity" / "fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fx = _load_fixtures()


# ------------------------------------------------------------------------------------------- side env
class _Placeholder:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"stub {type(self).__name__} called: it should not be on the recipe's path")


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class _Resize:
    """torchvision's ``Resize`` where it is the identity: the image already has the size."""

    def __init__(self, size: Any, interpolation: Any = None, **kwargs: Any) -> None:
        self.size = tuple(size)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[-2:]) != self.size:
            raise RuntimeError(f"stub Resize: image {tuple(image.shape)} is not {self.size}")
        return image


_STUB_NAMES = {"InterpolationMode": _InterpolationMode, "Resize": _Resize}


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in _STUB_NAMES:
            return _STUB_NAMES[name]
        return type(name, (_Placeholder,), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: set[str]) -> None:
        self.roots = roots

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def prepare_side_environment(reference: Path, detectron2: Path, mmcv: Path) -> None:
    """Paths, stubs, kornia's import and ``.cuda()`` (see the module docstring)."""
    sys.path[:0] = [str(reference), str(detectron2), str(mmcv)]
    sys.meta_path.insert(0, _StubFinder({"torchvision", "ldm", "open_clip", "peft", "wandb"}))
    hub, load_state_dict = torch.hub.load_state_dict_from_url, nn.Module.load_state_dict
    torch.hub.load_state_dict_from_url = lambda *args, **kwargs: collections.defaultdict(dict)
    nn.Module.load_state_dict = lambda self, *args, **kwargs: None
    try:
        import kornia  # noqa: F401
    finally:
        torch.hub.load_state_dict_from_url, nn.Module.load_state_dict = hub, load_state_dict
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self


@contextlib.contextmanager
def _half_is_identity():
    half = torch.Tensor.half
    torch.Tensor.half = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.half = half


# ------------------------------------------------------------------------------------------ the stack
def write_stack_folder(root: Path) -> Path:
    """The parity stack as an SD folder the reference loads (random weights; ``fill`` overwrites them)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from tokenizers import pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    AutoencoderKL(**fx.PARITY_VAE_CONFIG).save_pretrained(root / "vae")
    UNet2DConditionModel(**fx.PARITY_UNET_CONFIG).save_pretrained(root / "unet")
    DDPMScheduler(**fx.SCHEDULER_CONFIG).save_pretrained(root / "scheduler")
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*alphabet, *(symbol + "</w>" for symbol in alphabet), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    (root / "tokenizer").mkdir(parents=True)
    (root / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    (root / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=fx.CONTEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    CLIPTextModel(config).save_pretrained(root / "text_encoder")
    return root


def load_task_config(task: str, reference: Path) -> Any:
    from detectron2.config import LazyConfig

    return LazyConfig.load(str(reference / TASK_CONFIGS[task]))


def build_reference_model(reference: Path, stack: Path, output_dir: Path) -> tuple[nn.Module, Any]:
    """The reference's infrared recipe (``MTMADISE`` from its task config), sizes overridden, filled."""
    from config import instantiate_cmdise
    from modeling.meta_arch import ldm_diffusers

    cfg = load_task_config("rgb2infrared", reference)
    # Sizes only (module docstring). Paper: feature_dims [3, 320, 640, 1280], projection_dim [128, 512, 512,
    # 512], bottleneck 128, head channels / embed_dims 256, image 512x512.
    cfg.model.backbone.feature_extractor.ldm_extractor.stable_diffusion_name_or_path = str(stack)
    cfg.model.backbone.feature_dims = [3, *reversed(fx.TAP_CHANNELS)]
    cfg.model.backbone.projection_dim = [fx.HEAD_DECODED_CHANNELS] + [fx.HEAD_PROJECTION_CHANNELS] * 3
    cfg.model.backbone.bottleneck_channels = fx.HEAD_BOTTLENECK_WIDTH
    cfg.model.backbone.backbone_in_size = list(fx.IMAGE_SIZE)
    cfg.model.sem_seg_head.in_channels = [fx.HEAD_DECODED_CHANNELS] + [fx.HEAD_PROJECTION_CHANNELS] * 3
    cfg.model.sem_seg_head.channels = fx.HEAD_EMBED_DIM
    cfg.model.sem_seg_head.decoder_params.embed_dims = fx.HEAD_EMBED_DIM
    # main.py sets these from train.* (vis_period 250: no picture at iteration 0).
    cfg.model.vis_period = cfg.train.vis_period
    cfg.model.output_dir = str(output_dir)
    ldm_diffusers.LdmDiffusers.latent_image_size = fx.LATENT_SIZE
    ldm_diffusers.LdmDiffusers.unet_time_embed_out_features = fx.TIME_EMBED_DIM
    with _half_is_identity():
        model = instantiate_cmdise(cfg.model)
    extractor = model.backbone.feature_extractor
    extractor.ldm_extractor.vae.float()
    fill_reference(model)
    model.train()
    return model, cfg


ALIASES = ("backbone.feature_extractor.clip_project_rgb.", "sem_seg_head_sec_modal.")
EMA_PAIRS = (
    ("backbone.ema_feature_projections", "backbone.feature_projections"),
    ("ema_sem_seg_head", "sem_seg_head"),
    ("backbone.feature_extractor.ema_clip_project_others", "backbone.feature_extractor.clip_project_others"),
)
FILLED_PREFIXES = (
    "backbone.feature_extractor.ldm_extractor.unet.",
    "backbone.feature_extractor.ldm_extractor.vae.",
    "backbone.feature_projections.",
    "sem_seg_head.",
    "backbone.feature_extractor.clip_project_others.",
)


@torch.no_grad()
def fill_reference(model: nn.Module) -> None:
    """Every parameter of the stack by its canonical reference name, then the EMA copies from the student."""
    state = model.state_dict(keep_vars=True)
    for name, tensor in state.items():
        if name.startswith(ALIASES) or not name.startswith(FILLED_PREFIXES):
            continue
        if isinstance(tensor, nn.Parameter):
            tensor.copy_(fx.fill(name, tensor.shape))
    state[fx.UNCOND_KEY].copy_(fx.fill(fx.UNCOND_KEY, state[fx.UNCOND_KEY].shape))
    for ema, student in EMA_PAIRS:
        model.get_submodule(ema).load_state_dict(model.get_submodule(student).state_dict())
    extractor = model.backbone.feature_extractor
    if extractor.uncond_inputs.data_ptr() != extractor.ldm_extractor.uncond_inputs.data_ptr():
        raise RuntimeError("the prompt generator's uncond_inputs no longer shares the LdmDiffusers buffer")


def canonical(name: str) -> str:
    """A parameter's name under the module the recipe uses (``named_parameters`` lists a shared module once,
    under its first name: ``clip_project_rgb`` is ``clip_project_others``)."""
    for alias, target in (
        ("backbone.feature_extractor.clip_project_rgb.", "backbone.feature_extractor.clip_project_others."),
        ("sem_seg_head_sec_modal.", "sem_seg_head."),
    ):
        if name.startswith(alias):
            return target + name.removeprefix(alias)
    return name


def replace_dropouts(model: nn.Module) -> None:
    fx.replace_dropout(model.sem_seg_head, "student")
    fx.replace_dropout(model.ema_sem_seg_head, "teacher")


# ------------------------------------------------------------------------------ statements of the code
def reference_statements(
    path: Path, first: str, last: str, function: str = "forward", contains: str = ""
) -> types.CodeType:
    """Compile the statements of ``function`` in ``path`` from the one starting with ``first`` to ``last``.

    The statements run as they are in the reference's file (its own code, not a copy in this repository);
    the caller gives them a namespace with the names they read.
    """
    source = path.read_text()
    tree = ast.parse(source)
    functions = [
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == function
    ]
    for func in functions:
        for node in ast.walk(func):
            for field in ("body", "orelse"):
                block = getattr(node, field, None)
                if not isinstance(block, list) or not block or not isinstance(block[0], ast.stmt):
                    continue
                texts = [ast.get_source_segment(source, stmt) or "" for stmt in block]
                starts = [i for i, text in enumerate(texts) if text.startswith(first) and contains in text]
                ends = [
                    i
                    for i, text in enumerate(texts)
                    if text.startswith(last) and (first != last or contains in text)
                ]
                if starts and ends and ends[-1] >= starts[0]:
                    module = ast.Module(body=block[starts[0] : ends[-1] + 1], type_ignores=[])
                    return compile(module, str(path), "exec")
    raise RuntimeError(f"statements {first!r} .. {last!r} not found in {path}:{function}")


# ------------------------------------------------------------------------------------------- writing
def _to_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def sample(tensor: torch.Tensor, key: str) -> dict[str, Any]:
    """A tensor's checksum and a seeded sample of its elements (indices and values)."""
    flat = tensor.detach().reshape(-1)
    indices = fx.subsample_indices(flat.numel(), SAMPLE, key)
    return {
        "shape": list(tensor.shape),
        "checksum": fx.checksum(tensor),
        "indices": indices.tolist(),
        "values": flat[indices].double().tolist(),
    }


def run_length(values: list) -> list[list]:
    """[[first index, last index, value], ...] for runs of equal values."""
    runs: list[list] = []
    for index, value in enumerate(values):
        if runs and runs[-1][2] == value:
            runs[-1][1] = index
        else:
            runs.append([index, index, value])
    return runs


# --------------------------------------------------------------------------------------------- points
def golden_dplg(reference: Path, model: nn.Module, out: Path) -> None:
    """DPLG's teacher timestep at every iteration, the fixed noise and the noised latent."""
    from modeling.meta_arch import ldm_diffusers

    code = reference_statements(
        reference / "modeling/meta_arch/mtmadise.py",
        "if self.rev_noise_sup and self.train_iter_index <= self.rev_noise_end_iter",
        "if self.rev_noise_sup and self.train_iter_index <= self.rev_noise_end_iter",
        contains="rev_noise_timestep = random.randint(self.denoise_timestep_range[0]",
    )
    schedules = {}
    for task in ("rgb2infrared", "rgb2depth", "rgb2event"):
        cfg = load_task_config(task, reference).model
        base, end = int(cfg.denoise_timestep_range[0]), int(cfg.rev_noise_end_iter)
        for t0 in (base, base + 1):
            values = []
            for iteration in range(end + 3):
                namespace = {
                    "self": types.SimpleNamespace(
                        rev_noise_sup=cfg.rev_noise_sup,
                        train_iter_index=iteration,
                        rev_noise_end_iter=end,
                        denoise_timestep_range=list(cfg.denoise_timestep_range),
                        rev_noise_gradually=cfg.rev_noise_gradually,
                    ),
                    "random": types.SimpleNamespace(randint=lambda a, b, t0=t0: t0),
                    "target_pl_input_dict": {},
                }
                exec(code, namespace)
                # LdmDiffusers.forward draws randint(low, high) for a given range, else (0, 1): t = low.
                values.append(namespace["target_pl_input_dict"].get("timestep", (0, 1))[0])
            schedules[f"{task}/t0={t0}"] = {"base": base, "t_end": end, "runs": run_length(values)}

    # The fixed noise at SD's 64x64 latent and the teacher's noised latent, by the reference's add_noise.
    ldm = model.backbone.feature_extractor.ldm_extractor
    noise = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(42))
    latent = fx.fill("parity/latent64", (2, 4, 64, 64))
    noised = {}
    for t in (0, 1, 25, 50, 51, 999):
        timesteps = torch.full((2,), t, dtype=torch.long)
        noised[str(t)] = sample(
            ldm_diffusers.add_noise(ldm.noise_scheduler, latent, timesteps, noise), f"t{t}"
        )
    write_json(
        out / "dplg.json",
        {
            "schedules": schedules,
            "noise": sample(noise, "noise"),
            "latent_checksum": fx.checksum(latent),
            "noised": noised,
        },
    )


def golden_lplr(reference: Path, model: nn.Module, out: Path) -> None:
    """Palettes, painted labels, VAE latents (encode and decode), both LPLR and both CE terms."""
    from modeling.criterion import CmdiseCriterion
    from modeling.meta_arch.ldm_diffusers import vae_decoder, vae_encoder
    from modeling.meta_arch.mtmadise import MTMADISE

    palettes = {}
    for task in TASK_CONFIGS:
        palette = list(load_task_config(task, reference).dataloader.evaluator[0].palette)
        palettes[task] = palette
    padded = palettes["rgb2infrared"] + [0] * (256 * 3 - len(palettes["rgb2infrared"]))
    # A label with every train id, the ignore label and ids past the palette (9, 200).
    label = torch.tensor(list(range(fx.NUM_CLASSES)) + [255, 9, 200] * 2 + [0, 4, 8, 255])
    label = label.repeat(32 * 32 // label.numel() + 1)[: 32 * 32].reshape(1, 1, 32, 32)
    painted, valid = MTMADISE.convert_label_to_rgb(label=label, palette=padded)
    vae = model.backbone.feature_extractor.ldm_extractor.vae
    latent = vae_encoder(vae=vae, images=painted, encoder_block_indices=[])[0]
    decoded, _ = vae_decoder(vae=vae, latents=latent, decoder_block_indices=[], output_final=True)

    # Both losses of CmdiseCriterion.forward on small tensors: CE (source; target with pixel weights) and
    # LPLR (source mask = label != 255; target mask = (label != 255) * q, as mtmadise builds them).
    generator = torch.Generator().manual_seed(7)
    source_logits = torch.randn(1, fx.NUM_CLASSES, 32, 32, generator=generator) * 3
    target_logits = torch.randn(1, fx.NUM_CLASSES, 32, 32, generator=generator) * 3
    pred_source = torch.randn(1, 4, 4, 4, generator=generator)
    pred_target = torch.randn(1, 4, 4, 4, generator=generator)
    # CE needs train ids or 255: the ids past the palette become train ids here.
    loss_label = torch.where((label >= fx.NUM_CLASSES) & (label != 255), label % fx.NUM_CLASSES, label)
    source_painted, source_valid = MTMADISE.convert_label_to_rgb(label=loss_label, palette=padded)
    source_latent = vae_encoder(vae=vae, images=source_painted, encoder_block_indices=[])[0]
    target_label = loss_label.roll(5, dims=-1)
    q = 0.4375
    mask = (torch.arange(32 * 32).reshape(1, 32, 32) % 3 == 0).float()
    pixel_weight = mask + (1 - mask) * q
    target_latent = vae_encoder(
        vae=vae, images=MTMADISE.convert_label_to_rgb(target_label, padded)[0], encoder_block_indices=[]
    )[0]
    target_mask = (target_label != 255).float() * q
    criterion = CmdiseCriterion(loss_weight=1.0)
    losses = criterion(
        {"source_rgb_pred": source_logits, "target_sec_modal_pred": target_logits},
        {
            "source_gt": loss_label,
            "target_pl": target_label,
            "target_pw": pixel_weight,
            "vae_decoder_loss": {
                "source": {
                    "pred": pred_source,
                    "gt": source_latent,
                    "mask": source_valid,
                    "loss_weight": 1.0,
                    "loss_type": "L1",
                },
                "target": {
                    "pred": pred_target,
                    "gt": target_latent,
                    "mask": target_mask,
                    "loss_weight": 1.0,
                    "loss_type": "L1",
                },
            },
        },
    )
    write_json(
        out / "lplr.json",
        {
            "palettes": palettes,
            "q": q,
            "losses": {k: float(v) for k, v in losses.items()},
            "inputs_checksum": {
                "source_logits": fx.checksum(source_logits),
                "target_logits": fx.checksum(target_logits),
                "pred_source": fx.checksum(pred_source),
                "pred_target": fx.checksum(pred_target),
            },
        },
    )
    write_tensors(
        out / "lplr.safetensors",
        {
            "label": label[:, 0].to(torch.uint8),
            "painted": painted,
            "valid": valid[:, 0].to(torch.uint8),
            "latent": latent,
            "decoded": decoded,
            "loss_label": loss_label[:, 0].to(torch.uint8),
            "source_latent": source_latent,
            "target_label": target_label[:, 0].to(torch.uint8),
            "target_latent": target_latent,
            "pixel_weight": pixel_weight,
        },
    )


def golden_pseudo_label(reference: Path, out: Path) -> None:
    """q and the pixel weights: the reference's pseudo-label statements, then its ClassMix of the weights."""
    from utils.dacs_transforms import strong_transform

    code = reference_statements(
        reference / "modeling/meta_arch/mtmadise.py",
        "_ema_logits = F.interpolate(ema_logits",
        "pseudo_weight = pseudo_val * torch.ones",
    )
    results = {}
    tensors = {}
    for name, scale in (("confident", 9.0), ("unsure", 2.0)):
        generator = torch.Generator().manual_seed(11)
        logits = torch.randn(1, fx.NUM_CLASSES, 32, 48, generator=generator) * scale
        namespace = {
            "self": types.SimpleNamespace(pseudo_threshold=0.968, mic_reg=False),
            "ema_logits": logits,
            "target_sec_modal": types.SimpleNamespace(tensor=torch.zeros(1, 3, 32, 48)),
            "F": torch.nn.functional,
            "torch": torch,
            "np": np,
        }
        exec(code, namespace)
        mix_mask = (torch.arange(32 * 48).reshape(1, 1, 32, 48) % 5 < 2).long()
        parameters = {
            "mix": mix_mask[0],
            "color_jitter": 0.0,
            "color_jitter_s": 0.2,
            "color_jitter_p": 0.2,
            "blur": 0.0,
            "mean": None,
            "std": None,
        }
        weight = namespace["pseudo_weight"]
        _, mixed_weight = strong_transform(
            parameters, target=torch.stack((torch.ones_like(weight[0]), weight[0]))
        )
        results[name] = {"q": namespace["pseudo_val"], "logits_checksum": fx.checksum(logits), "scale": scale}
        tensors[f"{name}/pseudo_label"] = namespace["pseudo_label"].to(torch.uint8)
        tensors[f"{name}/mixed_weight"] = mixed_weight
        tensors[f"{name}/mix_mask"] = mix_mask.to(torch.uint8)
    write_json(out / "pseudo_label.json", results)
    write_tensors(out / "pseudo_label.safetensors", tensors)


def golden_ema(out: Path) -> None:
    """The reference's ``CMDISE._update_ema`` on a small net (parameters averaged, buffers untouched)."""
    from modeling.meta_arch.cmdise import CMDISE

    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))

    student, teacher = net(), net()
    with torch.no_grad():
        for name, tensor in student.state_dict(keep_vars=True).items():
            if tensor.is_floating_point():
                tensor.copy_(fx.fill(f"ema/student/{name}", tensor.shape))
        for name, tensor in teacher.state_dict(keep_vars=True).items():
            if tensor.is_floating_point():
                tensor.copy_(fx.fill(f"ema/teacher/{name}", tensor.shape))
    fake = types.SimpleNamespace(ema_parms=[teacher], updated_parms=[student], ema_alpha=0.999)
    iterations = [1, 2, 3, 10, 998, 999, 1000, 5000]
    tensors = {}
    for step, iteration in enumerate(iterations):
        with torch.no_grad():  # the student moves between updates, as training does
            for name, param in student.named_parameters():
                param.add_(0.1 * fx.fill(f"ema/move/{step}/{name}", param.shape))
        CMDISE._update_ema(fake, iteration)
        for name, tensor in teacher.state_dict().items():
            tensors[f"{iteration}/{name}"] = tensor.clone()
    write_json(out / "ema.json", {"iterations": iterations, "ema_alpha": 0.999})
    write_tensors(out / "ema.safetensors", tensors)


def golden_classmix(out: Path) -> None:
    """``get_class_masks`` (classes of the per-GPU batch, 255 included, ceil(n/2) drawn) and ``one_mix``."""
    from utils.dacs_transforms import get_class_masks, strong_transform

    label = torch.tensor([0, 2, 2, 5, 255, 7, 8, 3]).repeat_interleave(2).repeat(16, 1)
    label = (label + torch.arange(16)[:, None] // 6).clamp(max=8).where(label != 255, torch.tensor(255))
    label = label[None, None]
    choices = []
    original = np.random.choice

    def recording_choice(*args: Any, **kwargs: Any) -> Any:
        value = original(*args, **kwargs)
        choices.append([int(v) for v in value])
        return value

    np.random.seed(3)
    np.random.choice = recording_choice
    try:
        masks = get_class_masks(label)
    finally:
        np.random.choice = original
    generator = torch.Generator().manual_seed(5)
    source, target = torch.rand(2, 3, 16, 16, generator=generator).unbind(0)
    pseudo = torch.randint(0, fx.NUM_CLASSES, (16, 16), generator=generator)
    parameters = {
        "mix": masks[0],
        "color_jitter": 0.0,
        "color_jitter_s": 0.2,
        "color_jitter_p": 0.2,
        "blur": 0.0,
        "mean": None,
        "std": None,
    }
    mixed_image, mixed_label = strong_transform(
        parameters, data=torch.stack((source, target)), target=torch.stack((label[0, 0], pseudo))
    )
    write_json(
        out / "classmix.json",
        {
            "classes": torch.unique(label).tolist(),
            "chosen": choices[0],
            "inputs_checksum": {
                "source": fx.checksum(source),
                "target": fx.checksum(target),
                "pseudo": fx.checksum(pseudo),
            },
        },
    )
    write_tensors(
        out / "classmix.safetensors",
        {
            "label": label[:, 0].to(torch.uint8),
            "mask": masks[0].to(torch.uint8),
            "mixed_image": mixed_image,
            "mixed_label": mixed_label.to(torch.uint8),
        },
    )


def golden_augment(out: Path) -> None:
    """The reference's strong augmentation (``strong_transform`` without a mix): kornia 0.6.0's ColorJitter
    with the recorded factors and order, then the Gaussian blur with the recorded sigma."""
    from utils.dacs_transforms import strong_transform

    generator = torch.Generator().manual_seed(13)
    image = (torch.rand(1, 3, 24, 40, generator=generator) * 255).round() / 255
    cases, tensors = [], {}
    # (jitter draw, blur draw, seed): jitter only, blur only, both, neither; then jitter with other seeds.
    for index, (jitter, blur, seed) in enumerate(
        [(0.9, 0.1, 21), (0.1, 0.9, 22), (0.9, 0.9, 23), (0.1, 0.1, 24), (0.5, 0.3, 25), (0.3, 0.6, 26)]
    ):
        recorder = Recorder()
        with recorder.active(seed=seed) as draws:
            parameters = {
                "mix": None,
                "color_jitter": jitter,
                "color_jitter_s": 0.2,
                "color_jitter_p": 0.2,
                "blur": blur,
                "mean": None,
                "std": None,
            }
            augmented, _ = strong_transform(parameters, data=image.clone())
        cases.append({"jitter": jitter, "blur": blur, "draws": draws})
        tensors[str(index)] = augmented
    write_json(
        out / "augment.json",
        {
            "image_checksum": fx.checksum(image),
            "cases": cases,
            "strength": 0.2,
            "jitter_threshold": 0.2,
            "blur_threshold": 0.5,
        },
    )
    write_tensors(out / "augment.safetensors", tensors)


def golden_taps(model: nn.Module, out: Path) -> None:
    """The reference's ``diffusion_unet`` taps (indices [5, 8, 11], 'after') and output, prompt and time."""
    from modeling.meta_arch.ldm_diffusers import diffusion_unet

    ldm = model.backbone.feature_extractor.ldm_extractor
    project = model.backbone.feature_extractor.clip_project_others
    cond, time = project(model.backbone.feature_extractor.uncond_inputs, None)
    latent = fx.fill("parity/latent_taps", (1, 4, 8, 16))
    with torch.no_grad():
        output, taps = diffusion_unet(
            unet=ldm.unet,
            sample=latent,
            timestep=torch.tensor([37]),
            encoder_hidden_states=cond,
            res_time_embedding=time,
            unet_block_indices=ldm.unet_block_indices,
            unet_block_indices_type=ldm.unet_block_indices_type,
        )
    write_json(
        out / "taps.json",
        {
            "unet_block_indices": list(ldm.unet_block_indices),
            "timestep": 37,
            "latent_checksum": fx.checksum(latent),
            "cond": sample(cond, "taps/cond"),
            "time": sample(time, "taps/time"),
        },
    )
    # diffusion_unet returns the taps in up-block order: index 5 (stride 32), 8 (16), 11 (8).
    write_tensors(
        out / "taps.safetensors", {"s32": taps[0], "s16": taps[1], "s8": taps[2], "output": output.sample}
    )


def golden_head(model: nn.Module, out: Path) -> None:
    """Projections (``forward_features``) and the DAFormer head on given features, in train mode."""
    features = [fx.fill("parity/head/decoded", (1, 3, *fx.IMAGE_SIZE))]
    for stride, channels in zip((8, 16, 32), reversed(fx.TAP_CHANNELS)):
        size = (fx.IMAGE_SIZE[0] // stride, fx.IMAGE_SIZE[1] // stride)
        features.append(fx.fill(f"parity/head/s{stride}", (1, channels, *size)))
    with torch.no_grad():
        projected = model.backbone.forward_features(features, fx.IMAGE_SIZE)
        logits = model.sem_seg_head(projected)
    write_json(
        out / "head.json",
        {
            "logits": sample(logits, "head/logits"),
            "class_sums": logits.double().sum(dim=(0, 2, 3)).tolist(),
            "inputs_checksum": [fx.checksum(f) for f in features],
        },
    )


def golden_optimizer(model: nn.Module, cfg: Any, out: Path) -> None:
    """Parameter groups (lr, weight decay per parameter) and the LR factor at every iteration."""
    from detectron2.config import instantiate
    from detectron2.solver import LRMultiplier

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    names = {id(p): canonical(n) for n, p in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        groups.append(
            {
                "lr": group["lr"],
                "weight_decay": group["weight_decay"],
                "params": sorted(names[id(param)] for param in group["params"]),
            }
        )
    schedules = {}
    for max_iter in (10000, 1000, 300):
        scheduler_cfg = cfg.lr_multiplier
        updates = 2 * max_iter - 1  # main.py does this for --max_iter
        scheduler_cfg.scheduler.num_updates = updates
        scheduler_cfg.scheduler.milestones = [int(0.88888 * updates), int(0.96296 * updates)]
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheduler = LRMultiplier(probe, multiplier=instantiate(scheduler_cfg), max_iter=max_iter)
        values = []
        for _ in range(max_iter):
            values.append(probe.param_groups[0]["lr"])
            probe.step()
            scheduler.step()
        schedules[str(max_iter)] = run_length(values)
    write_json(
        out / "optimizer.json",
        {
            "lr": cfg.optimizer.lr,
            "weight_decay": cfg.optimizer.weight_decay,
            "grad_clip": cfg.train.grad_clip,
            "groups": groups,
            "lr_factor": schedules,
        },
    )
    return optimizer


# ---------------------------------------------------------------------------------------- full step
class Recorder:
    """Records the reference's random draws during one forward."""

    def __init__(self) -> None:
        self.draws: dict[str, Any] = {}

    @contextlib.contextmanager
    def active(self, seed: int):
        import kornia

        draws = self.draws = {"jitter_params": None}
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        uniform, randint = random.uniform, random.randint
        np_choice, np_uniform = np.random.choice, np.random.uniform
        generate = kornia.augmentation.ColorJitter.generate_parameters

        def rec_uniform(a: float, b: float) -> float:
            value = uniform(a, b)
            draws.setdefault("uniform", []).append(value)
            return value

        def rec_randint(a: int, b: int) -> int:
            value = randint(a, b)
            draws["dplg_t0"] = value
            return value

        def rec_choice(*args: Any, **kwargs: Any) -> Any:
            value = np_choice(*args, **kwargs)
            draws["classmix_choice"] = [int(v) for v in value]
            draws["classmix_n"] = int(args[0])
            return value

        def rec_np_uniform(*args: Any, **kwargs: Any) -> Any:
            value = np_uniform(*args, **kwargs)
            draws["blur_sigma"] = float(value)
            return value

        def rec_generate(module: Any, batch_shape: Any) -> dict:
            params = generate(module, batch_shape)
            draws["jitter_params"] = {k: v.tolist() for k, v in params.items()}
            return params

        random.uniform, random.randint = rec_uniform, rec_randint
        np.random.choice, np.random.uniform = rec_choice, rec_np_uniform
        kornia.augmentation.ColorJitter.generate_parameters = rec_generate
        try:
            yield draws
        finally:
            random.uniform, random.randint = uniform, randint
            np.random.choice, np.random.uniform = np_choice, np_uniform
            kornia.augmentation.ColorJitter.generate_parameters = generate


def golden_full_step(
    reference: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: Any, out: Path
) -> None:
    """One optimiser step of the paper's infrared recipe: two images (the reference's 2 GPUs x 1 image).

    Each image is one forward of ``MTMADISE`` at iteration 0 (as each GPU runs it), with its own draws; the
    gradients are the mean of the two (DDP's all-reduce), clipped to norm 0.01 over the optimiser's
    parameters, then one AdamW step at the LR factor of iteration 0 (AMPTrainer.run_step's order, scale 1).
    """
    from detectron2.config import instantiate
    from detectron2.solver import LRMultiplier

    max_iter = int(cfg.train.max_iter)
    updates = 2 * max_iter - 1
    cfg.lr_multiplier.scheduler.num_updates = updates
    cfg.lr_multiplier.scheduler.milestones = [int(0.88888 * updates), int(0.96296 * updates)]
    LRMultiplier(optimizer, multiplier=instantiate(cfg.lr_multiplier), max_iter=max_iter)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    names = {id(p): canonical(n) for n, p in model.named_parameters()}
    before = {names[id(p)]: p.detach().clone() for p in params}
    ldm = model.backbone.feature_extractor.ldm_extractor
    calls: list[dict] = []
    forward = ldm.forward

    def recording_forward(batched_inputs: dict, input_modal: str, **kwargs: Any) -> Any:
        low = batched_inputs.get("timestep", (0, 1))[0]
        calls.append({"modal": input_modal, "timestep": int(low), "ema": bool(kwargs.get("ema_forward"))})
        return forward(batched_inputs, input_modal, **kwargs)

    ldm.forward = recording_forward
    from modeling.meta_arch import ldm_diffusers

    add_noise = ldm_diffusers.add_noise

    def recording_add_noise(
        noise_scheduler: Any, latents: Any, timesteps: Any, shared_noise: Any = None
    ) -> Any:
        noised = add_noise(noise_scheduler, latents, timesteps, shared_noise)
        calls[-1]["noised_latent"] = fx.checksum(noised)
        calls[-1]["latent"] = fx.checksum(latents)
        return noised

    ldm_diffusers.add_noise = recording_add_noise
    teacher_logits: list[torch.Tensor] = []
    hook = model.ema_sem_seg_head.register_forward_hook(lambda m, i, o: teacher_logits.append(o.detach()))
    q_code = reference_statements(
        reference / "modeling/meta_arch/mtmadise.py",
        "_ema_logits = F.interpolate(ema_logits",
        "pseudo_weight = pseudo_val * torch.ones",
    )
    micro_batches = []
    grads = {names[id(p)]: torch.zeros_like(p) for p in params}
    recorder = Recorder()
    for micro in range(2):
        inputs = fx.batch(micro)
        batched = [
            {
                # the dataset mapper's 0-255 images (pixel_std = 255); fixtures' images are k/255
                "source_rgb": (inputs["source_image"][0] * 255).round(),
                "target_second_modality": (inputs["target_image"][0] * 255).round(),
                "source_label": inputs["source_label"],
            }
        ]
        model.train_iter_index = 0  # every GPU runs iteration 0
        calls.clear()
        teacher_logits.clear()
        with recorder.active(seed=STEP_SEEDS[micro]) as draws:
            losses = model(batched)
        total = sum(losses.values())
        model.zero_grad()
        total.backward()
        for p in params:
            if p.grad is not None:
                grads[names[id(p)]] += p.grad / 2  # DDP averages the two GPUs' gradients
        namespace = {
            "self": types.SimpleNamespace(pseudo_threshold=model.pseudo_threshold, mic_reg=False),
            "ema_logits": teacher_logits[0],
            "target_sec_modal": types.SimpleNamespace(tensor=inputs["target_image"]),
            "F": torch.nn.functional,
            "torch": torch,
            "np": np,
        }
        exec(q_code, namespace)
        micro_batches.append(
            {
                "losses": {k: float(v) for k, v in losses.items()},
                "q": namespace["pseudo_val"],
                "draws": draws,
                "calls": [dict(call) for call in calls],
                "inputs_checksum": {k: fx.checksum(v) for k, v in inputs.items()},
            }
        )
    hook.remove()
    ldm_diffusers.add_noise = add_noise
    ldm.forward = forward
    for p in params:
        p.grad = grads[names[id(p)]].clone()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
    clipped = {n: p.grad.detach().clone() for n, p in ((names[id(p)], p) for p in params)}
    lrs = [group["lr"] for group in optimizer.param_groups]
    optimizer.step()
    parameters = {canonical(n): p for n, p in model.named_parameters()}
    ordered = sorted(before)
    grad_sample, delta_sample = [], []
    for name in ordered:
        indices = fx.subsample_indices(grads[name].numel(), STEP_SAMPLE, f"full/{name}")
        grad_sample.append(grads[name].reshape(-1)[indices])
        # after - before, exact in float64: the AdamW update (about lr = 3.35e-7, near float32's resolution
        # of the weights themselves)
        after = parameters[name].detach().reshape(-1)[indices].double()
        delta_sample.append(after - before[name].reshape(-1)[indices].double())
    tensors = {
        "grad_norm": torch.stack([grads[n].double().norm() for n in ordered]),
        "grad_max": torch.stack([grads[n].abs().max().double() for n in ordered]),
        "grad_sample": torch.stack(grad_sample),
        "delta_sample": torch.stack(delta_sample),
    }
    write_json(
        out / "full_step.json",
        {
            "micro_batches": micro_batches,
            "grad_norm": float(grad_norm),
            "clip": cfg.train.grad_clip,
            "lr": lrs,
            "max_iter": max_iter,
            "parameters": ordered,
            "clipped_norm": float(torch.stack([g.double().norm() for g in clipped.values()]).norm()),
        },
    )
    write_tensors(out / "full_step.safetensors", tensors)


# ------------------------------------------------------------------------------------------------ main
def generate(args: argparse.Namespace, out: Path) -> None:
    prepare_side_environment(args.reference, args.detectron2, args.mmcv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        stack = write_stack_folder(Path(tmp) / "stack")
        model, cfg = build_reference_model(args.reference, stack, Path(tmp) / "output")
    replace_dropouts(model)
    golden_dplg(args.reference, model, out)
    golden_lplr(args.reference, model, out)
    golden_pseudo_label(args.reference, out)
    golden_ema(out)
    golden_classmix(out)
    golden_augment(out)
    golden_taps(model, out)
    golden_head(model, out)
    model, cfg = _rebuild(args)  # the head golden ran BatchNorm in train mode: start the step from scratch
    optimizer = golden_optimizer(model, cfg, out)
    golden_full_step(args.reference, model, optimizer, cfg, out)


def _rebuild(args: argparse.Namespace) -> tuple[nn.Module, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        stack = write_stack_folder(Path(tmp) / "stack")
        model, cfg = build_reference_model(args.reference, stack, Path(tmp) / "output")
    replace_dropouts(model)
    return model, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reference", type=Path, required=True, help="XiaRho/MADM source tree (b455f3b)")
    parser.add_argument(
        "--detectron2", type=Path, required=True, help="facebookresearch/detectron2 source tree"
    )
    parser.add_argument("--mmcv", type=Path, required=True, help="open-mmlab/mmcv source tree at v1.3.7")
    parser.add_argument("--out", type=Path, default=GOLDENS, help="folder to write (default: the goldens)")
    parser.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare")
    args = parser.parse_args()
    if not args.check:
        args.out.mkdir(parents=True, exist_ok=True)
        generate(args, args.out)
        print(f"wrote {sorted(p.name for p in args.out.iterdir())} to {args.out}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        generate(args, Path(tmp))
        names = sorted(p.name for p in Path(tmp).iterdir())
        committed = sorted(p.name for p in args.out.iterdir() if p.is_file())
        differing = [n for n in names if not filecmp.cmp(Path(tmp) / n, args.out / n, shallow=False)]
        if names != committed or differing:
            raise SystemExit(f"goldens differ: files {names} vs {committed}; changed {differing}")
        print(f"reproduced {len(names)} golden files bit for bit: {names}")


if __name__ == "__main__":
    main()

"""``madm-pl convert``: read a reference file, check it against ``--backbone``, write a Lightning checkpoint.

See :mod:`madm_pl.convert` for the command line and what the written file holds.
"""

from __future__ import annotations

import argparse
import inspect
import os
import pickle
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from madm_pl.convert.table import (
    ALIASES,
    REFERENCE_LDM,
    REFERENCE_VAE,
    TOP_LEVEL_IGNORED,
    ConversionError,
    convert_state_dict,
    listed,
)
from madm_pl.data.io import atomic_write
from madm_pl.labels import TASKS, get_task
from madm_pl.models import MADMHead


# ------------------------------------------------------------------------------------- the file
@dataclass
class ReferenceCheckpoint:
    """A reference file, read.

    Attributes:
        state_dict: ``MTMADISE.state_dict()`` (a ``module.`` prefix removed).
        iteration: the 0-based iteration it was saved at, or None when the file does not say.
        top_level: the other top-level entries, left out (see :data:`TOP_LEVEL_IGNORED`).
    """

    state_dict: dict[str, Tensor]
    iteration: int | None
    top_level: list[str]


def read_reference(path: Path, trust_pickle: bool = False) -> ReferenceCheckpoint:
    """Read a reference checkpoint with torch alone (no detectron2, no mmcv).

    ``torch.load(weights_only=True)`` reads tensors, dicts, lists and numbers and refuses any other
    pickled object, so an untrusted file cannot run code; a detectron2 checkpoint holds nothing else.
    Zip-format files (every ``torch.save`` since 1.6) are memory-mapped, so a 10 GB file with optimiser
    state costs no memory until a tensor is used.

    Args:
        path: the ``.pth`` file.
        trust_pickle: allow any pickled object (``weights_only=False``), for a file that ``weights_only``
            refuses; only for files you trust (unpickling can run code).

    Returns:
        The state dict and the iteration.

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``weights_only`` refused the file (the message names ``--trust_pickle``), or the file
            is not a detectron2 checkpoint / state dict, or it has a top-level entry nobody listed.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--reference {str(path)!r} does not exist: give a released model_RGB2*.pth")
    try:
        loaded = torch.load(
            path, map_location="cpu", weights_only=not trust_pickle, mmap=zipfile.is_zipfile(path)
        )
    except Exception as error:  # a refused pickle; a truncated or damaged file (torch's zip reader)
        if isinstance(error, pickle.UnpicklingError) and not trust_pickle:
            from madm_pl.callbacks.checkpoint_file import weights_only_refusal  # (callbacks are heavy)

            raise ValueError(
                f"--reference {str(path)!r}: torch.load(weights_only=True) refused it "
                f"({weights_only_refusal(error)}); if you trust the file (e.g. downloaded from the "
                "reference's README links), pass --trust_pickle"
            ) from None
        first = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(
            f"--reference {str(path)!r} cannot be read ({type(error).__name__}: {first[:160]}): the file is "
            "truncated or damaged; download it again"
        ) from None
    if not isinstance(loaded, Mapping):
        raise ValueError(f"--reference {str(path)!r} holds a {type(loaded).__name__}, not a checkpoint dict")
    if "model" in loaded and isinstance(loaded["model"], Mapping):
        state, rest = dict(loaded["model"]), [key for key in loaded if key != "model"]
    elif loaded and all(isinstance(value, Tensor) for value in loaded.values()):
        state, rest = dict(loaded), []  # a bare state dict
    else:
        raise ValueError(
            f"--reference {str(path)!r}: expected a detectron2 checkpoint ({{'model': state_dict, ...}}) or "
            f"a state dict, found the entries {sorted(map(str, loaded))[:8]}"
        )
    unknown = [key for key in rest if key not in TOP_LEVEL_IGNORED]
    if unknown:
        raise ValueError(
            f"--reference {str(path)!r}: unknown top-level entries {unknown} (known: 'model', "
            f"{', '.join(map(repr, TOP_LEVEL_IGNORED))}); nothing was written"
        )
    if state and all(key.startswith("module.") for key in state):
        # A model saved inside DistributedDataParallel; fvcore strips the prefix on load too.
        state = {key.removeprefix("module."): value for key, value in state.items()}
    iteration = loaded.get("iteration")
    trainer = loaded.get("trainer")
    if iteration is None and isinstance(trainer, Mapping):
        iteration = trainer.get("iteration")
    return ReferenceCheckpoint(state, None if iteration is None else int(iteration), rest)


#: Reference keys whose shapes give the head's sizes: ``MADMHead`` argument -> (key, dimension).
HEAD_SIZE_KEYS: dict[str, tuple[str, int]] = {
    "embed_dim": ("sem_seg_head.embed_layers.0.proj.weight", 0),
    "projection_channels": ("backbone.feature_projections.1.0.conv3.weight", 0),
    "decoded_projection_channels": ("backbone.feature_projections.0.0.conv3.weight", 0),
    "bottleneck_width": ("backbone.feature_projections.1.0.conv1.weight", 0),
}

#: The input of the reference's level-0 projection: 3 channels (the decoded image) with LPLR on.
LEVEL_0_INPUT_KEY = "backbone.feature_projections.0.0.conv1.weight"

#: The paper's head widths: ``MADMHead``'s defaults
#: (configs/base.yaml states the same, checked by tests/test_configs.py).
PAPER_HEAD = {name: inspect.signature(MADMHead).parameters[name].default for name in HEAD_SIZE_KEYS}


def head_sizes(reference: Mapping[str, Tensor], task: str) -> dict[str, int]:
    """The head sizes the reference was built with, read from its tensors' shapes.

    Args:
        reference: the reference state dict.
        task: the madm-pl task (its class count must be the classifier's).

    Returns:
        ``MADMHead`` keyword arguments (``model.init_args.head.init_args``): ``embed_dim``,
        ``projection_channels``, ``decoded_projection_channels``, ``bottleneck_width``.

    Raises:
        ConversionError: a key is missing, or the classifier has another class count than ``task``.
    """
    missing = [key for key, _ in HEAD_SIZE_KEYS.values() if key not in reference]
    classifier = "sem_seg_head.conv_seg.weight"
    if classifier not in reference:
        missing.append(classifier)
    if missing:
        raise ConversionError(f"the reference lacks {missing}: is it a MADM (MTMADISE) checkpoint?")
    classes = reference[classifier].shape[0]
    expected = get_task(task).num_classes
    if classes != expected:
        raise ConversionError(
            f"the reference's classifier {classifier} has {classes} classes, task {task!r} has {expected}: "
            f"fix --task (rgb2infrared: 9 classes, rgb2depth and rgb2event: 11)"
        )
    level_0 = reference[LEVEL_0_INPUT_KEY].shape[1]
    if level_0 != 3:
        raise ConversionError(
            f"the reference's level 0 ({LEVEL_0_INPUT_KEY}) reads {level_0} channels, not the 3 of the "
            "decoded image: it was trained without LPLR (no --vae_decoder_loss, the VAE encoder feature as "
            "level 0). madm-pl converts the LPLR recipes, those of the released checkpoints"
        )
    return {name: int(reference[key].shape[dim]) for name, (key, dim) in HEAD_SIZE_KEYS.items()}


def check_consistency(reference: Mapping[str, Tensor], module: torch.nn.Module, backbone: str) -> list[str]:
    """Compare what the reference saved twice or madm-pl recreates with what the module holds.

    - the aliases (:data:`ALIASES`) hold exactly the tensors they alias;
    - the reference's VAE equals ``--backbone``'s VAE at the reference's dtype (fp16), value for value;
    - the reference's ``uncond_inputs`` equals the module's empty-prompt embedding within 1e-3;
    - the reference's ``shared_noise`` equals the module's fixed noise (a warning if not: the weights are
      still right, only the t = 0 noise term would differ).

    A part the file does not hold is not checked (and says so).

    Args:
        reference: the reference state dict.
        module: the madm-pl ``MADMModule`` built on ``--backbone``.
        backbone: the ``--backbone`` value, for the messages.

    Returns:
        One line per check, for the summary.

    Raises:
        ConversionError: an alias differs, or the VAE or the empty-prompt embedding is not ``--backbone``'s.
    """
    lines = []
    for alias, mapped in ALIASES.items():
        keys = [key for key in reference if key.startswith(alias)]
        differing = [
            key
            for key in keys
            if (twin := mapped + key.removeprefix(alias)) not in reference
            or not torch.equal(reference[key], reference[twin])
        ]
        if differing:
            raise ConversionError(
                f"{alias}* should be the same module as {mapped}* in the released recipes, but differs at"
                f"{listed(differing)}\n  (a run with same_cond_params=False or sem_seg_head_sec_modal=True: "
                "madm-pl has one conditioning and one head per network)"
            )
        if keys:
            lines.append(f"{alias}* equals {mapped}* ({len(keys)} tensors)")
    vae = module.backbone.vae.state_dict()
    saved = {
        key.removeprefix(REFERENCE_VAE): value
        for key, value in reference.items()
        if key.startswith(REFERENCE_VAE)
    }
    if saved:
        differing = sorted(set(saved) ^ set(vae))
        differing += [
            key
            for key in sorted(set(saved) & set(vae))
            if saved[key].shape != vae[key].shape
            or not torch.equal(saved[key], vae[key].to(saved[key].dtype))
        ]
        if differing:
            raise ConversionError(
                f"the reference's VAE differs from --backbone {backbone!r}'s at {len(differing)} tensor(s):"
                f"{listed(differing)}\n  point --backbone at the Stable Diffusion v1-4 folder the reference "
                "was trained with (CompVis/stable-diffusion-v1-4)"
            )
        dtypes = sorted({str(value.dtype).removeprefix("torch.") for value in saved.values()})
        lines.append(f"VAE equals --backbone's at {'/'.join(dtypes)} ({len(saved)} tensors)")
    else:
        lines.append("VAE not checked: the file holds none")
    uncond_key = REFERENCE_LDM + "uncond_inputs"
    if uncond_key in reference:
        saved_uncond, ours = reference[uncond_key].float(), module.backbone.uncond.float()
        if saved_uncond.shape != ours.shape or not torch.allclose(saved_uncond, ours, atol=1e-3, rtol=1e-3):
            gap = (saved_uncond - ours).abs().max().item() if saved_uncond.shape == ours.shape else "shape"
            raise ConversionError(
                f"the reference's empty-prompt embedding {uncond_key} {tuple(saved_uncond.shape)} "
                f"differs from the one --backbone {backbone!r} gives {tuple(ours.shape)} (max |difference| "
                f"{gap}): point --backbone at the SD v1-4 folder (its text_encoder/ and tokenizer/) the "
                "reference used"
            )
        lines.append(
            f"empty-prompt embedding within {(saved_uncond - ours).abs().max().item():.1e} of --backbone's"
        )
    noise_key = REFERENCE_LDM + "shared_noise"
    if noise_key in reference:
        saved_noise, ours = reference[noise_key], module.backbone.noise
        if saved_noise.shape == ours.shape and torch.equal(saved_noise.to(ours.dtype), ours):
            lines.append("fixed noise equals madm-pl's (seed 42)")
        else:
            warnings.warn(
                f"the reference's fixed noise {noise_key} differs from madm-pl's (model.noise_seed="
                f"{module.hparams.noise_seed}): the weights are converted, but the t = 0 noise term will "
                "differ",
                stacklevel=2,
            )
            lines.append("fixed noise DIFFERS from madm-pl's (see the warning)")
    return lines


# ------------------------------------------------------------------------------------ writing
def lightning_checkpoint(state_dict: Mapping[str, Tensor], global_step: int, info: dict[str, Any]) -> dict:
    """The dict written to ``--out``: what Lightning reads for test/validate/predict and fit.

    - ``state_dict``: loaded with ``strict=True`` into the module the config builds.
    - ``global_step``: the reference's iterations (the IoU table says "test after iteration N").
    - ``optimizer_states`` / ``lr_schedulers`` are empty lists: the file holds no optimiser state, so
      ``fit --ckpt_path`` restores the weights and nothing else (Lightning restores zero optimisers and
      schedulers, and with no ``loops`` entry the run starts at iteration 0): a fine-tuning run with a
      fresh AdamW and LR schedule, as the reference's ``--init-from`` without ``--resume`` does.
    - ``madm_pl_weights_sha256``: the SHA-256 of each weight tensor, verified when test/predict/fit load
      the file (``callbacks.checkpoint_file``).
    - no ``hyper_parameters``: LightningCLI would apply them over the config and the command line
      (including the backbone path and the memory switches); the config describes the model instead.

    Args:
        state_dict: the converted madm-pl state dict.
        global_step: optimiser steps the reference took (its saved iteration + 1), 0 when unknown.
        info: where it came from, kept under ``madm_pl_conversion`` (plain values only).

    Returns:
        The checkpoint dict (plain types: ``torch.load(weights_only=True)`` reads it).
    """
    import lightning

    from madm_pl.callbacks.checkpoint_file import with_weights_digest

    checkpoint = {
        "state_dict": dict(state_dict),
        "epoch": 0,
        "global_step": global_step,
        "pytorch-lightning_version": lightning.__version__,
        "optimizer_states": [],
        "lr_schedulers": [],
        "madm_pl_conversion": info,
    }
    return with_weights_digest(checkpoint)  # checked by every load, as the checkpoints of fit


# --------------------------------------------------------------------------------- the command
def convert(
    task: str,
    reference: str | os.PathLike,
    backbone: str,
    out: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Convert a released reference checkpoint into a madm-pl checkpoint (the ``madm-pl convert`` command).

    Args:
        task: ``rgb2depth``, ``rgb2infrared`` or ``rgb2event``.
        reference: the reference's ``model_RGB2*.pth``.
        backbone: the SD v1-4 folder (diffusers layout) the reference was trained with; or a preset
            (``tiny``, ``sd14-random``) for tests.
        out: the checkpoint to write.
        trust_pickle: read the reference with ``weights_only=False`` (see :func:`read_reference`).
        overwrite: replace an existing ``out``.
        log: where the summary goes.

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: ``reference``, ``backbone`` or ``out``'s folder does not exist.
        ValueError: ``out`` exists without ``overwrite``; the file does not fit (:class:`ConversionError`).
    """
    from madm_pl.module import MADMModule  # the model stack is only needed here

    started = time.perf_counter()
    reference, out = Path(reference), Path(out)
    get_task(task)
    if out.exists() and not overwrite:
        raise ValueError(f"--out {str(out)!r} exists: pass --overwrite to replace it, or choose another path")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {str(out)!r}: the folder {str(out.parent)!r} does not exist")
    loaded = read_reference(reference, trust_pickle)
    sizes = head_sizes(loaded.state_dict, task)
    # The teacher exists in the default recipe (mode madm, ema on): it receives the reference's EMA weights.
    _check_backbone(backbone)
    module = MADMModule(
        task=task, backbone=backbone, head={"class_path": "madm_pl.models.MADMHead", "init_args": sizes}
    )
    converted = convert_state_dict(loaded.state_dict, module.state_dict())
    checks = check_consistency(loaded.state_dict, module, backbone)
    module.load_state_dict(converted.state_dict, strict=True)
    global_step = 0 if loaded.iteration is None else loaded.iteration + 1
    info = {
        "reference": reference.name,
        "task": task,
        "reference_iteration": loaded.iteration,
        "head": sizes,
        "evaluated_weights": "student",
    }
    # A failed write (full disk, interrupt) leaves no partial file at `out` and an existing one intact.
    with atomic_write(out) as file:
        torch.save(lightning_checkpoint(module.state_dict(), global_step, info), file)

    iteration = (
        "iteration not recorded" if loaded.iteration is None else f"saved at iteration {loaded.iteration}"
    )
    log(f"madm-pl convert: {reference} ({iteration}) -> {out} in {time.perf_counter() - started:.1f} s")
    from_backbone = converted.groups.pop("from --backbone", 0)
    log("  mapped: " + ", ".join(f"{group} {count}" for group, count in converted.groups.items()))
    log(f"  from --backbone: VAE {from_backbone} (fp32)")
    for reason, count in converted.ignored.items():
        log(f"  left out ({count}): {reason}")
    for entry in loaded.top_level:
        log(f"  left out (top-level '{entry}'): {TOP_LEVEL_IGNORED[entry]}")
    for change, count in converted.cast.items():
        log(f"  cast {change}: {count} tensor(s)")
    for line in checks:
        log(f"  checked: {line}")
    paper = sizes == PAPER_HEAD
    log(
        f"  head: {', '.join(f'{k}={v}' for k, v in sizes.items())}"
        + (
            " (the paper's, as configs/rgb2*.yaml)"
            if paper
            else " (NOT the paper's: pass them as --model.init_args.head.init_args.* to test/predict/fit)"
        )
    )
    log(
        "  the reference evaluates the student (clip_project_others, feature_projections, "
        "sem_seg_head_sec_modal; "
        "no EMA), as madm-pl's test/predict do; the EMA weights went to the teacher"
    )
    log(
        f"  next: madm-pl test -c configs/{task}.yaml --ckpt_path {out} "
        f"--model.init_args.backbone={backbone} "
        "--data.init_args.source_root=... --data.init_args.target_root=..."
    )
    return out


def _check_backbone(backbone: str) -> None:
    # Named after this command's option (MADMModule's own message names model.init_args.backbone).
    from madm_pl.models.presets import PRESETS, STACK_PARTS

    if backbone in PRESETS:
        return
    root = Path(backbone).expanduser()
    missing = [part for part in STACK_PARTS if not (root / part).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"--backbone {backbone!r} is not a Stable Diffusion folder in the diffusers layout (missing "
            f"{', '.join(part + '/' for part in missing)}): give a local copy of "
            "CompVis/stable-diffusion-v1-4"
        )


def build_parser() -> argparse.ArgumentParser:
    """The ``madm-pl convert`` parser."""
    parser = argparse.ArgumentParser(
        prog="madm-pl convert",
        description="Turn a released MADM checkpoint (XiaRho/MADM model_RGB2*.pth, a detectron2 file) into a "
        "madm-pl checkpoint for madm-pl test / predict / fit --ckpt_path. Strict: every tensor is mapped or "
        "left out on purpose, or nothing is written.",
    )
    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="the reference model's task")
    parser.add_argument(
        "--reference", required=True, help="the reference checkpoint, e.g. model_RGB2Infrared.pth"
    )
    parser.add_argument(
        "--backbone",
        required=True,
        help="the Stable Diffusion v1-4 folder (diffusers layout) the reference was trained with; its VAE "
        "and CLIP text encoder are used (the reference's copies are only compared with them)",
    )
    parser.add_argument("--out", required=True, help="the madm-pl checkpoint to write (.ckpt)")
    parser.add_argument(
        "--trust_pickle",
        action="store_true",
        help="read the reference with torch.load(weights_only=False): only if weights_only refuses a file "
        "you trust",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``madm-pl convert`` (``cli.main`` dispatches to it).

    Args:
        args: the arguments after ``convert`` (``sys.argv[2:]`` when None).
    """
    options = build_parser().parse_args(sys.argv[2:] if args is None else list(args))
    convert(
        options.task,
        options.reference,
        options.backbone,
        options.out,
        trust_pickle=options.trust_pickle,
        overwrite=options.overwrite,
    )

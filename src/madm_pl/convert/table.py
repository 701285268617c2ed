"""The conversion table: which tensor of the reference's ``MTMADISE`` becomes which madm-pl tensor.

:data:`MAPPING` is the one table (one row per madm-pl module, for the student and for the EMA teacher);
:data:`IGNORED`, :data:`NOT_IN_MADM_PL` and :data:`TOP_LEVEL_IGNORED` name everything of a reference file
that is left out, with the reason. :func:`convert_state_dict` applies the table strictly and
:func:`to_reference_layout` reads it backwards. Pure functions on state dicts (meta tensors work too);
reading and writing files is :mod:`madm_pl.convert.command`. Sources in the reference:
docs/REFERENCE_NOTES.md, "Loading the released checkpoints".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

# ----------------------------------------------------------------------------------------- the table
#: Reference prefixes (``MTMADISE`` attribute paths).
REFERENCE_EXTRACTOR = "backbone.feature_extractor."
REFERENCE_LDM = REFERENCE_EXTRACTOR + "ldm_extractor."
REFERENCE_UNET = REFERENCE_LDM + "unet."
REFERENCE_VAE = REFERENCE_LDM + "vae."

#: Leaf names inside one module, madm-pl -> reference (``None``: the same leaf names on both sides).
Leaves = Mapping[str, str] | None

#: detectron2 ``BottleneckBlock`` (``norm="GN"``): each conv owns its norm as ``<conv>.norm``; the
#: projection shortcut is one conv (present when in != out channels, as in madm-pl's ``Bottleneck``).
BOTTLENECK: Leaves = {
    "conv1.weight": "conv1.weight",
    "norm1.weight": "conv1.norm.weight",
    "norm1.bias": "conv1.norm.bias",
    "conv2.weight": "conv2.weight",
    "norm2.weight": "conv2.norm.weight",
    "norm2.bias": "conv2.norm.bias",
    "conv3.weight": "conv3.weight",
    "norm3.weight": "conv3.norm.weight",
    "norm3.bias": "conv3.norm.bias",
    "shortcut.0.weight": "shortcut.weight",
    "shortcut.1.weight": "shortcut.norm.weight",
    "shortcut.1.bias": "shortcut.norm.bias",
}

#: mmcv ``ConvModule`` with a BN norm: ``conv`` (no bias) and ``bn``; madm-pl's is Sequential(conv, bn, relu).
CONV_BN: Leaves = {
    "0.weight": "conv.weight",
    "1.weight": "bn.weight",
    "1.bias": "bn.bias",
    "1.running_mean": "bn.running_mean",
    "1.running_var": "bn.running_var",
    "1.num_batches_tracked": "bn.num_batches_tracked",
}

#: The reference's ``ClipFeatureProject`` (learnable prompt, its two gates, time embedding and its gate).
CONDITIONING: Leaves = {
    "prompt": "prompt_embed",
    "prompt_gate": "alpha_cond_prompt",
    "uncond_gate": "alpha_uncond_prompt",
    "time_embedding": "time_embed",
    "time_gate": "alpha_cond_time",
}

#: The DAFormer ``MLP`` embedding is an ``nn.Linear`` on flattened pixels, (out, in); madm-pl's is the
#: equivalent 1x1 conv, (out, in, 1, 1): the weight is reshaped (:data:`RESHAPED`).
LINEAR_AS_CONV: Leaves = {"weight": "proj.weight", "bias": "proj.bias"}


@dataclass(frozen=True)
class Row:
    """One module of madm-pl and the reference module it is read from.

    Attributes:
        madm: madm-pl state-dict prefix, with ``{net}`` for ``student`` / ``teacher``.
        reference: reference prefix, with ``{projections}``, ``{head}``, ``{conditioning}`` for the
            student's or the EMA teacher's modules (see :data:`NETS`).
        leaves: leaf names inside the module, madm-pl -> reference; ``None`` keeps the names.
        group: what the row is, for the summary.
    """

    madm: str
    reference: str
    leaves: Leaves
    group: str


#: The reference modules of madm-pl's student and of its EMA teacher (``CMDISE._inti_ema_weights``).
NETS: dict[str, dict[str, str]] = {
    "student": {
        "projections": "backbone.feature_projections",
        "head": "sem_seg_head",
        "conditioning": REFERENCE_EXTRACTOR + "clip_project_others",
    },
    "teacher": {
        "projections": "backbone.ema_feature_projections",
        "head": "ema_sem_seg_head",
        "conditioning": REFERENCE_EXTRACTOR + "ema_clip_project_others",
    },
}

#: THE conversion table: every madm-pl tensor but the VAE (from ``--backbone``) is read through one row.
#: Reference level order: level 0, s3 (stride 8, 320 ch), s4 (stride 16), s5 (stride 32); madm-pl's
#: ``feature_projections`` / ``feature_embeddings`` are [s32, s16, s8]. Level 0 is the decoded image
#: ("s0") with LPLR on (the task configs: madm-pl's ``decoded_*`` modules) and the VAE encoder's stride-4
#: feature ("s2") with LPLR off (the base model config: ``encoder_*``); a module has one or the other.
MAPPING: tuple[Row, ...] = (
    # The fine-tuned UNet: diffusers' UNet2DConditionModel on both sides, names unchanged.
    Row("backbone.unet.", REFERENCE_UNET, None, "UNet"),
    Row("{net}.conditioning.", "{conditioning}.", CONDITIONING, "conditioning"),
    Row("{net}.head.decoded_projection.", "{projections}.0.0.", BOTTLENECK, "projections"),
    Row("{net}.head.encoder_projection.", "{projections}.0.0.", BOTTLENECK, "projections"),
    Row("{net}.head.feature_projections.2.", "{projections}.1.0.", BOTTLENECK, "projections"),
    Row("{net}.head.feature_projections.1.", "{projections}.2.0.", BOTTLENECK, "projections"),
    Row("{net}.head.feature_projections.0.", "{projections}.3.0.", BOTTLENECK, "projections"),
    Row("{net}.head.decoded_embedding.", "{head}.embed_layers.0.", LINEAR_AS_CONV, "head"),
    Row("{net}.head.encoder_embedding.", "{head}.embed_layers.0.", LINEAR_AS_CONV, "head"),
    Row("{net}.head.feature_embeddings.2.", "{head}.embed_layers.1.", LINEAR_AS_CONV, "head"),
    Row("{net}.head.feature_embeddings.1.", "{head}.embed_layers.2.", LINEAR_AS_CONV, "head"),
    Row("{net}.head.feature_embeddings.0.", "{head}.embed_layers.3.", LINEAR_AS_CONV, "head"),
    Row("{net}.head.aspp.0.", "{head}.fuse_layer.aspp_modules.0.", CONV_BN, "head"),
    Row("{net}.head.aspp.1.0.", "{head}.fuse_layer.aspp_modules.1.depthwise_conv.", CONV_BN, "head"),
    Row("{net}.head.aspp.1.1.", "{head}.fuse_layer.aspp_modules.1.pointwise_conv.", CONV_BN, "head"),
    Row("{net}.head.aspp.2.0.", "{head}.fuse_layer.aspp_modules.2.depthwise_conv.", CONV_BN, "head"),
    Row("{net}.head.aspp.2.1.", "{head}.fuse_layer.aspp_modules.2.pointwise_conv.", CONV_BN, "head"),
    Row("{net}.head.aspp.3.0.", "{head}.fuse_layer.aspp_modules.3.depthwise_conv.", CONV_BN, "head"),
    Row("{net}.head.aspp.3.1.", "{head}.fuse_layer.aspp_modules.3.pointwise_conv.", CONV_BN, "head"),
    Row("{net}.head.fuse.", "{head}.fuse_layer.bottleneck.", CONV_BN, "head"),
    Row("{net}.head.classifier.", "{head}.conv_seg.", None, "head"),
)

#: Leaves of :data:`LINEAR_AS_CONV` rows that are reshaped: reference (out, in) <-> madm-pl (out, in, 1, 1).
RESHAPED = frozenset(("weight",))

#: madm-pl tensors that come from ``--backbone``, not from the reference file.
FROM_BACKBONE: dict[str, str] = {
    "backbone.vae.": "the frozen SD VAE, from --backbone (as the reference loads it from its SD folder)",
}

#: Reference entries left out on purpose: prefix -> reason. "checked" ones are compared after mapping.
IGNORED: dict[str, str] = {
    REFERENCE_VAE: "the frozen SD VAE in fp16; madm-pl loads it from --backbone (checked equal at fp16)",
    REFERENCE_LDM + "text_encoder.": "the frozen CLIP text encoder, only used for the empty-prompt "
    "embedding; madm-pl computes that from --backbone",
    REFERENCE_LDM + "uncond_inputs": "the empty-prompt embedding; madm-pl computes it from --backbone "
    "(checked within 1e-3)",
    REFERENCE_LDM + "shared_noise": "the fixed noise, seed 42; madm-pl draws it from model.noise_seed=42 "
    "(checked equal)",
    REFERENCE_EXTRACTOR + "clip_project_rgb.": "the same module as clip_project_others "
    "(same_cond_params=True); checked equal",
    "sem_seg_head_sec_modal.": "the same module as sem_seg_head (sem_seg_head_sec_modal=False); "
    "checked equal",
}

#: Reference entries that are the same module under a second name: alias prefix -> mapped prefix.
ALIASES: dict[str, str] = {
    REFERENCE_EXTRACTOR + "clip_project_rgb.": REFERENCE_EXTRACTOR + "clip_project_others.",
    "sem_seg_head_sec_modal.": "sem_seg_head.",
}

#: Parts of the reference that the released recipes switch off and madm-pl does not have: a key holding
#: one of these is refused with the reason (it is no longer "unknown", but it cannot be converted).
NOT_IN_MADM_PL: dict[str, str] = {
    ".lora_": "LoRA adapters (model.lora_configs; the released recipes set it to [] and madm-pl has none)",
    ".base_layer.": "the base weight of a LoRA-wrapped layer (see the LoRA adapters)",
    REFERENCE_LDM + "ema_unet.": "an EMA copy of the UNet (model.ema_w_unet; off in the released recipes: "
    "madm-pl's teacher shares the student's UNet)",
    "ori_unet.": "the frozen feature-distance copy (model.fd; off in the released recipes)",
    REFERENCE_EXTRACTOR + "clip.": "a CLIP image encoder (clip_state != 'no'; 'no' in the released recipes)",
    REFERENCE_LDM + "pixel_unshuffle_layer.": "the pixel-shuffle input branch (concat_pixel_shuffle; off)",
}

#: Top-level entries of a detectron2 checkpoint besides ``model``, all left out on purpose.
TOP_LEVEL_IGNORED: dict[str, str] = {
    "iteration": "the 0-based iteration the file was saved at; written as global_step = iteration + 1",
    "trainer": "the reference's training state (iteration, AdamW moments, GradScaler, LR-scheduler hook); "
    "madm-pl does not resume the reference's run (a fine-tuning run starts a fresh AdamW)",
    "optimizer": "optimiser state (see 'trainer')",
    "scheduler": "LR-scheduler state (see 'trainer')",
}

#: How many keys an error lists per kind before "... and N more".
LISTED_KEYS = 12


class ConversionError(ValueError):
    """The reference file does not fit the table; the message names the keys and nothing was written."""


# ----------------------------------------------------------------------------------------- mapping
def expand_mapping() -> list[tuple[str, str, Leaves, str]]:
    """The table with ``{net}`` and the reference roots filled in for the student and the EMA teacher.

    Returns:
        (madm-pl prefix, reference prefix, leaves, group) per module, UNet first.
    """
    rows = []
    for row in MAPPING:
        if "{net}" not in row.madm:
            rows.append((row.madm, row.reference, row.leaves, row.group))
            continue
        for net, roots in NETS.items():
            rows.append(
                (row.madm.format(net=net), row.reference.format(**roots), row.leaves, f"{row.group} ({net})")
            )
    return rows


def _find_row(key: str, rows: Sequence[tuple[str, str, Leaves, str]]) -> tuple[str, str, Leaves, str] | None:
    matches = [row for row in rows if key.startswith(row[0])]
    return max(matches, key=lambda row: len(row[0])) if matches else None


def reference_key(madm_key: str, rows: Sequence[tuple[str, str, Leaves, str]] | None = None) -> str | None:
    """The reference key a madm-pl tensor is read from (``None`` when no row covers it).

    Args:
        madm_key: a madm-pl state-dict key, e.g. ``student.head.feature_projections.2.norm1.weight``.
        rows: :func:`expand_mapping` (computed when None).

    Returns:
        e.g. ``backbone.feature_projections.1.0.conv1.norm.weight``; ``None`` also for a leaf the row's
        leaf table does not name.
    """
    row = _find_row(madm_key, expand_mapping() if rows is None else rows)
    if row is None:
        return None
    prefix, reference_prefix, leaves, _ = row
    leaf = madm_key[len(prefix) :]
    if leaves is None:
        return reference_prefix + leaf
    return reference_prefix + leaves[leaf] if leaf in leaves else None


def _reshaped(row_leaves: Leaves, leaf: str) -> bool:
    return row_leaves is LINEAR_AS_CONV and leaf in RESHAPED


def _to_madm_layout(tensor: Tensor, reshape: bool) -> Tensor:
    # (out, in) -> (out, in, 1, 1); anything else is left as it is and then fails the shape check.
    return tensor.reshape(*tensor.shape, 1, 1) if reshape and tensor.dim() == 2 else tensor


def listed(items: Sequence[str]) -> str:
    """Keys for an error message: one per line, the first :data:`LISTED_KEYS`, then how many more."""
    shown = "\n    ".join(items[:LISTED_KEYS])
    more = f"\n    ... and {len(items) - LISTED_KEYS} more" if len(items) > LISTED_KEYS else ""
    return f"\n    {shown}{more}"


def _ignored_reason(key: str) -> str | None:
    for prefix, reason in IGNORED.items():
        if key.startswith(prefix):
            return reason
    return None


def _refusal(key: str) -> str | None:
    for marker, reason in NOT_IN_MADM_PL.items():
        # ".lora_" and ".base_layer." may sit anywhere inside the UNet; the others are prefixes.
        found = marker in key if marker.startswith(".") else key.startswith(marker)
        if found:
            return reason
    return None


@dataclass
class Converted:
    """What :func:`convert_state_dict` gives.

    Attributes:
        state_dict: every key of the madm-pl target, the reference's tensors in madm-pl's layout and dtype.
        groups: tensors per group ("UNet", "head (teacher)", ... , "from --backbone").
        ignored: reference keys left out on purpose, per reason.
        cast: "float16 -> float32"-style dtype changes and how many tensors each.
    """

    state_dict: dict[str, Tensor]
    groups: dict[str, int]
    ignored: dict[str, int]
    cast: dict[str, int]


def convert_state_dict(reference: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> Converted:
    """Map a reference ``MTMADISE`` state dict onto a madm-pl ``MADMModule`` state dict.

    Pure: works on meta tensors too (names, shapes and dtypes only), so the table can be checked at SD
    v1-4's size without the memory.

    Args:
        reference: the reference state dict (``checkpoint["model"]``), keys without a ``module.`` prefix.
        target: the madm-pl module's ``state_dict()``; gives the keys, shapes and dtypes to produce, and the
            tensors of :data:`FROM_BACKBONE` (the VAE).

    Returns:
        The converted state dict (loadable with ``strict=True``) and counts for the summary.

    Raises:
        ConversionError: reference keys in neither :data:`MAPPING` nor :data:`IGNORED`, madm-pl keys with
            no reference tensor, or shapes that do not fit; the message lists them all.
    """
    rows = expand_mapping()
    state: dict[str, Tensor] = {}
    consumed: set[str] = set()
    groups: dict[str, int] = {}
    cast: dict[str, int] = {}
    no_row, missing, mismatched = [], [], []
    for key, expected in target.items():
        owner = next((prefix for prefix in FROM_BACKBONE if key.startswith(prefix)), None)
        if owner is not None:
            state[key] = expected
            groups["from --backbone"] = groups.get("from --backbone", 0) + 1
            continue
        row = _find_row(key, rows)
        source = reference_key(key, rows)
        if row is None or source is None:
            no_row.append(key)
            continue
        if source not in reference:
            missing.append(f"{source} -> {key}")
            continue
        consumed.add(source)
        leaf = key[len(row[0]) :]
        tensor = _to_madm_layout(reference[source], _reshaped(row[2], leaf))
        if tensor.shape != expected.shape:
            mismatched.append(
                f"{source} {tuple(reference[source].shape)} -> {key} expects {tuple(expected.shape)}"
            )
            continue
        if tensor.dtype != expected.dtype:
            change = (
                f"{str(tensor.dtype).removeprefix('torch.')} -> {str(expected.dtype).removeprefix('torch.')}"
            )
            cast[change] = cast.get(change, 0) + 1
        state[key] = tensor.to(expected.dtype)
        groups[row[3]] = groups.get(row[3], 0) + 1
    unmapped, refused = [], []
    ignored: dict[str, int] = {}
    for key in reference:
        if key in consumed:
            continue
        reason = _ignored_reason(key)
        if reason is not None:
            ignored[reason] = ignored.get(reason, 0) + 1
        elif (refusal := _refusal(key)) is not None:
            refused.append(f"{key}: {refusal}")
        else:
            unmapped.append(key)
    problems = []
    if unmapped:
        problems.append(
            f"{len(unmapped)} reference tensor(s) in neither MAPPING nor IGNORED (unknown):"
            + listed(unmapped)
        )
    if refused:
        problems.append(
            f"{len(refused)} reference tensor(s) of parts madm-pl does not have:{listed(refused)}"
        )
    if missing:
        problems.append(
            f"{len(missing)} madm-pl tensor(s) whose reference tensor is missing:{listed(missing)}"
        )
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es):{listed(mismatched)}")
    if no_row:
        problems.append(
            f"{len(no_row)} madm-pl tensor(s) that no row of MAPPING covers (madm-pl changed after the "
            f"table was written: extend MAPPING in madm_pl/convert.py):{listed(no_row)}"
        )
    if problems:
        raise ConversionError("\n  ".join(["the reference state dict does not fit madm-pl:", *problems]))
    return Converted(state, groups, ignored, cast)


def to_reference_layout(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The table read backwards: a madm-pl state dict in the reference's names and layout.

    Gives every mapped tensor, the aliases the reference saves twice (:data:`ALIASES`) and the VAE in
    fp16 (as the reference keeps it). The reference's CLIP text encoder, ``uncond_inputs`` and
    ``shared_noise`` are not in a madm-pl state dict and are not produced. Used to test that the table
    is a bijection (madm-pl -> reference -> madm-pl is the identity).

    Args:
        state: a madm-pl ``MADMModule.state_dict()``.

    Returns:
        Reference key -> tensor.
    """
    rows = expand_mapping()
    reference: dict[str, Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("backbone.vae."):
            reference[REFERENCE_VAE + key.removeprefix("backbone.vae.")] = tensor.half()
            continue
        row = _find_row(key, rows)
        source = reference_key(key, rows)
        if row is None or source is None:
            raise ConversionError(f"no row of MAPPING covers the madm-pl tensor {key}")
        reshape = _reshaped(row[2], key[len(row[0]) :])
        reference[source] = tensor.flatten(1) if reshape and tensor.dim() == 4 else tensor
    for alias, mapped in ALIASES.items():
        for key in [k for k in reference if k.startswith(mapped)]:
            reference[alias + key.removeprefix(mapped)] = reference[key]
    return reference

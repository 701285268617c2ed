"""The MADM training recipe as a LightningModule (METHOD.md §4-§6).

The student is the learnable prompt/time conditioning plus the segmentation head; the diffusion
backbone (frozen VAE, fine-tuned UNet) is shared with the teacher, which is an EMA copy of the
student's conditioning and head (METHOD.md §4.1). ``training_step`` follows METHOD.md §4 in order.
"""

from __future__ import annotations

import copy
import functools
import importlib
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn

from madm_pl.evaluation import SegmentationScores, log_scores
from madm_pl.labels import get_task
from madm_pl.method.augment import COLOR_JITTERS, strong_augment
from madm_pl.method.classmix import classmix_masks, mix
from madm_pl.method.dplg import dplg_timestep, draw_dplg_t0
from madm_pl.method.ema import ema_alpha, ema_update
from madm_pl.method.lplr import lplr_loss, painted_label
from madm_pl.method.metrics import pixel_accuracy
from madm_pl.method.pseudo_label import PseudoLabels, mixed_weight, pseudo_labels
from madm_pl.method.schedule import lr_factor
from madm_pl.method.segmentation import segmentation_loss
from madm_pl.models import DiffusionBackbone, HeadFactory, MADMHead, PromptConditioning
from madm_pl.optim import OPTIMIZERS, AdamWImplementation, OptimizerName, build_adamw, parameter_groups

Mode = Literal["madm", "source_only", "oracle"]
_VAE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: The trainer precision each reduced-precision VAE needs (its weights meet fp32 tensors only under it).
_VAE_PRECISION = {"float16": "16-mixed", "bfloat16": "bf16-mixed"}


def head_finest_level(lplr_source: bool, lplr_target: bool) -> Literal["decoded", "vae_encoder"]:
    """The head's finest level for an LPLR setting (METHOD.md §3, "Finest level").

    The reference ties the decode to LPLR: any ``--vae_decoder_loss`` (``s``, ``t`` or ``st``) sets its
    backbone's decode flag and makes the decode level 0 of the head (``main.py`` 617-630); without it,
    level 0 is the VAE encoder's stride-4 feature (``mtmadise_multi_lora.py``: ``encoder_block_indices=[5]``).

    Returns:
        ``"decoded"`` when either LPLR term is on, else ``"vae_encoder"``.
    """
    return "decoded" if (lplr_source or lplr_target) else "vae_encoder"


def head_factory(head: Any) -> HeadFactory:
    """The ``HeadFactory`` of ``model.head``: ``MADMHead`` for None, the class of a ``{"class_path": ...,
    "init_args": {...}}`` mapping (as ``cli.instantiate`` and the hyper-parameters hold it) with its
    options, or ``head`` itself (a class or ``functools.partial``, as the CLI gives it).

    Raises:
        ValueError: a ``class_path`` that does not import (naming model.init_args.head).
    """
    if head is None:
        return MADMHead
    if not (isinstance(head, Mapping) or hasattr(head, "class_path")):
        return head
    spec = dict(head) if isinstance(head, Mapping) else vars(head)
    module, _, name = str(spec.get("class_path", "")).rpartition(".")
    try:
        class_ = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            f"model.init_args.head.class_path={spec.get('class_path')!r} does not import ({error}); give the "
            "dotted path of a head class (madm_pl.models.MADMHead)"
        ) from None
    init_args = spec.get("init_args") or {}
    init_args = init_args.as_dict() if hasattr(init_args, "as_dict") else dict(init_args)
    return functools.partial(class_, **init_args)


def head_description(head: Any) -> Any:
    """``model.head`` as plain data for the hyper-parameters: unchanged when it is None or a config
    (``class_path`` + ``init_args``, as the CLI stores it); a class as ``{"class_path": ...}``; a
    ``functools.partial`` of one (how jsonargparse and Python callers give options) as ``{"class_path":
    ..., "init_args": {...}}``; anything else by its ``repr``."""
    if head is None or isinstance(head, (dict, str)) or hasattr(head, "class_path"):
        return head
    init_args: dict[str, Any] = {}
    while isinstance(head, functools.partial):
        init_args = {**head.keywords, **init_args}
        classes = [arg for arg in head.args if isinstance(arg, type)]
        head = classes[-1] if classes else head.func
    if isinstance(head, type):
        class_path = f"{head.__module__}.{head.__qualname__}"
        return {"class_path": class_path, "init_args": init_args} if init_args else {"class_path": class_path}
    return repr(head)


class Student(nn.Module):
    """What the teacher averages: the prompt/time conditioning and the head (METHOD.md §4.1)."""

    def __init__(self, conditioning: PromptConditioning, head: nn.Module) -> None:
        super().__init__()
        self.conditioning = conditioning
        self.head = head


class MADMModule(LightningModule):
    """MADM: teacher-student self-training with DPLG and LPLR on a diffusion backbone.

    Args:
        task: ``rgb2depth``, ``rgb2infrared`` or ``rgb2event`` (sets classes and palette).
        num_classes: number of classes; linked from the data module by the CLI, checked against ``task``.
        backbone: ``"tiny"``, ``"sd14-random"`` or a local folder in the diffusers layout (SD v1-4, a
            prior).
        noise_seed: seed of the fixed diffusion noise (reference: 42).
        unet_gradient_checkpointing: recompute UNet activations in backward (memory for time).
        compile_unet: ``torch.compile`` the UNet (GPU speed; compile time on first steps).
        vae_dtype: dtype of the frozen VAE's weights: ``float32`` (default), ``float16`` (the
            reference's; needs ``trainer.precision: 16-mixed``) or ``bfloat16`` (convolution and linear
            weights in bf16, norms fp32; needs ``bf16-mixed``, under which it gives the fp32 VAE's outputs
            bit for bit at half its memory: the 24 GB mode's). The precision is checked at setup.
        head: the segmentation head (projections + decoder), in a config a ``class_path`` + ``init_args``
            (``models.HeadFactory``): the module builds it with the backbone's tap and VAE-encoder channels,
            the task's classes and the finest level LPLR decides (``head_finest_level``); ``init_args`` are
            the head's own options. None: ``models.MADMHead`` (DAFormer) with its defaults, the paper's
            widths (embed_dim 256, projection_channels 512, decoded_projection_channels 128,
            bottleneck_width 128) without activation checkpointing.
        mode: ``madm`` (adaptation), ``source_only`` (source loss only) or ``oracle`` (the upper bound:
            supervised on labelled target training images only; needs ``data.target_train_labels``).
        classmix: mix source and target with ClassMix masks (off: the student trains on the target image).
        classmix_include_ignore: ClassMix draws the ignore label 255 like a class, as the reference does
            (``torch.unique`` of the source label, 255 included), so ignored source regions are pasted about
            half the time and their pixels count in no loss; off: only train ids are drawn.
        color_jitter: the strong augmentation's colour jitter: ``kornia-0.6`` (the reference's environment:
            additive brightness, multiplicative contrast, saturation scaled in HSV) or ``kornia-0.9``
            (current kornia's PIL-aligned blends); METHOD.md §4.3, REFERENCE_NOTES.md §3.
        ema: the teacher is an EMA copy of the student (off: the student makes its own pseudo-labels).
        dplg: noise the teacher's target latent at the DPLG timestep (off: t = 0).
        lplr_source: LPLR latent regression on the source palette image.
        lplr_target: LPLR latent regression on the mixed pseudo-label palette image. LPLR is on when
            either term is (the event recipe: the source term only); then, as in the reference, the
            backbone decodes the UNet output and the head reads the decode as its full-resolution finest
            level. With both off, nothing is decoded and the head's finest level is the VAE encoder's
            stride-4 feature, its logits upsampled to the image (METHOD.md §3, "Finest level").
        lplr_source_weight: weight of the source LPLR term (paper: 1, event task: 20).
        lplr_target_weight: weight of the target LPLR term (paper: 1).
        dplg_t0: base of the DPLG start timestep, drawn from {t0, t0 + 1} each iteration (paper 50, depth 60).
        dplg_t_end: iteration at which the DPLG timestep reaches 0 (paper 8000, depth 5000).
        ema_max_alpha: the EMA momentum cap (0.999).
        pseudo_label_threshold: confidence for the pseudo-label weight q (0.968).
        lr: AdamW learning rate of the UNet and the conditioning (paper: 5e-6 for every parameter).
        head_lr_multiplier: the head's (projections + DAFormer head) learning rate is ``lr`` times this
            (paper: 1; DAFormer trains its head at 10x the backbone's rate). The head starts from scratch
            while the UNet is pretrained.
        weight_decay: AdamW weight decay, 0 for norm layers and biases (0.05).
        seed: seed of the per-step random streams (ClassMix, augmentation, DPLG draws, dropout).
        optimizer: where AdamW keeps its state (``madm_pl.optim``; docs/PAPER_RECIPES.md §6): ``adamw``
            (on the device, the recipe's), ``adamw-offload`` (state and fp32 masters in host memory, same
            numbers: the 24 GB mode), ``adamw-8bit`` (torchao's 8-bit moments: an approximate deviation,
            docs/DEVIATIONS.md) or ``adamw-sharded`` (ZeRO under DDP: each GPU keeps half the state).
        adamw_implementation: torch's AdamW kernels, ``foreach`` (the recipe's) or ``fused`` (one kernel;
            differs from foreach in the last bits): a switch to measure speed with.
    """

    #: Options that moved (issue 29): old name -> its place under ``model.init_args``, for the CLI's
    #: error on a config written before (``cli_errors``).
    moved_options: ClassVar[dict[str, str]] = {
        "head_embed_dim": "head.init_args.embed_dim",
        "head_projection_channels": "head.init_args.projection_channels",
        "head_decoded_channels": "head.init_args.decoded_projection_channels",
        "head_bottleneck_width": "head.init_args.bottleneck_width",
        "head_activation_checkpointing": "head.init_args.activation_checkpointing",
    }

    def __init__(
        self,
        task: str = "rgb2infrared",
        num_classes: int | None = None,
        backbone: str = "tiny",
        noise_seed: int = 42,
        unet_gradient_checkpointing: bool = False,
        compile_unet: bool = False,
        vae_dtype: Literal["float32", "float16", "bfloat16"] = "float32",
        head: HeadFactory | None = None,
        mode: Mode = "madm",
        classmix: bool = True,
        classmix_include_ignore: bool = True,
        color_jitter: Literal["kornia-0.6", "kornia-0.9"] = "kornia-0.6",
        ema: bool = True,
        dplg: bool = True,
        lplr_source: bool = True,
        lplr_target: bool = True,
        lplr_source_weight: float = 1.0,
        lplr_target_weight: float = 1.0,
        dplg_t0: int = 50,
        dplg_t_end: int = 8000,
        ema_max_alpha: float = 0.999,
        pseudo_label_threshold: float = 0.968,
        lr: float = 5e-6,
        head_lr_multiplier: float = 1.0,
        weight_decay: float = 0.05,
        seed: int = 42,
        optimizer: OptimizerName = "adamw",
        adamw_implementation: AdamWImplementation = "foreach",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # A head given in Python (a class or functools.partial) is stored by name and options, so that a
        # checkpoint's hyper-parameters stay plain data (they are loaded with weights_only=True).
        self.hparams["head"] = head_description(self.hparams.get("head"))
        self.task = get_task(task)
        if num_classes is not None and num_classes != self.task.num_classes:
            raise ValueError(
                f"model.num_classes={num_classes} does not match task {task!r} "
                f"({self.task.num_classes} classes); fix model.num_classes or model.task"
            )
        if mode not in ("madm", "source_only", "oracle"):
            raise ValueError(f"model.mode={mode!r}: expected 'madm', 'source_only' or 'oracle'")
        self.mode = mode
        if color_jitter not in COLOR_JITTERS:
            raise ValueError(f"model.color_jitter={color_jitter!r}: expected one of {list(COLOR_JITTERS)}")
        # The decode follows LPLR, as in the reference (head_finest_level).
        self.lplr = head_finest_level(lplr_source, lplr_target) == "decoded"

        if vae_dtype not in _VAE_DTYPES:
            raise ValueError(f"model.vae_dtype={vae_dtype!r}: expected one of {list(_VAE_DTYPES)}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"model.optimizer={optimizer!r}: expected one of {list(OPTIMIZERS)}")
        if adamw_implementation not in ("foreach", "fused"):
            raise ValueError(
                f"model.adamw_implementation={adamw_implementation!r}: expected 'foreach' or 'fused'"
            )
        try:
            self.backbone = DiffusionBackbone(
                backbone,
                noise_seed=noise_seed,
                unet_gradient_checkpointing=unet_gradient_checkpointing,
                vae_dtype=_VAE_DTYPES[vae_dtype],
                decode_output=self.lplr,
            )
        except (FileNotFoundError, ValueError) as error:  # a missing or unloadable stack folder
            raise type(error)(
                f"model.backbone={backbone!r}: {error}; set --model.init_args.backbone (make: SD=<folder>)"
            ) from None
        conditioning = PromptConditioning(
            context_dim=self.backbone.context_dim,
            time_embed_dim=self.backbone.time_embed_dim,
            num_tokens=self.backbone.num_tokens,
        )
        # The head's shape from the backbone, the task and LPLR (its finest level); the rest from the config.
        build_head = head_factory(head)
        self.student = Student(
            conditioning,
            build_head(
                feature_channels=self.backbone.feature_channels,
                num_classes=self.task.num_classes,
                finest_level=head_finest_level(lplr_source, lplr_target),
                encoder_channels=self.backbone.encoder_feature_channels,
            ),
        )
        # The teacher is a separate copy only when it is an EMA; it never enters the optimiser.
        self.teacher = copy.deepcopy(self.student) if (ema and mode == "madm") else None
        if self.teacher is not None:
            self.teacher.requires_grad_(False)
        self.register_buffer("palette", torch.from_numpy(self.task.palette), persistent=False)
        # The scores of the target test split (evaluation.py), one per stage.
        self.val_scores = SegmentationScores(self.task.num_classes)
        self.test_scores = SegmentationScores(self.task.num_classes)
        # Filled at the end of validate/test for the callbacks (IoU table, confusion matrix image).
        self.last_scores: dict[str, Any] = {}
        self._checkpoint_iteration = 0

    # ----------------------------------------------------------------------------------- model
    def setup(self, stage: str) -> None:
        # An fp16 VAE hands fp16 tensors to the fp32 head and losses: fp16 autocast reconciles them (bf16
        # autocast does not on the CPU, whose GroupNorm then meets bf16 inputs and fp16 weights).
        # A bf16 VAE's convolutions meet fp32 inputs only under bf16 autocast.
        precision = str(self.trainer.precision)
        vae_dtype = self.hparams.vae_dtype
        needed = _VAE_PRECISION.get(vae_dtype)
        if needed is not None and precision != needed:
            pairing = " (the reference's pairing)" if vae_dtype == "float16" else ""
            cpu = " (on a CPU Lightning runs 16-mixed as bf16-mixed)" if vae_dtype == "float16" else ""
            raise ValueError(
                f"model.vae_dtype={vae_dtype!r} needs trainer.precision={needed!r}{pairing}, "
                f"but trainer.precision={precision!r}{cpu}; "
                f"set trainer.precision: {needed}{' on a GPU' if cpu else ''}, or model.vae_dtype: float32"
            )

    def configure_model(self) -> None:
        if self.hparams.compile_unet and not getattr(self, "_unet_compiled", False):
            # In place (nn.Module.compile): the state_dict keys stay those of an eager run, so a
            # checkpoint loads with or without compile_unet (torch.compile's wrapper adds "_orig_mod.").
            self.backbone.unet.compile()
            self._unet_compiled = True

    def segment(self, net: Student, image: torch.Tensor, timestep: int = 0) -> tuple[torch.Tensor, Any]:
        """Logits of ``net`` (student or teacher) for images in [0,1].

        Args:
            net: the student or the EMA teacher (conditioning + head).
            image: (B,3,H,W) float in [0,1].
            timestep: diffusion timestep of the latent noise and of the UNet (METHOD.md §3).

        Returns:
            logits (B,C,H,W) float at the input size, and the backbone output (UNet latent, taps, the
            head's finest level).
        """
        cond, time_offset = net.conditioning(self.backbone.uncond)
        out = self.backbone(image * 2 - 1, timestep, cond, time_offset)
        return net.head(out.features, out.finest, image.shape[-2:]), out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Inference (METHOD.md §4.7): (B,3,H,W) in [0,1] -> (B,C,H,W) student logits at t = 0."""
        return self.segment(self.student, image)[0]

    def palette_latent(self, label: torch.Tensor) -> torch.Tensor:
        """LPLR target: the label painted with the palette, VAE-encoded. (B,H,W) -> (B,4,H/8,W/8)."""
        return self.backbone.encode(painted_label(label, self.palette))

    @property
    def pseudo_labeller(self) -> Student:
        """The network that makes the pseudo-labels: the EMA teacher, or the student itself with ema off."""
        return self.teacher if self.teacher is not None else self.student

    def pseudo_label_timestep(self, iteration: int, generator: torch.Generator | None = None) -> int:
        """The pseudo-labeller's diffusion timestep at ``iteration`` (DPLG, METHOD.md §4.3); 0 with dplg off.

        Args:
            iteration: 0-based optimiser step.
            generator: draws t0 from {dplg_t0, dplg_t0 + 1} as the training step does; without one,
                t0 = dplg_t0 (the deterministic value shown in the validation pictures).
        """
        hp = self.hparams
        if not hp.dplg:
            return 0
        t0 = hp.dplg_t0 if generator is None else draw_dplg_t0(hp.dplg_t0, generator)
        return dplg_timestep(iteration, t0, hp.dplg_t_end)

    @torch.no_grad()
    def pseudo_labels(
        self, image: torch.Tensor, iteration: int, generator: torch.Generator | None = None
    ) -> tuple[PseudoLabels, int]:
        """Pseudo-labels of images from the pseudo-labeller at the DPLG timestep of ``iteration`` (§4.4).

        The one rule for pseudo-labels and their confident pixels: the training step calls it with its
        generator (t0 drawn from {dplg_t0, dplg_t0 + 1}), the validation pictures without (t0 = dplg_t0).
        It runs in the module's current train/eval mode: train mode in the training step, as in the
        reference (BatchNorm batch statistics, dropout active), eval mode during validation.

        Args:
            image: (B,3,H,W) float in [0,1].
            iteration: 0-based optimiser step whose timestep to use.
            generator: the training step's random stream, or None for t0 = dplg_t0.

        Returns:
            ``PseudoLabels`` (label (B,H,W) int64, confident (B,H,W) bool, weight q (B,)) at the
            ``pseudo_label_threshold``, and the timestep used.

        Raises:
            ValueError: in ``source_only`` and ``oracle`` modes, which make no pseudo-labels.
        """
        if self.mode != "madm":
            raise ValueError(f"model.mode={self.mode!r} makes no pseudo-labels; only mode 'madm' does")
        timestep = self.pseudo_label_timestep(iteration, generator)
        logits, _ = self.segment(self.pseudo_labeller, image, timestep)
        return pseudo_labels(logits, self.hparams.pseudo_label_threshold), timestep

    # -------------------------------------------------------------------------------- training
    @property
    def iteration(self) -> int:
        """0-based optimiser-step counter (METHOD.md §4: the counter starts at 0)."""
        return self.trainer.global_step

    def _generator(self, batch_idx: int) -> torch.Generator:
        """The random stream of one micro-batch, derived from (seed, iteration, micro-batch, rank).

        Deriving every stream from the step makes a resumed run draw exactly what an uninterrupted run
        draws, whatever happened to the global RNG in between (3 + resume + 3 steps = 6 steps).
        """
        micro = batch_idx % self.trainer.accumulate_grad_batches
        # Each process draws its own stream, as the reference seeds 42 + rank on each GPU.
        seed = ((self.hparams.seed * 1_000_003 + self.iteration) * 16 + micro) * 64 + self.global_rank
        torch.manual_seed(seed)  # dropout in the head and BN-free layers draws from the global stream
        return torch.Generator().manual_seed(seed)

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # METHOD.md §4.1: the EMA update happens before the step, once per optimiser step.
        first_micro_batch = batch_idx % self.trainer.accumulate_grad_batches == 0
        if self.teacher is not None and first_micro_batch:
            alpha = ema_alpha(self.iteration, self.hparams.ema_max_alpha)
            ema_update(self.teacher, self.student, alpha)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any] | None:
        generator = self._generator(batch_idx)
        hp = self.hparams
        losses: dict[str, torch.Tensor] = {}
        visuals: dict[str, torch.Tensor] = {}
        if self.mode == "oracle":
            # The upper bound: supervised on labelled target images only (no source, no adaptation).
            if "target_label" not in batch:
                raise ValueError(
                    "model.mode='oracle' trains on labelled target images, but the training batches hold "
                    "no 'target_label': set data.target_train_labels: true (the target dataset must have "
                    "its training labels), or use mode 'madm' or 'source_only'"
                )
            target_logits, _ = self.segment(self.student, batch["target_image"])
            losses["target"] = segmentation_loss(target_logits, batch["target_label"])
            visuals.update(
                target_image=batch["target_image"],
                target_label=batch["target_label"],
                target_prediction=target_logits,
            )
        else:
            # 2. Source: supervised CE (+ LPLR on the painted source label).
            source_image, source_label = batch["source_image"], batch["source_label"]
            source_logits, source_out = self.segment(self.student, source_image)
            losses["source"] = segmentation_loss(source_logits, source_label)
            if hp.lplr_source:
                target_latent = self.palette_latent(source_label)
                losses["lplr_source"] = hp.lplr_source_weight * lplr_loss(
                    source_out.latent, target_latent, source_label
                )
            visuals.update(
                source_image=source_image, source_label=source_label, source_prediction=source_logits
            )
            if source_out.decoded is not None:  # decoded only with LPLR on
                visuals["lplr_label_image"] = source_out.decoded
            if self.mode == "madm":
                losses.update(self._target_losses(batch, generator, visuals))

        loss = sum(losses.values())
        if not torch.isfinite(loss):
            # Skipping keeps the weights finite; no checkpoint with NaN weights can follow.
            rank_zero_warn(f"non-finite loss at iteration {self.iteration} ({_floats(losses)}); step skipped")
            self.log("train/skipped_steps", 1.0, reduce_fx="sum")
            return None
        for name, value in losses.items():
            self.log(f"train/loss_{name}", value.detach())
        self.log("train/loss", loss.detach(), prog_bar=True)
        return {"loss": loss, "visuals": {k: v.detach() for k, v in visuals.items()}}

    def _target_losses(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, visuals: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """METHOD.md §4.3 to §4.5: ClassMix, DPLG pseudo-labels from the teacher, the mixed target losses."""
        hp = self.hparams
        source_image, source_label = batch["source_image"], batch["source_label"]
        target_image = batch["target_image"]

        # 3. ClassMix masks (per sample, half of the source classes).
        mask = classmix_masks(source_label, generator, hp.classmix_include_ignore) if hp.classmix else None

        # 4. Pseudo-labels from the teacher on the clean target, noised at the DPLG timestep. The teacher
        # stays in train mode, as in the reference: Lightning keeps the whole module in train mode in fit.
        pseudo, timestep = self.pseudo_labels(target_image, self.iteration, generator)
        self.log("train/dplg_timestep", float(timestep))
        self.log("train/pseudo_label_weight", pseudo.weight.mean())
        if "target_label" in batch:
            # Only with data.target_train_labels (a diagnostic; the method never reads these labels).
            accuracy = pixel_accuracy(pseudo.label, batch["target_label"])
            self.log("train/pseudo_label_accuracy", accuracy)

        if mask is not None:
            mixed_image = self.mix_images(mask, source_image, target_image)
            mixed_label = mix(mask, source_label, pseudo.label)
            pixel_weight = mixed_weight(mask, pseudo.weight)
        else:
            mixed_image, mixed_label = target_image, pseudo.label
            pixel_weight = pseudo.weight.view(-1, 1, 1).expand_as(pseudo.label)
        mixed_image = self.augment(mixed_image, generator)

        # 5. Student on the mixed image: weighted CE (+ LPLR on the painted mixed label, weighted by q).
        mixed_logits, mixed_out = self.segment_mixed(mixed_image)
        losses = {"target": segmentation_loss(mixed_logits, mixed_label, pixel_weight)}
        if hp.lplr_target:
            target_latent = self.palette_latent(mixed_label)
            losses["lplr_target"] = hp.lplr_target_weight * lplr_loss(
                mixed_out.latent, target_latent, mixed_label, pseudo.weight
            )
        visuals.update(
            target_image=target_image,
            pseudo_label=pseudo.label,
            confidence_mask=pseudo.confident,
            mixed_image=mixed_image,
            mixed_label=mixed_label,
            mixed_prediction=mixed_logits,
        )
        return losses

    # Seams of the mixed pass (METHOD.md §4.3, §4.5): a study overrides one of them in a subclass to
    # change one ingredient (benchmarks/q_zero_ablation.py); the recipe is what they do here.
    def mix_images(
        self, mask: torch.Tensor, source_image: torch.Tensor, target_image: torch.Tensor
    ) -> torch.Tensor:
        """The ClassMix image (B,3,h,w): source pixels where ``mask`` (B,1,h,w) is 1, target elsewhere."""
        return mix(mask, source_image, target_image)

    def augment(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The strong augmentation (colour jitter, blur) of the mixed image (B,3,h,w) in [0,1]."""
        return strong_augment(image, generator, color_jitter=self.hparams.color_jitter)

    def segment_mixed(self, image: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The student's pass on the (augmented) mixed image: ``segment(self.student, image)``."""
        return self.segment(self.student, image)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # A finite loss can still give non-finite gradients (fp32/bf16 have no GradScaler to catch it):
        # drop them so AdamW skips every parameter this step instead of writing NaN into the weights.
        # With 16-mixed, Lightning's GradScaler has unscaled the gradients before this hook and skips
        # the step itself when they overflow (then lowers the scale): routine, left to the scaler.
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # One device-to-host sync for the whole model, not one per parameter.
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            rank_zero_warn(f"non-finite gradient at iteration {self.iteration}; optimiser step skipped")
            optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: dict[str, Any], scores: SegmentationScores) -> None:
        scores.update(self(batch["image"]).argmax(1), batch["label"], batch.get("in_reference_share"))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_scores)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_scores)

    def _finish_evaluation(self, stage: str, scores: SegmentationScores) -> None:
        result = scores.compute()  # summed over all processes first
        scores.reset()
        log_scores(self.log, stage, self.task.classes, result)
        # validate/test from a checkpoint start at global_step 0: report the checkpoint's iteration.
        fitting = self.trainer.state.fn == "fit"
        iteration = self.global_step if fitting else self._checkpoint_iteration
        self.last_scores = {"stage": stage, **result, "iteration": iteration}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._checkpoint_iteration = checkpoint.get("global_step", 0)

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val", self.val_scores)

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test", self.test_scores)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Label maps for a folder of target images: (B,H,W) int64 at the network input size."""
        return {"prediction": self(batch["image"]).argmax(1), "name": batch["name"], "size": batch["size"]}

    # ----------------------------------------------------------------------------- optimiser
    def parameter_groups(self) -> list[dict[str, Any]]:
        """The trained parameters in AdamW's named groups (``optim.parameter_groups``): ``unet``,
        ``unet_no_decay``, ``conditioning`` (prompt, gates, time embedding), ``head``, ``head_no_decay``
        (projections and DAFormer head); every group's learning rate is ``lr``, the head's
        ``lr * head_lr_multiplier``.

        Returns:
            ``[{"name", "params", "weight_decay", "lr"}, ...]``, empty groups left out.
        """
        hp = self.hparams
        parts = (
            ("unet", self.backbone.unet, hp.lr),
            ("conditioning", self.student.conditioning, hp.lr),
            ("head", self.student.head, hp.lr * hp.head_lr_multiplier),
        )
        return parameter_groups(parts, hp.weight_decay)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over :meth:`parameter_groups` in ``optimizer``'s mode; the LR factor per step (METHOD.md §5).

        The LR factor scales every group's learning rate alike. Foreach AdamW by default: one multi-tensor
        update instead of a Python loop over ~500 tensors (on CPU the loop was ~10% of a tiny-stack step,
        benchmarks/step_cost.py); the result is the same.
        """
        max_steps = self.trainer.max_steps
        if max_steps is None or max_steps <= 0:
            raise ValueError("set trainer.max_steps (> 0): the MADM learning-rate schedule is per iteration")
        hp = self.hparams
        optimizer = build_adamw(
            hp.optimizer, self.parameter_groups(), lr=hp.lr, implementation=hp.adamw_implementation
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, max_steps))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }


def _floats(losses: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())

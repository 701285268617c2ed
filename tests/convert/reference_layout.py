"""A reference (XiaRho/MADM) checkpoint laid out as the reference names and shapes its tensors.

Spelt out here from the reference's module definitions, independently of ``madm_pl/convert.py``'s table,
so that the tests compare two separate readings of the reference:

- ``MTMADISE`` (``modeling/meta_arch/cmdise.py`` ``__init__`` and ``_inti_ema_weights``):
  ``backbone`` (AttentionFeatureExtractorBackbone), ``sem_seg_head`` (DAFormerHead) saved a second time as
  ``sem_seg_head_sec_modal`` (the same module), ``ema_sem_seg_head``, ``backbone.ema_feature_projections``
  and ``backbone.feature_extractor.ema_clip_project_others``;
- ``backbone.feature_extractor`` (BasePromptTimeGenerator, ``ldm_base.py``): ``clip_project_rgb`` and
  ``clip_project_others`` (the same ClipFeatureProject with ``same_cond_params=True``) and
  ``ldm_extractor`` (LdmDiffusers, ``ldm_diffusers.py``: ``vae`` fp16, ``unet``, ``text_encoder``, the
  ``shared_noise`` and ``uncond_inputs`` buffers);
- ``backbone.feature_projections``: four one-block detectron2 ResNet stages (BottleneckBlock, GN) for
  s0 (the decoded image), s3, s4, s5 (``feature_extractor.py``);
- the DAFormer head with mlp embeddings and the separable ASPP fusion (``daformer_head.py``, mmcv
  ConvModule / DepthwiseSeparableConvModule naming).

The detectron2 file wraps it as fvcore's Checkpointer saves it: ``{"model": ..., "trainer": {...},
"iteration": i}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

Shape = tuple[int, ...]
Fill = Callable[[str, Shape, torch.dtype], Tensor]

UNET = "backbone.feature_extractor.ldm_extractor.unet."
VAE = "backbone.feature_extractor.ldm_extractor.vae."


def random_fill(seed: int = 0, device: str = "cpu") -> Fill:
    """Distinct random values per tensor (BN variances positive, counters integers); ``device="meta"``
    gives shapes only."""
    generator = torch.Generator().manual_seed(seed)

    def fill(name: str, shape: Shape, dtype: torch.dtype = torch.float32) -> Tensor:
        if device == "meta":
            return torch.empty(shape, dtype=dtype, device="meta")
        if dtype == torch.int64:
            return torch.randint(0, 1000, shape, generator=generator)
        values = torch.randn(shape, generator=generator)
        return (values.abs() + 0.5 if name.endswith("running_var") else values).to(dtype)

    return fill


def group_norm_conv(prefix: str, out_channels: int, in_channels: int, kernel: int, fill: Fill) -> dict:
    """detectron2 ``Conv2d(bias=False, norm=GroupNorm)``: the norm is the conv's ``.norm`` child."""
    return {
        prefix + "weight": fill(prefix + "weight", (out_channels, in_channels, kernel, kernel)),
        prefix + "norm.weight": fill(prefix + "norm.weight", (out_channels,)),
        prefix + "norm.bias": fill(prefix + "norm.bias", (out_channels,)),
    }


def bottleneck_block(prefix: str, in_channels: int, out_channels: int, width: int, fill: Fill) -> dict:
    """detectron2 ``BottleneckBlock`` (stride 1): shortcut only when the channel counts differ."""
    tensors = {}
    if in_channels != out_channels:
        tensors |= group_norm_conv(prefix + "shortcut.", out_channels, in_channels, 1, fill)
    tensors |= group_norm_conv(prefix + "conv1.", width, in_channels, 1, fill)
    tensors |= group_norm_conv(prefix + "conv2.", width, width, 3, fill)
    tensors |= group_norm_conv(prefix + "conv3.", out_channels, width, 1, fill)
    return tensors


def conv_module(
    prefix: str, out_channels: int, in_channels: int, kernel: int, fill: Fill, groups: int = 1
) -> dict:
    """mmcv ``ConvModule`` with BN: ``conv`` without bias, then ``bn``."""
    tensors = {
        prefix + "conv.weight": fill(
            prefix + "conv.weight", (out_channels, in_channels // groups, kernel, kernel)
        )
    }
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        tensors[prefix + "bn." + leaf] = fill(prefix + "bn." + leaf, (out_channels,))
    tensors[prefix + "bn.num_batches_tracked"] = fill(prefix + "bn.num_batches_tracked", (), torch.int64)
    return tensors


def daformer_head(prefix: str, in_channels: list[int], embed_dim: int, num_classes: int, fill: Fill) -> dict:
    """DAFormerHead: mlp embeddings per level, separable ASPP (dilations 1, 6, 12, 18, no pool), conv_seg."""
    tensors = {}
    for index, channels in enumerate(in_channels):
        name = f"{prefix}embed_layers.{index}.proj."
        tensors[name + "weight"] = fill(name + "weight", (embed_dim, channels))  # nn.Linear
        tensors[name + "bias"] = fill(name + "bias", (embed_dim,))
    fused = embed_dim * len(in_channels)
    aspp = prefix + "fuse_layer.aspp_modules."
    tensors |= conv_module(aspp + "0.", embed_dim, fused, 1, fill)
    for index in (1, 2, 3):
        tensors |= conv_module(f"{aspp}{index}.depthwise_conv.", fused, fused, 3, fill, groups=fused)
        tensors |= conv_module(f"{aspp}{index}.pointwise_conv.", embed_dim, fused, 1, fill)
    tensors |= conv_module(prefix + "fuse_layer.bottleneck.", embed_dim, 4 * embed_dim, 3, fill)
    tensors[prefix + "conv_seg.weight"] = fill(prefix + "conv_seg.weight", (num_classes, embed_dim, 1, 1))
    tensors[prefix + "conv_seg.bias"] = fill(prefix + "conv_seg.bias", (num_classes,))
    return tensors


def clip_feature_project(prefix: str, context_dim: int, time_dim: int, fill: Fill) -> dict:
    """ClipFeatureProject with a learnable prompt, its gates, and a learnable time embedding."""
    return {
        prefix + "prompt_embed": fill(prefix + "prompt_embed", (1, 77, context_dim)),
        prefix + "alpha_cond_prompt": fill(prefix + "alpha_cond_prompt", (1, 77, context_dim)),
        prefix + "alpha_uncond_prompt": fill(prefix + "alpha_uncond_prompt", (1, 77, context_dim)),
        prefix + "alpha_cond_time": fill(prefix + "alpha_cond_time", (time_dim,)),
        prefix + "time_embed": fill(prefix + "time_embed", (1, 1, time_dim)),
    }


def reference_state_dict(
    *,
    unet: Mapping[str, Tensor],
    vae: Mapping[str, Tensor],
    text_encoder: Mapping[str, Tensor],
    uncond: Tensor,
    tap_channels: tuple[int, int, int],
    num_classes: int,
    embed_dim: int = 256,
    projection_channels: int = 512,
    decoded_channels: int = 128,
    bottleneck_width: int = 128,
    fill: Fill | None = None,
) -> dict[str, Tensor]:
    """``MTMADISE.state_dict()`` of the released recipes.

    Args:
        unet: the SD UNet's diffusers state dict; saved fine-tuned (values shifted by 0.01 * noise).
        vae: the SD VAE's diffusers state dict; saved in fp16.
        text_encoder: the CLIP text encoder's state dict (saved, frozen).
        uncond: (1,77,D) the empty-prompt embedding (the ``uncond_inputs`` buffer).
        tap_channels: channels of s3, s4, s5 (SD v1-4: 320, 640, 1280).
        num_classes: classifier outputs.
        embed_dim, projection_channels, decoded_channels, bottleneck_width: the head's sizes (the
            released: 256, 512, 128, 128).
        fill: tensor maker (:func:`random_fill`).

    Returns:
        Reference key -> tensor; the two aliases hold the very same tensors as the modules they alias.
    """
    fill = fill or random_fill()
    context_dim, time_dim = uncond.shape[-1], unet["time_embedding.linear_2.weight"].shape[0]
    state: dict[str, Tensor] = {}
    for key, value in unet.items():
        shifted = value if value.is_meta else value + 0.01 * fill(key, tuple(value.shape), value.dtype)
        state[UNET + key] = shifted
    state |= {VAE + key: value.half() for key, value in vae.items()}
    state |= {
        f"backbone.feature_extractor.ldm_extractor.text_encoder.{k}": v for k, v in text_encoder.items()
    }
    generator = torch.Generator().manual_seed(42)
    state["backbone.feature_extractor.ldm_extractor.shared_noise"] = torch.randn(
        1, 4, 64, 64, generator=generator
    )
    state["backbone.feature_extractor.ldm_extractor.uncond_inputs"] = uncond
    others = clip_feature_project(
        "backbone.feature_extractor.clip_project_others.", context_dim, time_dim, fill
    )
    state |= {key.replace("_others.", "_rgb."): value for key, value in others.items()}  # the same module
    state |= others
    state |= clip_feature_project(
        "backbone.feature_extractor.ema_clip_project_others.", context_dim, time_dim, fill
    )
    levels = [(3, decoded_channels), *((c, projection_channels) for c in tap_channels)]  # s0, s3, s4, s5
    for root in ("backbone.feature_projections.", "backbone.ema_feature_projections."):
        for index, (channels, out_channels) in enumerate(levels):
            state |= bottleneck_block(f"{root}{index}.0.", channels, out_channels, bottleneck_width, fill)
    head_in = [decoded_channels] + [projection_channels] * 3
    head = daformer_head("sem_seg_head.", head_in, embed_dim, num_classes, fill)
    state |= head
    state |= {
        "sem_seg_head_sec_modal." + key.removeprefix("sem_seg_head."): value for key, value in head.items()
    }
    state |= daformer_head("ema_sem_seg_head.", head_in, embed_dim, num_classes, fill)
    return state


def detectron2_checkpoint(model: Mapping[str, Tensor], iteration: int = 9999) -> dict:
    """fvcore ``Checkpointer.save`` with ``trainer=`` (detectron2 AMPTrainer) and PeriodicCheckpointer's
    ``iteration``."""
    return {
        "model": dict(model),
        "trainer": {
            "iteration": iteration,
            "hooks": {"LRScheduler": {"base_lrs": [5e-6, 5e-6], "last_epoch": iteration + 1}},
            "optimizer": {
                "state": {},
                "param_groups": [{"lr": 5e-8, "weight_decay": 0.05, "params": [0, 1]}],
            },
            "grad_scaler": {
                "scale": 65536.0,
                "growth_factor": 2.0,
                "backoff_factor": 0.5,
                "growth_interval": 2000,
            },
        },
        "iteration": iteration,
    }

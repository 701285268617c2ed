"""Feature projections and the DAFormer head (METHOD.md §3, "Projections" and "Head").

Verified against the reference (XiaRho/MADM): the projections are detectron2 ``BottleneckBlock``s with
``norm="GN"`` (``modeling/backbone/feature_extractor.py``, ``AttentionFeatureExtractorBackbone``), the head
is ``DAFormerHead`` with ``mlp`` embeddings and a separable ``aspp`` fusion without pooling
(``modeling/sem_seg_head/daformer_head.py``, ``config_files/common/models/mtmadise_multi_lora.py``).

The finest level follows LPLR, as the reference ties them (METHOD.md §3, "Finest level"):

- ``"decoded"`` (LPLR on, the three task configs): the decoded UNet output enters as level "s0" with a
  3 -> 128 projection and the head runs at full resolution (the task configs replace level 0 by it:
  ``feature_dims[0] = 3``, ``projection_dim[0] = 128``, ``in_keys[0] = "s0"``).
- ``"vae_encoder"`` (LPLR off, the base model config): level "s2" is the frozen VAE encoder's feature
  after its 5th resnet (SD: 512 channels at stride 4), projected to 512 like a UNet tap; the head fuses at
  stride 4 (the size of its first level, ``os_size``) and its logits are upsampled bilinearly,
  ``align_corners=False``, to the image size (the criterion's and the inference's ``F.interpolate``).

Initialisation follows the reference's building blocks (METHOD.md §3): every convolution of a projection
gets detectron2's ``c2_msra_fill`` (``BottleneckBlock.__init__``) and every ASPP / fusion convolution
mmcv's ``ConvModule.init_weights`` (``kaiming_init``): both are Kaiming normal, fan-out, ReLU gain, bias 0,
i.e. std = sqrt(2 / (out_channels * kh * kw)). Norm layers start at weight 1, bias 0. The per-level linear
embeddings (the reference's ``MLP``, an ``nn.Linear``) and the classifier (``conv_seg``: the head's
``init_weights`` is never called) keep PyTorch's default. A 1x1 conv's default equals ``nn.Linear``'s
(Kaiming uniform with a = sqrt(5) on fan-in, bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
"""

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

#: GroupNorm groups in the projections (detectron2's ``get_norm("GN", C)``).
GROUP_NORM_GROUPS = 32

#: ASPP dilations: 1 is a 1x1 conv, the others 3x3 depthwise-separable convs.
ASPP_DILATIONS = (1, 6, 12, 18)

#: Dropout2d probability before the classifier.
DROPOUT = 0.1

#: The head's finest level: the decoded UNet output (LPLR on) or the VAE encoder's stride-4 feature (off).
FinestLevel = Literal["decoded", "vae_encoder"]
FINEST_LEVELS: tuple[str, ...] = ("decoded", "vae_encoder")

#: Stride of each finest level relative to the image (the VAE encoder's feature: after two downsamplings).
FINEST_LEVEL_STRIDE = {"decoded": 1, "vae_encoder": 4}


class HeadFactory(Protocol):
    """What builds a segmentation head (``model.init_args.head``, a ``class_path`` + ``init_args``): a
    class whose ``__init__`` takes these four keywords, which ``MADMModule`` gives from its backbone, task
    and LPLR switches, and whose other arguments are the config's ``init_args`` (``MADMHead``'s widths).

    The head built is called as ``head(features, finest, output_size) -> logits (B,num_classes,H,W)``
    (``MADMHead.forward``): ``features`` the [s32, s16, s8] UNet taps, ``finest`` the finest level.
    """

    def __call__(
        self,
        *,
        feature_channels: Sequence[int],
        num_classes: int,
        finest_level: FinestLevel,
        encoder_channels: int | None,
    ) -> nn.Module:
        """Args: as ``MADMHead``'s (``feature_channels``: the backbone's (s32, s16, s8) tap channels;
        ``finest_level``: ``"decoded"`` with LPLR on, else ``"vae_encoder"``; ``encoder_channels``: the
        VAE encoder feature's channels)."""
        ...


def kaiming_fan_out_(conv: nn.Conv2d) -> nn.Conv2d:
    """In place: Kaiming normal, fan-out mode, ReLU gain; bias 0. Returns ``conv``.

    detectron2's ``c2_msra_fill`` and mmcv's ``kaiming_init`` (defaults) are both this:
    std = sqrt(2 / fan_out) with fan_out = out_channels * kh * kw (for a depthwise conv too: the weight
    is (C, 1, kh, kw), so its fan-out is C * kh * kw).
    """
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class Bottleneck(nn.Module):
    """One ResNet bottleneck block with GroupNorm (detectron2 ``BottleneckBlock``, stride 1).

    conv1x1 (in -> width) + GN + ReLU, conv3x3 (width -> width) + GN + ReLU, conv1x1 (width -> out) + GN,
    plus the shortcut (a 1x1 conv + GN projection when in != out, else identity), then ReLU. Convs have no
    bias (GN follows each) and start from ``kaiming_fan_out_`` (detectron2's ``c2_msra_fill``).

    Args:
        in_channels: input channels.
        out_channels: output channels (a multiple of 32).
        width: inner width (a multiple of 32; 128 in the reference).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 128) -> None:
        super().__init__()
        for name, channels in (("out_channels", out_channels), ("width", width)):
            if channels % GROUP_NORM_GROUPS:
                raise ValueError(f"Bottleneck {name}={channels} must be a multiple of {GROUP_NORM_GROUPS}")
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm1 = nn.GroupNorm(GROUP_NORM_GROUPS, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(GROUP_NORM_GROUPS, width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.norm3 = nn.GroupNorm(GROUP_NORM_GROUPS, out_channels)
        if in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.GroupNorm(GROUP_NORM_GROUPS, out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kaiming_fan_out_(module)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x: (B,in,H,W) float. Returns: (B,out,H,W) float, >= 0."""
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, **conv_kwargs) -> nn.Sequential:
    # mmcv's ConvModule with a BN norm: the conv has no bias because BN follows; its constructor runs
    # kaiming_init (fan-out, normal) on the conv and sets the norm to weight 1, bias 0 (BN's default).
    return nn.Sequential(
        kaiming_fan_out_(nn.Conv2d(in_channels, out_channels, kernel_size, bias=False, **conv_kwargs)),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _separable_conv_bn_relu(in_channels: int, out_channels: int, dilation: int) -> nn.Sequential:
    # mmcv's DepthwiseSeparableConvModule: both the depthwise 3x3 and the pointwise 1x1 get BN + ReLU.
    return nn.Sequential(
        _conv_bn_relu(in_channels, in_channels, 3, padding=dilation, dilation=dilation, groups=in_channels),
        _conv_bn_relu(in_channels, out_channels, 1),
    )


class MADMHead(nn.Module):
    """Projections + DAFormer head: UNet taps and a finest level to per-pixel class logits.

    1. Projections (Bottleneck, GN): each UNet tap to ``projection_channels`` at its own resolution; the
       finest level: the decoded image (3 ch) to ``decoded_projection_channels`` at full resolution
       (``finest_level="decoded"``), or the VAE encoder's stride-4 feature (``encoder_channels``) to
       ``projection_channels`` (``"vae_encoder"``).
    2. Per level a linear embedding (1x1 conv with bias, no norm, no activation) to ``embed_dim``.
    3. Every level upsampled bilinearly (align_corners=False) to the finest level's size and
       concatenated, finest first: [finest, s8, s16, s32] (4 * embed_dim channels).
    4. ASPP without image pooling: a 1x1 conv and 3x3 depthwise-separable convs with dilations 6, 12, 18,
       each conv followed by BN + ReLU, ``embed_dim`` channels each; then a 3x3 conv
       4 * embed_dim -> embed_dim + BN + ReLU.
    5. Dropout2d(0.1) and a 1x1 conv to the classes, at the finest level's size.
    6. The logits upsampled bilinearly (align_corners=False) to ``output_size`` when they are smaller
       (the ``"vae_encoder"`` level: from stride 4 to the image).

    Initialisation: the reference's (see the module docstring); embeddings and classifier PyTorch's default.

    Steps 1 (finest projection) to 5 run at the finest level's size: with the decoded image that is the
    full resolution, where the memory goes (METHOD.md §6b). ``activation_checkpointing`` recomputes that
    part in the backward pass instead of storing its activations; BatchNorm running statistics are
    updated once (not again on recomputation).

    Args:
        feature_channels: channels of the (stride 32, stride 16, stride 8) taps, e.g.
            ``backbone.feature_channels`` ((1280, 640, 320) for SD v1-4).
        num_classes: number of output classes.
        embed_dim: width of the embeddings, ASPP branches and fusion (256 in the paper).
        projection_channels: output channels of the tap projections and of the VAE encoder feature's
            projection (512).
        decoded_projection_channels: output channels of the decoded-image projection (128).
        bottleneck_width: inner width of every projection (128).
        activation_checkpointing: recompute the finest-resolution part in the backward pass.
        finest_level: ``"decoded"`` (LPLR on) or ``"vae_encoder"`` (LPLR off), see the module docstring.
        encoder_channels: channels of the VAE encoder feature (``backbone.encoder_feature_channels``, 512
            for SD v1-4); needed with ``finest_level="vae_encoder"``, unused otherwise.

    Raises:
        ValueError: not 3 taps, an unknown ``finest_level``, or ``"vae_encoder"`` without
            ``encoder_channels``.
    """

    def __init__(
        self,
        feature_channels: Sequence[int],
        num_classes: int,
        embed_dim: int = 256,
        projection_channels: int = 512,
        decoded_projection_channels: int = 128,
        bottleneck_width: int = 128,
        activation_checkpointing: bool = False,
        finest_level: FinestLevel = "decoded",
        encoder_channels: int | None = None,
    ) -> None:
        super().__init__()
        if len(feature_channels) != 3:
            raise ValueError(
                f"feature_channels must give 3 taps (s32, s16, s8), got {tuple(feature_channels)}"
            )
        if finest_level not in FINEST_LEVELS:
            raise ValueError(f"finest_level={finest_level!r}: expected one of {FINEST_LEVELS}")
        if finest_level == "vae_encoder" and encoder_channels is None:
            raise ValueError(
                "finest_level='vae_encoder' needs encoder_channels (backbone.encoder_feature_channels)"
            )
        self.finest_level = finest_level
        self.activation_checkpointing = activation_checkpointing
        self.feature_projections = nn.ModuleList(
            Bottleneck(channels, projection_channels, bottleneck_width) for channels in feature_channels
        )
        # The finest level's own modules, named after what they read (the converter's table maps
        # decoded_* to the reference's level 0 of the task configs).
        if finest_level == "decoded":
            self.decoded_projection = Bottleneck(3, decoded_projection_channels, bottleneck_width)
            self.decoded_embedding = nn.Conv2d(decoded_projection_channels, embed_dim, 1)
        else:
            self.encoder_projection = Bottleneck(encoder_channels, projection_channels, bottleneck_width)
            self.encoder_embedding = nn.Conv2d(projection_channels, embed_dim, 1)
        self.feature_embeddings = nn.ModuleList(
            nn.Conv2d(projection_channels, embed_dim, 1) for _ in feature_channels
        )
        fused_channels = (len(feature_channels) + 1) * embed_dim
        self.aspp = nn.ModuleList(
            _conv_bn_relu(fused_channels, embed_dim, 1)
            if dilation == 1
            else _separable_conv_bn_relu(fused_channels, embed_dim, dilation)
            for dilation in ASPP_DILATIONS
        )
        self.fuse = _conv_bn_relu(len(ASPP_DILATIONS) * embed_dim, embed_dim, 3, padding=1)
        self.dropout = nn.Dropout2d(DROPOUT)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(
        self, features: Sequence[Tensor], finest: Tensor, output_size: Sequence[int] | None = None
    ) -> Tensor:
        """Predict class logits at ``output_size`` (by default the image size the finest level implies).

        Args:
            features: [s32, s16, s8] UNet taps, (B,C_i,H/32,W/32), (B,C_i,H/16,W/16), (B,C_i,H/8,W/8) float.
            finest: the finest level. ``"decoded"``: (B,3,H,W) float, the decoded UNet output, NOT clipped
                (mostly in [-1,1], but the raw decode may leave it, as in the reference).
                ``"vae_encoder"``: (B,encoder_channels,H/4,W/4) float, the VAE encoder's feature.
            output_size: (H, W) of the logits; None: the finest level's size times its stride (H, W).

        Returns:
            (B,num_classes,H,W) float, unnormalised logits.
        """
        if len(features) != len(self.feature_projections):
            raise ValueError(
                f"expected {len(self.feature_projections)} features (s32, s16, s8), got {len(features)}"
            )
        projected = [projection(x) for projection, x in zip(self.feature_projections, features)]
        if self.activation_checkpointing and torch.is_grad_enabled():
            logits = checkpoint(
                self._fuse,
                finest,
                *projected,
                use_reentrant=False,
                context_fn=self._checkpoint_contexts,
            )
        else:
            logits = self._fuse(finest, *projected)
        if output_size is None:
            stride = FINEST_LEVEL_STRIDE[self.finest_level]
            output_size = (finest.shape[-2] * stride, finest.shape[-1] * stride)
        if tuple(logits.shape[-2:]) != tuple(output_size):
            # The reference's criterion and inference: F.interpolate(..., "bilinear", align_corners=False).
            logits = F.interpolate(logits, size=tuple(output_size), mode="bilinear", align_corners=False)
        return logits

    def _fuse(self, finest: Tensor, *projected: Tensor) -> Tensor:
        if self.finest_level == "decoded":
            first = self.decoded_embedding(self.decoded_projection(finest))
        else:
            first = self.encoder_embedding(self.encoder_projection(finest))
        size = first.shape[-2:]  # the reference's os_size: the first level's
        levels = [first]
        # Finest first, as the reference concatenates (s0 or s2, then s3, s4, s5).
        for embedding, x in reversed(list(zip(self.feature_embeddings, projected))):
            levels.append(F.interpolate(embedding(x), size=size, mode="bilinear", align_corners=False))
        x = torch.cat(levels, dim=1)
        x = self.fuse(torch.cat([branch(x) for branch in self.aspp], dim=1))
        return self.classifier(self.dropout(x))

    def _checkpoint_contexts(
        self,
    ) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), _frozen_batch_norm_statistics(self)


@contextlib.contextmanager
def _frozen_batch_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Keep BatchNorm running statistics unchanged during a checkpoint recomputation.

    Momentum 0 leaves the running mean and variance as they are, and the batch counter is restored. The
    recomputed forward still normalises with the batch statistics (train mode), so its outputs equal the
    first forward's; only the second running-statistics update is skipped.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(norm.momentum, norm.num_batches_tracked.clone()) for norm in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, (momentum, num_batches_tracked) in zip(norms, saved):
            norm.momentum = momentum
            norm.num_batches_tracked.copy_(num_batches_tracked)

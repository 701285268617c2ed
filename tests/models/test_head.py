"""Projections and DAFormer head (METHOD.md §3), small widths on CPU."""

import copy

import pytest
import torch
from torch import nn

from madm_pl.models import Bottleneck, MADMHead

FEATURE_CHANNELS = (64, 32, 32)  # the tiny backbone's (s32, s16, s8) taps


def inputs(
    batch_size: int, height: int, width: int, seed: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = [
        torch.randn(batch_size, channels, height // stride, width // stride, generator=generator)
        for channels, stride in zip(FEATURE_CHANNELS, (32, 16, 8))
    ]
    decoded = torch.rand(batch_size, 3, height, width, generator=generator) * 2 - 1
    return features, decoded


def small_head(**kwargs) -> MADMHead:
    widths = {
        "embed_dim": 32,
        "projection_channels": 64,
        "decoded_projection_channels": 32,
        "bottleneck_width": 32,
    }
    return MADMHead(FEATURE_CHANNELS, num_classes=7, **(widths | kwargs))


@pytest.mark.parametrize(("height", "width"), [(64, 64), (64, 128)])
def test_logits_at_full_resolution(height, width):
    head = small_head()
    assert head(*inputs(2, height, width)).shape == (2, 7, height, width)


def test_widths_are_configurable():
    head = small_head(
        embed_dim=64, projection_channels=96, decoded_projection_channels=64, bottleneck_width=64
    )
    assert all(projection.conv3.out_channels == 96 for projection in head.feature_projections)
    assert head.decoded_projection.conv3.out_channels == 64
    assert head.decoded_projection.conv1.out_channels == 64
    assert head.fuse[0].in_channels == 4 * 64 and head.classifier.in_channels == 64
    with pytest.raises(ValueError, match="multiple of 32"):
        small_head(projection_channels=48)
    with pytest.raises(ValueError, match="3 taps"):
        MADMHead((64, 32), num_classes=7)


def test_bottleneck_is_a_groupnorm_resnet_block():
    block = Bottleneck(3, 128, width=64)
    assert [block.conv1.kernel_size, block.conv2.kernel_size, block.conv3.kernel_size] == [
        (1, 1),
        (3, 3),
        (1, 1),
    ]
    assert all(conv.bias is None for conv in (block.conv1, block.conv2, block.conv3))
    for norm, channels in ((block.norm1, 64), (block.norm2, 64), (block.norm3, 128)):
        assert isinstance(norm, nn.GroupNorm) and (norm.num_groups, norm.num_channels) == (32, channels)
    assert isinstance(block.shortcut[0], nn.Conv2d) and isinstance(block.shortcut[1], nn.GroupNorm)
    assert isinstance(Bottleneck(64, 64, width=32).shortcut, nn.Identity)
    output = block(torch.randn(2, 3, 8, 8))
    assert output.shape == (2, 128, 8, 8) and output.min() >= 0


def test_head_norm_placement_follows_daformer():
    head = small_head()
    norms = [type(module) for module in head.modules() if isinstance(module, nn.GroupNorm | nn.BatchNorm2d)]
    # GN only in the 4 projections: 3 each, plus one per projection shortcut (the 64 -> 64 s32 projection
    # has an identity shortcut); BN only in ASPP (1 + 3 separable x 2) and the fusion (1).
    assert norms.count(nn.GroupNorm) == 4 * 3 + 3 and norms.count(nn.BatchNorm2d) == 8
    # Linear embeddings: 1x1 convs with bias, nothing after them.
    for embedding in [*head.feature_embeddings, head.decoded_embedding]:
        assert (
            isinstance(embedding, nn.Conv2d)
            and embedding.kernel_size == (1, 1)
            and embedding.bias is not None
        )
    # ASPP: 1x1 conv + BN + ReLU, then depthwise-separable 3x3 convs with dilations 6, 12, 18.
    assert [type(layer) for layer in head.aspp[0]] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert head.aspp[0][0].kernel_size == (1, 1)
    for branch, dilation in zip(head.aspp[1:], (6, 12, 18)):
        depthwise, pointwise = branch
        assert [type(layer) for layer in depthwise] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        assert [type(layer) for layer in pointwise] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        assert depthwise[0].dilation == (dilation, dilation) and depthwise[0].groups == 4 * 32
        assert pointwise[0].kernel_size == (1, 1) and pointwise[0].out_channels == 32
    # The 3x3 fusion conv 4E -> E is followed by BN + ReLU; then dropout and the 1x1 classifier.
    assert [type(layer) for layer in head.fuse] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert head.fuse[0].kernel_size == (3, 3) and (head.fuse[0].in_channels, head.fuse[0].out_channels) == (
        128,
        32,
    )
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1
    assert head.classifier.kernel_size == (1, 1) and head.classifier.out_channels == 7


def test_activation_checkpointing_gives_the_same_logits_gradients_and_statistics():
    plain = small_head().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.activation_checkpointing = True
    features, decoded = inputs(2, 64, 64)
    results = []
    for head in (plain, checkpointed):
        head_features = [feature.clone().requires_grad_(True) for feature in features]
        torch.manual_seed(0)  # the same dropout mask
        logits = head(head_features, decoded)
        logits.square().mean().backward()
        results.append((logits, head_features, head))
    (plain_logits, plain_features, _), (checkpointed_logits, checkpointed_features, _) = results
    torch.testing.assert_close(checkpointed_logits, plain_logits)
    for got, want in zip(checkpointed_features, plain_features):
        torch.testing.assert_close(got.grad, want.grad)
    for (name, got), want in zip(checkpointed.named_parameters(), plain.parameters()):
        torch.testing.assert_close(got.grad, want.grad, msg=name)
    # BatchNorm running statistics are updated once, not again by the recomputation.
    for got, want in zip(checkpointed.buffers(), plain.buffers()):
        torch.testing.assert_close(got, want)


# ------------------------------------------------------------ initialisation (the reference's blocks)
def _kaiming_fan_out_std(conv: nn.Conv2d) -> float:
    # detectron2 c2_msra_fill / mmcv kaiming_init: N(0, 2 / fan_out), fan_out = out * kh * kw.
    out_channels, _, kh, kw = conv.weight.shape
    return (2.0 / (out_channels * kh * kw)) ** 0.5


def _default_bound(conv: nn.Conv2d) -> float:
    # PyTorch's Conv2d / Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in/groups * kh * kw.
    _, in_per_group, kh, kw = conv.weight.shape
    return (1.0 / (in_per_group * kh * kw)) ** 0.5


def test_initialisation_follows_detectron2_and_mmcv_per_layer():
    torch.manual_seed(0)
    # The paper's widths on a SD-sized s32 tap, so that every layer has enough weights for a std estimate.
    head = MADMHead((1280, 640, 320), num_classes=9)
    kaiming = {
        # name -> conv; the 1x1 1280 -> 128 conv: std sqrt(2/128) = 0.125 (PyTorch default: 0.016)
        "projection s32 conv1": head.feature_projections[0].conv1,
        "projection s32 conv2": head.feature_projections[0].conv2,
        "projection s32 conv3": head.feature_projections[0].conv3,
        "projection s32 shortcut": head.feature_projections[0].shortcut[0],
        "decoded conv1": head.decoded_projection.conv1,
        "decoded shortcut": head.decoded_projection.shortcut[0],
        "aspp 1x1": head.aspp[0][0],
        "aspp depthwise d6": head.aspp[1][0][0],  # (1024,1,3,3): std sqrt(2/9216) = 0.0147 (default 0.19)
        "aspp pointwise d6": head.aspp[1][1][0],
        "aspp depthwise d18": head.aspp[3][0][0],
        "fuse 3x3": head.fuse[0],  # 3x3 1024 -> 256: std sqrt(2/2304) = 0.029
    }
    assert _kaiming_fan_out_std(head.feature_projections[0].conv1) == pytest.approx(0.125)
    assert _kaiming_fan_out_std(head.fuse[0]) == pytest.approx(0.02946, abs=1e-4)
    for name, conv in kaiming.items():
        expected = _kaiming_fan_out_std(conv)
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.06), name
        assert abs(conv.weight.mean().item()) < 0.1 * expected, name
        assert conv.bias is None, name
    # The linear embeddings and the classifier keep PyTorch's default (uniform within the bound).
    for name, conv in {
        "embedding s32": head.feature_embeddings[0],
        "decoded embedding": head.decoded_embedding,
        "classifier": head.classifier,
    }.items():
        bound = _default_bound(conv)
        assert conv.weight.abs().max().item() <= bound, name
        # uniform on [-b, b] has std b / sqrt(3)
        assert conv.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.1), name
        assert conv.bias is not None and conv.bias.abs().max().item() <= bound, name
    for norm in head.modules():
        if isinstance(norm, (nn.BatchNorm2d, nn.GroupNorm)):
            assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


# ------------------------------------------------- the finest level follows LPLR (METHOD.md §3)
ENCODER_CHANNELS = 32  # the tiny VAE's third block


def encoder_inputs(
    batch_size: int, height: int, width: int, seed: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor]:
    features, _ = inputs(batch_size, height, width, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    encoder_feature = torch.randn(batch_size, ENCODER_CHANNELS, height // 4, width // 4, generator=generator)
    return features, encoder_feature


def test_both_head_shapes_parameter_names_and_shapes():
    decoded = small_head()
    encoder = small_head(finest_level="vae_encoder", encoder_channels=ENCODER_CHANNELS)
    decoded_shapes = {name: tuple(p.shape) for name, p in decoded.named_parameters()}
    encoder_shapes = {name: tuple(p.shape) for name, p in encoder.named_parameters()}
    # LPLR on: the decoded image (3 ch) -> 32 (decoded_projection_channels), as the task configs' s0 level.
    assert decoded_shapes["decoded_projection.conv1.weight"] == (32, 3, 1, 1)
    assert decoded_shapes["decoded_projection.conv3.weight"] == (32, 32, 1, 1)
    assert decoded_shapes["decoded_projection.shortcut.0.weight"] == (32, 3, 1, 1)
    assert decoded_shapes["decoded_embedding.weight"] == (32, 32, 1, 1)
    assert not any(name.startswith("encoder_") for name in decoded_shapes)
    # LPLR off: the VAE encoder feature (32 ch) -> 64 (projection_channels, like a tap), as the base
    # config's s2 level; no decoded_* module exists.
    assert encoder_shapes["encoder_projection.conv1.weight"] == (32, ENCODER_CHANNELS, 1, 1)
    assert encoder_shapes["encoder_projection.conv3.weight"] == (64, 32, 1, 1)
    assert encoder_shapes["encoder_projection.shortcut.0.weight"] == (64, ENCODER_CHANNELS, 1, 1)
    assert encoder_shapes["encoder_embedding.weight"] == (32, 64, 1, 1)
    assert not any(name.startswith("decoded_") for name in encoder_shapes)
    # Everything else is the same module with the same shapes.
    shared = {n: s for n, s in decoded_shapes.items() if not n.startswith("decoded_")}
    assert shared == {n: s for n, s in encoder_shapes.items() if not n.startswith("encoder_")}
    with pytest.raises(ValueError, match="encoder_channels"):
        small_head(finest_level="vae_encoder")
    with pytest.raises(ValueError, match="finest_level"):
        small_head(finest_level="unet")


@pytest.mark.parametrize(("height", "width"), [(64, 64), (64, 128)])
def test_encoder_level_logits_reach_the_image_size(height, width):
    head = small_head(finest_level="vae_encoder", encoder_channels=ENCODER_CHANNELS)
    features, encoder_feature = encoder_inputs(2, height, width)
    assert head(features, encoder_feature).shape == (2, 7, height, width)  # 4x the stride-4 level
    assert head(features, encoder_feature, (height, width)).shape == (2, 7, height, width)


def test_encoder_level_fuses_at_stride_4_and_upsamples_bilinearly_without_aligned_corners():
    torch.manual_seed(0)
    head = small_head(finest_level="vae_encoder", encoder_channels=ENCODER_CHANNELS).eval()
    features, encoder_feature = encoder_inputs(1, 64, 64)
    with torch.no_grad():
        logits = head(features, encoder_feature, (64, 64))
        # The reference's order at os_size = the first level's size (16x16 here): project, embed, resize
        # the coarser levels to it, concatenate finest first, ASPP, fuse, classify.
        size = encoder_feature.shape[-2:]
        levels = [head.encoder_embedding(head.encoder_projection(encoder_feature))]
        for index in (2, 1, 0):  # s8, s16, s32
            embedded = head.feature_embeddings[index](head.feature_projections[index](features[index]))
            levels.append(torch.nn.functional.interpolate(embedded, size=size, mode="bilinear"))
        x = torch.cat(levels, dim=1)
        small = head.classifier(head.fuse(torch.cat([branch(x) for branch in head.aspp], dim=1)))
    assert small.shape == (1, 7, 16, 16)
    # Bilinear x4 with align_corners=False, by hand: output i reads source (i + 0.5) / 4 - 0.5, clamped at 0.
    # i = 0 -> -0.375 -> source 0; i = 2 -> 0.125 -> 0.875 * s[0] + 0.125 * s[1]; i = 6 -> 1.125.
    torch.testing.assert_close(logits[..., 0, 0], small[..., 0, 0])
    row = 0.875 * small[..., 0, :] + 0.125 * small[..., 1, :]  # output row 2
    torch.testing.assert_close(logits[..., 2, 2], 0.875 * row[..., 0] + 0.125 * row[..., 1])
    row = 0.875 * small[..., 1, :] + 0.125 * small[..., 2, :]  # output row 6
    torch.testing.assert_close(logits[..., 6, 5], 0.125 * row[..., 0] + 0.875 * row[..., 1])  # 5 -> 0.875
    # With aligned corners the corner would be the same but row 2 would differ: the test can tell them apart.
    aligned = torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear", align_corners=True)
    assert not torch.allclose(aligned[..., 2, 2], logits[..., 2, 2])


def test_encoder_level_activation_checkpointing_gives_the_same_logits_and_gradients():
    plain = small_head(finest_level="vae_encoder", encoder_channels=ENCODER_CHANNELS).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.activation_checkpointing = True
    features, encoder_feature = encoder_inputs(2, 64, 64)
    results = []
    for head in (plain, checkpointed):
        torch.manual_seed(0)
        logits = head(features, encoder_feature, (64, 64))
        logits.square().mean().backward()
        results.append(logits)
    torch.testing.assert_close(results[1], results[0])
    for (name, got), want in zip(checkpointed.named_parameters(), plain.parameters()):
        torch.testing.assert_close(got.grad, want.grad, msg=name)

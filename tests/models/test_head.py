"""Projections and DAFormer head (SPEC section 3), small widths on CPU."""

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

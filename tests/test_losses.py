"""Hand-computed checks of the pure training functions (SPEC sections 4, 5, 6)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from madm_pl.labels import IGNORE_INDEX, get_task
from madm_pl.losses import (
    adjust_hue,
    blur_kernel_size,
    classmix_masks,
    color_jitter,
    confidence_mask,
    dplg_timestep,
    draw_dplg_t0,
    ema_alpha,
    ema_update,
    gaussian_blur,
    lplr_loss,
    lr_factor,
    miou_from_confusion,
    mix,
    mixed_weight,
    paint_palette,
    pixel_accuracy,
    pseudo_label,
    segmentation_loss,
    strong_augment,
)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- EMA
class _Tiny(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((2,), value))
        self.scale = nn.Parameter(torch.tensor(value))  # a 0-d parameter
        self.register_buffer("running", torch.full((2,), value))


def test_ema_update_two_steps_parameters_only():
    teacher, student = _Tiny(0.0), _Tiny(2.0)
    ema_update(teacher, student, alpha=0.5)
    assert torch.equal(teacher.weight.data, torch.ones(2))
    assert teacher.scale.item() == 1.0
    student.weight.data.fill_(4.0)
    student.scale.data.fill_(4.0)
    ema_update(teacher, student, alpha=0.5)
    assert torch.equal(teacher.weight.data, torch.full((2,), 2.5))
    assert teacher.scale.item() == 2.5
    # Buffers are neither averaged nor copied.
    assert torch.equal(teacher.running, torch.zeros(2))


def test_ema_update_alpha_zero_copies_and_mismatch_raises():
    teacher, student = _Tiny(5.0), _Tiny(-3.0)
    ema_update(teacher, student, alpha=ema_alpha(0))
    assert torch.equal(teacher.weight.data, student.weight.data)
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Linear(2, 2), nn.Linear(2, 2, bias=False), 0.5)
    with pytest.raises(ValueError, match="shape"):
        ema_update(nn.Linear(2, 2), nn.Linear(2, 3), 0.5)


def test_ema_alpha():
    assert ema_alpha(0) == 0.0
    assert ema_alpha(1) == 0.5
    assert ema_alpha(9) == pytest.approx(0.9)
    assert ema_alpha(998) < 0.999
    assert ema_alpha(999) == pytest.approx(0.999)
    assert ema_alpha(10**6) == 0.999
    assert ema_alpha(10**6, max_alpha=0.99) == 0.99


# ---------------------------------------------------------------- ClassMix
def _classes_under(mask: torch.Tensor, label: torch.Tensor) -> set[int]:
    return set(label[mask[0] > 0].unique().tolist())


def test_classmix_without_ignore_takes_exactly_half_of_present_classes_never_ignore():
    label = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3], [255, 255, 3, 3], [0, 0, 1, 1]])
    mask = classmix_masks(label[None], generator(0), include_ignore=False)
    assert mask.shape == (1, 1, 4, 4) and mask.dtype == torch.float32
    chosen = _classes_under(mask[0], label)
    assert len(chosen) == 2 and chosen <= {0, 1, 2, 3}
    # The mask is exactly the pixels of the chosen classes, never an ignored pixel.
    expected = torch.isin(label, torch.tensor(sorted(chosen)))
    assert torch.equal(mask[0, 0].bool(), expected)
    assert not mask[0, 0][label == IGNORE_INDEX].any()


@pytest.mark.parametrize(("present", "expected"), [([4, 7, 9], 2), ([5], 1), ([0, 1, 2, 3, 4], 3)])
def test_classmix_rounds_up(present, expected):
    label = torch.tensor([*present, 255]).reshape(1, 1, -1)
    mask = classmix_masks(label, generator(3), include_ignore=False)
    assert len(_classes_under(mask[0], label[0])) == expected


def test_classmix_with_ignore_draws_255_like_a_class_as_the_reference():
    # Values {0, 1, 2, 3, 255}: n = 5, so ceil(5/2) = 3 values are pasted, 255 among them 3/5 of the time.
    label = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3], [255, 255, 3, 3], [0, 0, 1, 1]])
    drawn_ignore = 0
    for seed in range(200):
        mask = classmix_masks(label[None], generator(seed))  # include_ignore=True is the default
        chosen = _classes_under(mask[0], label)
        assert len(chosen) == 3 and chosen <= {0, 1, 2, 3, 255}
        assert torch.equal(mask[0, 0].bool(), torch.isin(label, torch.tensor(sorted(chosen))))
        drawn_ignore += IGNORE_INDEX in chosen
    assert 0.5 < drawn_ignore / 200 < 0.7
    # Without the ignore label the same label has n = 4: 2 classes, never 255.
    for seed in range(20):
        chosen = _classes_under(classmix_masks(label[None], generator(seed), include_ignore=False)[0], label)
        assert len(chosen) == 2 and IGNORE_INDEX not in chosen


def test_classmix_per_sample_seeded_and_all_ignore():
    labels = torch.stack([torch.tensor([[0, 1], [2, 3]]), torch.tensor([[4, 5], [6, 7]])])
    first = classmix_masks(labels, generator(1))
    assert torch.equal(first, classmix_masks(labels, generator(1)))
    # Each sample chooses among its own classes: 2 of 4 pixels per sample.
    assert first.sum(dim=(1, 2, 3)).tolist() == [2.0, 2.0]
    masks = {tuple(classmix_masks(labels, generator(seed)).flatten().tolist()) for seed in range(20)}
    assert len(masks) > 1
    empty = classmix_masks(torch.full((1, 2, 2), 255), generator(0), include_ignore=False)
    assert not empty.any()
    # With the ignore label drawn like a class, an all-ignore label has one value, which is pasted.
    assert classmix_masks(torch.full((1, 2, 2), 255), generator(0)).all()


def test_mix_images_and_labels():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    source = torch.full((1, 3, 2, 2), 0.9)
    target = torch.full((1, 3, 2, 2), 0.1)
    mixed = mix(mask, source, target)
    assert torch.allclose(mixed[0, :, 0, 0], torch.full((3,), 0.9))
    assert torch.allclose(mixed[0, :, 0, 1], torch.full((3,), 0.1))
    labels = mix(mask, torch.tensor([[[3, 3], [255, 3]]]), torch.tensor([[[7, 7], [7, 7]]]))
    assert labels.dtype == torch.int64
    assert labels.tolist() == [[[3, 7], [7, 3]]]
    with pytest.raises(ValueError):
        mix(mask, source, target[:, :, :1])


# ---------------------------------------------------------------- strong augmentation
def test_color_jitter_factors_by_hand():
    image = torch.full((1, 3, 2, 2), 0.8)
    assert torch.allclose(color_jitter(image, 0.5, 1, 1, 0, (0, 1, 2, 3)), torch.full_like(image, 0.4))
    assert torch.allclose(color_jitter(image, 1.5, 1, 1, 0, (0, 1, 2, 3)), torch.ones_like(image))  # clamped
    two = torch.tensor([0.2, 0.6]).reshape(1, 1, 1, 2).expand(1, 3, 1, 2)
    # Contrast 0 gives the mean luma (0.4) everywhere; saturation 0 gives each pixel's luma.
    assert torch.allclose(color_jitter(two, 1, 0, 1, 0, (1,)), torch.full_like(two, 0.4))
    red = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    assert torch.allclose(color_jitter(red, 1, 1, 0, 0, (2,)), torch.full_like(red, 0.299))
    # A third of a turn moves pure red to pure green; grey has no hue.
    assert torch.allclose(
        adjust_hue(red, 1 / 3), torch.tensor([0.0, 1.0, 0.0]).reshape(1, 3, 1, 1), atol=1e-6
    )
    grey = torch.full((1, 3, 1, 1), 0.3)
    assert torch.allclose(adjust_hue(grey, 0.17), grey)
    rgb = torch.rand(1, 3, 5, 5, generator=generator(0))
    assert torch.allclose(adjust_hue(rgb, 0.0), rgb, atol=1e-6)
    assert torch.allclose(adjust_hue(adjust_hue(rgb, 0.2), -0.2), rgb, atol=1e-5)


def test_blur_kernel_size_and_blur():
    # floor(ceil(0.1 H) - 0.5 + ceil(0.1 H) % 2): 512 -> 52 -> 51; 0.1 * 30 = 3.0000000000000004 -> 4 -> 3.
    assert [blur_kernel_size(s) for s in (512, 128, 64, 30, 10)] == [51, 13, 7, 3, 1]
    flat = torch.full((1, 3, 64, 64), 0.25)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat)
    impulse = torch.zeros(1, 1, 64, 64)
    impulse[0, 0, 32, 32] = 1.0
    blurred = gaussian_blur(impulse, 1.0)
    taps = torch.exp(-(torch.arange(-3.0, 4.0) ** 2) / 2)  # k = 7 for 64 pixels, sigma 1
    assert blurred[0, 0, 32, 32].item() == pytest.approx((1 / taps.sum().item()) ** 2, rel=1e-5)
    assert blurred.sum().item() == pytest.approx(1.0, rel=1e-5)


def test_strong_augment_reproducible_range_and_forced_draws():
    images = torch.rand(2, 3, 32, 32, generator=generator(0))
    original = images.clone()
    first = strong_augment(images, generator(5), jitter_threshold=0.0, blur_threshold=0.0)
    again = strong_augment(images, generator(5), jitter_threshold=0.0, blur_threshold=0.0)
    other = strong_augment(images, generator(6), jitter_threshold=0.0, blur_threshold=0.0)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    assert not torch.allclose(first, images)
    assert torch.equal(images, original)  # the input (and any label) is left untouched
    # Draws never exceed 1: both steps off is the identity.
    assert torch.equal(strong_augment(images, generator(5), jitter_threshold=1.0, blur_threshold=1.0), images)
    # Strength 0 makes the jitter neutral (factors 1, hue 0): only the blur changes the image.
    blur_only = strong_augment(images, generator(5), strength=0.0, jitter_threshold=1.0, blur_threshold=0.0)
    assert torch.allclose(
        strong_augment(images, generator(5), strength=0.0, jitter_threshold=0.0, blur_threshold=0.0),
        blur_only,
        atol=1e-5,
    )


def test_strong_augment_default_thresholds_follow_the_draws():
    images = torch.rand(1, 3, 16, 16, generator=generator(0))
    for seed in range(8):
        u_jitter, u_blur = torch.rand(1, 7, generator=generator(seed))[0, :2].tolist()
        out = strong_augment(images, generator(seed))
        assert torch.equal(out, images) == (u_jitter <= 0.2 and u_blur <= 0.5)


# ---------------------------------------------------------------- DPLG
def test_dplg_timestep():
    assert [dplg_timestep(i, 50, 8000) for i in (0, 1, 4000, 7999, 8000, 8001, 10**4)] == [
        50,
        49,
        25,
        0,
        0,
        0,
        0,
    ]
    assert [dplg_timestep(i, 51, 8000) for i in (0, 1, 4000, 8000, 8001)] == [51, 50, 25, 0, 0]
    assert [dplg_timestep(i, 60, 5000) for i in (0, 2500, 5000, 5001)] == [60, 30, 0, 0]
    assert [dplg_timestep(i, 61, 5000) for i in (0, 2500, 5000, 5001)] == [61, 30, 0, 0]
    with pytest.raises(ValueError):
        dplg_timestep(0, 50, 0)


def test_draw_dplg_t0():
    draws = [draw_dplg_t0(50, generator(seed)) for seed in range(40)]
    assert set(draws) == {50, 51}
    rng_a, rng_b = generator(7), generator(7)
    assert [draw_dplg_t0(60, rng_a) for _ in range(5)] == [draw_dplg_t0(60, rng_b) for _ in range(5)]


# ---------------------------------------------------------------- LR factor
def test_lr_factor_recipe_n10000():
    w = 500 / 184375
    assert lr_factor(0, 10_000) == pytest.approx(0.067)
    assert lr_factor(27, 10_000) == pytest.approx(0.067 + 0.933 * (27 / 10_000) / w)
    assert lr_factor(28, 10_000) == 1.0
    assert lr_factor(8888, 10_000) == 1.0
    assert lr_factor(8889, 10_000) == 0.1
    assert lr_factor(9629, 10_000) == 0.1
    assert lr_factor(9630, 10_000) == 0.01
    assert lr_factor(9999, 10_000) == 0.01


def test_lr_factor_small_runs_keep_the_fractions():
    # N = 300: 2N - 1 = 599 updates, milestones int(0.88888 * 599) = 532, int(0.96296 * 599) = 576;
    # int(266/300 * 599) = 531, int(267/300 * 599) = 533; int(288/300 * 599) = 575, int(289/300 * 599) = 577.
    # Warm-up: 500/184375 * 300 = 0.81, so only i = 0.
    assert lr_factor(0, 300) == pytest.approx(0.067)
    assert [lr_factor(i, 300) for i in (1, 266, 267, 288, 289, 299)] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    # N = 1000: warm-up i = 0..2, drops at 889 and 963.
    assert lr_factor(2, 1000) < 1.0 and lr_factor(3, 1000) == 1.0
    assert [lr_factor(i, 1000) for i in (888, 889, 962, 963)] == [1.0, 0.1, 0.1, 0.01]
    for n in (200, 500, 2000, 10_000):
        first_drop = next(i for i in range(n) if lr_factor(i, n) < 1.0 and i > 0.5 * n)
        assert abs(first_drop / n - 0.8889) < 1.5 / n


def test_lr_factor_options():
    assert lr_factor(0, 100, warmup_factor=0.5, warmup_length=0.1) == 0.5
    assert lr_factor(5, 100, warmup_factor=0.5, warmup_length=0.1) == pytest.approx(0.75)
    assert lr_factor(0, 100, warmup_length=0.0) == 1.0
    # milestones (0.5, 0.75) of 199 updates: 99 and 149; int(0.49 * 199) = 97, int(0.5 * 199) = 99.
    assert lr_factor(49, 100, milestones=(0.5, 0.75)) == 1.0
    assert lr_factor(50, 100, milestones=(0.5, 0.75)) == 0.1
    assert lr_factor(50, 100, milestones=(0.5, 0.75), values=(2.0, 1.0, 0.5)) == 1.0
    with pytest.raises(ValueError):
        lr_factor(101, 100)


# ---------------------------------------------------------------- pseudo-labels
def test_pseudo_label_weight_per_sample():
    logits = torch.zeros(2, 2, 2, 2)
    logits[0, 1] = torch.tensor([[10.0, 10.0], [10.0, 0.0]])  # p = 0.99995 on 3 pixels, 0.5 on one
    logits[1, 0] = 1.0  # p = 0.731 everywhere
    label, weight = pseudo_label(logits)
    assert label.dtype == torch.int64
    assert label[0].tolist() == [[1, 1], [1, 0]]  # ties go to the first class
    assert label[1].tolist() == [[0, 0], [0, 0]]
    assert weight.tolist() == [0.75, 0.0]
    # The threshold is inclusive: softmax of equal logits is exactly 0.5.
    assert pseudo_label(torch.zeros(1, 2, 2, 2), threshold=0.5)[1].tolist() == [1.0]


def test_confidence_mask_is_the_pixels_counted_in_q():
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1] = torch.tensor([math.log(3.0), math.log(4.0), 0.0])  # p = 0.75, 0.8, 0.5
    mask = confidence_mask(logits, threshold=0.76)
    assert mask.dtype == torch.bool and mask.tolist() == [[[False, True, False]]]
    assert confidence_mask(logits, threshold=0.5).tolist() == [[[True, True, True]]]  # inclusive
    assert pseudo_label(logits, threshold=0.76)[1].item() == pytest.approx(1 / 3)


def test_mixed_weight():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    weight = mixed_weight(mask, torch.tensor([0.3, 0.0]))
    assert torch.allclose(weight[0], torch.tensor([[1.0, 0.3], [0.3, 1.0]]))
    assert torch.allclose(weight[1], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


# ---------------------------------------------------------------- palette
def test_paint_palette():
    palette = torch.tensor([[255, 0, 0], [0, 255, 0], [70, 130, 180]], dtype=torch.uint8)
    painted = paint_palette(torch.tensor([[[0, 1], [255, 2]]]), palette)
    assert painted.shape == (1, 3, 2, 2) and painted.dtype == torch.float32
    assert painted[0, :, 0, 0].tolist() == [1.0, -1.0, -1.0]
    assert painted[0, :, 0, 1].tolist() == [-1.0, 1.0, -1.0]
    assert painted[0, :, 1, 0].tolist() == [-1.0, -1.0, -1.0]  # ignore is black
    assert torch.allclose(painted[0, :, 1, 1], torch.tensor([70, 130, 180]) / 255 * 2 - 1)
    # Ids past the palette are black too; the task palettes (numpy) are accepted.
    task = get_task("rgb2infrared")
    beyond = paint_palette(torch.tensor([[[task.num_classes]]]), task.palette)
    assert beyond.flatten().tolist() == [-1.0, -1.0, -1.0]


# ---------------------------------------------------------------- losses
def test_segmentation_loss_by_hand():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, 0, 0] = 2.0  # [2, 0], label 0: log(1 + e^-2)
    logits[0, 1, 1, 1] = 1.0  # [0, 1], label 0: log(1 + e)
    label = torch.tensor([[[0, 1], [IGNORE_INDEX, 0]]])  # (0,1): [0, 0], label 1: log 2
    l00, l01, l11 = math.log(1 + math.exp(-2)), math.log(2), math.log(1 + math.e)
    # Mean over all 4 pixels, the ignored one counting 0.
    assert segmentation_loss(logits, label).item() == pytest.approx((l00 + l01 + l11) / 4, rel=1e-6)
    weight = torch.tensor([[[1.0, 0.5], [1.0, 0.25]]])
    expected = (l00 + 0.5 * l01 + 0.25 * l11) / 4
    assert segmentation_loss(logits, label, weight).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="resolution"):
        segmentation_loss(torch.zeros(1, 2, 4, 4), label)


def test_lplr_loss_normalisation_by_hand():
    # Label (2,4) -> latent (1,2), nearest: samples label[0,0] (valid) and label[0,2] (ignored).
    label = torch.tensor([[[0, 255, 255, 1], [1, 1, 1, 1]], [[2, 2, 2, 2], [2, 2, 2, 2]]])
    pred = torch.arange(16.0).reshape(2, 4, 1, 2)
    target = torch.zeros(2, 4, 1, 2)
    # Sample 0 keeps column 0 of each channel: 0 + 2 + 4 + 6; sample 1 keeps all: 8 + ... + 15.
    kept0, kept1 = 0 + 2 + 4 + 6, sum(range(8, 16))
    denominator = 2 * 4 * 1 * 2  # B * 4 * h * w, not the mask sum
    assert lplr_loss(pred, target, label).item() == pytest.approx((kept0 + kept1) / denominator)
    weighted = lplr_loss(pred, target, label, weight=torch.tensor([0.5, 0.25]))
    assert weighted.item() == pytest.approx((0.5 * kept0 + 0.25 * kept1) / denominator)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    lplr_loss(pred, target, label).backward()
    assert target.grad is None  # the painted label is a target, never a gradient path
    assert pred.grad[0, :, 0, 1].abs().sum() == 0  # ignored cell
    with pytest.raises(ValueError):
        lplr_loss(pred, target[:, :3], label)


# ---------------------------------------------------------------- mIoU
def test_miou_rule():
    confusion = torch.tensor([[3, 1, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])  # rows = gt
    miou, iou = miou_from_confusion(confusion)
    assert iou[0].item() == pytest.approx(3 / 5)  # TP 3, FN 2, FP 0
    assert iou[1].item() == pytest.approx(2 / 3)  # TP 2, FN 0, FP 1
    assert iou[2].item() == 0.0  # predicted, absent from the labels: counts 0
    assert math.isnan(iou[3].item())  # absent from both: skipped
    assert miou == pytest.approx((3 / 5 + 2 / 3) / 3)
    assert math.isnan(miou_from_confusion(torch.zeros(3, 3, dtype=torch.int64))[0])


def test_miou_with_torchmetrics_confusion_and_ignore():
    target = torch.tensor([[0, 0, 1, 255, 255]])
    preds = torch.tensor([[0, 2, 1, 3, 0]])  # predictions on ignored pixels are dropped
    confusion = MulticlassConfusionMatrix(num_classes=4, ignore_index=255)
    confusion.update(preds, target)
    matrix = confusion.compute()
    assert matrix.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]  # rows = target
    miou, iou = miou_from_confusion(matrix)
    assert miou == pytest.approx((0.5 + 1.0) / 3)
    assert iou[2].item() == 0.0 and math.isnan(iou[3].item())
    # torchmetrics' per-class IoU reports 0 (zero_division) for a class absent from both; its macro
    # average skips such classes, so it agrees with the rule here.
    per_class = MulticlassJaccardIndex(num_classes=4, average=None, ignore_index=255)
    assert per_class(preds, target).tolist() == [0.5, 1.0, 0.0, 0.0]
    macro = MulticlassJaccardIndex(num_classes=4, average="macro", ignore_index=255)
    assert macro(preds, target).item() == pytest.approx(miou)


def test_pixel_accuracy_counts_labelled_pixels_only() -> None:
    prediction = torch.tensor([[[0, 1], [2, 3]]])
    label = torch.tensor([[[0, 1], [255, 0]]])  # 3 labelled pixels, 2 right; the 255 one is skipped
    assert pixel_accuracy(prediction, label).item() == pytest.approx(2 / 3)
    assert pixel_accuracy(prediction, torch.full_like(label, 255)).isnan()

"""The DACS strong augmentation (METHOD.md §4.3): kornia 0.6's colour jitter (the reference's environment)
by default, kornia 0.9's as an option, our reproducible draws."""

from __future__ import annotations

import math

import kornia
import pytest
import torch

from madm_pl.method.augment import (
    COLOR_JITTERS,
    blur_kernel_size,
    color_jitter,
    gaussian_blur,
    rgb_to_hsv,
    strong_augment,
)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_kornia_09_color_jitter_factors_by_hand():
    def jitter(*args):
        return color_jitter(*args, semantics="kornia-0.9")

    image = torch.full((1, 3, 2, 2), 0.8)
    assert torch.allclose(jitter(image, 0.5, 1, 1, 0, (0, 1, 2, 3)), torch.full_like(image, 0.4))
    assert torch.allclose(jitter(image, 1.5, 1, 1, 0, (0, 1, 2, 3)), torch.ones_like(image))  # clamped
    two = torch.tensor([0.2, 0.6]).reshape(1, 1, 1, 2).expand(1, 3, 1, 2)
    # Contrast 0 gives the mean luma (0.4) everywhere; saturation 0 gives each pixel's luma.
    assert torch.allclose(jitter(two, 1, 0, 1, 0, (1,)), torch.full_like(two, 0.4))
    red = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    assert torch.allclose(jitter(red, 1, 1, 0, 0, (2,)), torch.full_like(red, 0.299))
    # A third of a turn moves pure red to pure green; grey has no hue.
    green = torch.tensor([0.0, 1.0, 0.0]).reshape(1, 3, 1, 1)
    assert torch.allclose(jitter(red, 1, 1, 1, 1 / 3, (3,)), green, atol=1e-6)
    grey = torch.full((1, 3, 1, 1), 0.3)
    assert torch.allclose(jitter(grey, 1, 1, 1, 0.17, (3,)), grey)
    rgb = torch.rand(1, 3, 5, 5, generator=generator(0))
    assert torch.allclose(jitter(rgb, 1, 1, 1, 0.0, (3,)), rgb, atol=1e-6)
    there = jitter(rgb, 1, 1, 1, 0.2, (3,))
    assert torch.allclose(jitter(there, 1, 1, 1, -0.2, (3,)), rgb, atol=1e-5)
    with pytest.raises(ValueError, match="permutation"):
        jitter(rgb, 1, 1, 1, 0, (4,))


def test_kornia_09_color_jitter_is_kornias_colorjitter_with_its_drawn_factors():
    # The installed kornia's ColorJitter(s, s, s, s), s = 0.2: its draws replayed through color_jitter.
    images = torch.rand(3, 3, 8, 8, generator=generator(1))
    module = kornia.augmentation.ColorJitter(0.2, 0.2, 0.2, 0.2, p=1.0)
    with torch.random.fork_rng():  # kornia's module draws from the global generator
        torch.manual_seed(0)
        expected = module(images)
    params = module._params
    for i in range(3):
        factors = [
            params[f"{name}_factor"][i].item() for name in ("brightness", "contrast", "saturation", "hue")
        ]
        assert min(factors[:3]) >= 0.8 and max(factors[:3]) <= 1.2 and abs(factors[3]) <= 0.2
        order = params["order"].tolist()  # one order for the batch in kornia's module
        got = color_jitter(images[i : i + 1], *factors, order=order, semantics="kornia-0.9")
        assert torch.allclose(got, expected[i : i + 1], atol=1e-6)


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
    # The reference's module with the same kernel and sigma; a 1-pixel kernel (10 pixels) is the identity.
    image = torch.rand(2, 3, 30, 64, generator=generator(2))
    module = kornia.filters.GaussianBlur2d((3, 7), (0.7, 0.7))
    assert torch.allclose(gaussian_blur(image, 0.7), module(image))
    small = torch.rand(1, 3, 10, 10, generator=generator(3))
    assert torch.allclose(gaussian_blur(small, 1.0), small)


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


# ------------------------------------------------ kornia 0.6's ColorJitter (the default), by hand
def pixel(*rgb: float) -> torch.Tensor:
    return torch.tensor(rgb).reshape(1, 3, 1, 1)


def jitter06(image: torch.Tensor, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, order=(0, 1, 2, 3)):
    return color_jitter(image, brightness, contrast, saturation, hue, order)  # the default semantics


def test_kornia_06_brightness_adds_factor_minus_one_and_clamps():
    assert torch.allclose(jitter06(pixel(0.3, 0.5, 0.7), brightness=1.2), pixel(0.5, 0.7, 0.9))
    assert torch.allclose(jitter06(pixel(0.1, 0.9, 0.95), brightness=1.2), pixel(0.3, 1.0, 1.0))
    assert torch.allclose(jitter06(pixel(0.1, 0.5, 0.15), brightness=0.8), pixel(0.0, 0.3, 0.0))
    # kornia 0.9 multiplies instead: 0.3 * 1.2 = 0.36, not 0.5.
    assert torch.allclose(
        color_jitter(pixel(0.3, 0.3, 0.3), 1.2, 1, 1, 0, (0,), "kornia-0.9"), pixel(0.36, 0.36, 0.36)
    )


def test_kornia_06_contrast_multiplies_without_blending_to_the_mean():
    assert torch.allclose(jitter06(pixel(0.5, 0.25, 0.9), contrast=1.2), pixel(0.6, 0.3, 1.0))
    assert torch.allclose(jitter06(pixel(0.5, 0.25, 0.9), contrast=0.8), pixel(0.4, 0.2, 0.72))
    # Contrast 0 is black, whatever the image's mean (kornia 0.9: the mean luma 0.4 everywhere).
    two = torch.tensor([0.2, 0.6]).reshape(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert torch.equal(jitter06(two, contrast=0.0), torch.zeros_like(two))


def test_kornia_06_saturation_scales_s_in_hsv():
    # (0.8, 0.4, 0.2): V = 0.8, S = 0.6 / 0.8 = 0.75, H = 1/3 sixth (R holds the max; (B - G) / delta).
    hsv = rgb_to_hsv(pixel(0.8, 0.4, 0.2)).flatten().tolist()
    assert hsv == pytest.approx([2 * math.pi / 18, 0.75, 0.8], rel=1e-6)
    # S x 0.8 = 0.6: P = V (1 - S) = 0.32, T = V (1 - (1 - 1/3) S) = 0.48; sector 0 gives (V, T, P).
    assert torch.allclose(jitter06(pixel(0.8, 0.4, 0.2), saturation=0.8), pixel(0.8, 0.48, 0.32), atol=1e-6)
    # S x 1.5 = 1.125, clamped to 1: P = 0, T = 0.8 / 3.
    assert torch.allclose(jitter06(pixel(0.8, 0.4, 0.2), saturation=1.5), pixel(0.8, 0.8 / 3, 0.0), atol=1e-6)
    # Grey has S = 0: unchanged (kornia 0.9 blends with the luma: also unchanged; colours differ).
    assert torch.allclose(jitter06(pixel(0.3, 0.3, 0.3), saturation=1.2), pixel(0.3, 0.3, 0.3))


def test_kornia_06_hue_rotates_h_in_hsv_both_ways():
    assert torch.allclose(jitter06(pixel(1.0, 0.0, 0.0), hue=1 / 3), pixel(0.0, 1.0, 0.0), atol=1e-6)
    # (0.8, 0.4, 0.2) is at 1/18 turn. +0.1 turn: 1/3 sixth + 0.6 = 0.9333 sixths, sector 0, f = 0.9333:
    # (V, T, P) with T = 0.8 (1 - (1 - f) 0.75) = 0.76, P = 0.2.
    assert torch.allclose(jitter06(pixel(0.8, 0.4, 0.2), hue=0.1), pixel(0.8, 0.76, 0.2), atol=1e-6)
    # -0.1 turn: H < 0 stays negative after fmod; -0.2667 sixths is sector 5 with f = 0.7333: (V, P, Q),
    # Q = 0.8 (1 - 0.7333 * 0.75) = 0.36.
    assert torch.allclose(jitter06(pixel(0.8, 0.4, 0.2), hue=-0.1), pixel(0.8, 0.2, 0.36), atol=1e-6)
    assert torch.allclose(jitter06(pixel(0.3, 0.3, 0.3), hue=0.17), pixel(0.3, 0.3, 0.3))


def test_kornia_06_steps_follow_the_order():
    image = pixel(0.5, 0.5, 0.5)
    assert torch.allclose(
        jitter06(image, brightness=1.2, contrast=1.2, order=(0, 1)), pixel(0.84, 0.84, 0.84)
    )
    assert torch.allclose(jitter06(image, brightness=1.2, contrast=1.2, order=(1, 0)), pixel(0.8, 0.8, 0.8))
    with pytest.raises(ValueError, match="permutation"):
        jitter06(image, order=(0, 4))
    with pytest.raises(ValueError, match=r"color_jitter='kornia-0\.7'"):
        color_jitter(image, 1, 1, 1, 0, (0,), "kornia-0.7")


def test_strong_augment_applies_the_chosen_jitter_to_its_draws():
    assert COLOR_JITTERS == ("kornia-0.6", "kornia-0.9")
    images = torch.rand(2, 3, 16, 16, generator=generator(0))
    default = strong_augment(images, generator(5), jitter_threshold=0.0, blur_threshold=1.0)
    assert torch.equal(
        default, strong_augment(images, generator(5), 0.2, 0.0, 1.0, color_jitter="kornia-0.6")
    )
    # Replay the draws (rand(B, 7), then one randperm(4) per sample) through each semantics.
    draw = generator(5)
    draws = torch.rand(2, 7, generator=draw).tolist()
    orders = [torch.randperm(4, generator=draw).tolist() for _ in range(2)]
    for semantics in COLOR_JITTERS:
        out = strong_augment(
            images, generator(5), jitter_threshold=0.0, blur_threshold=1.0, color_jitter=semantics
        )
        for i, (_, _, b, c, s, h, _) in enumerate(draws):
            factors = (1 + 0.2 * (2 * b - 1), 1 + 0.2 * (2 * c - 1), 1 + 0.2 * (2 * s - 1), 0.2 * (2 * h - 1))
            want = color_jitter(images[i : i + 1], *factors, orders[i], semantics)
            torch.testing.assert_close(out[i : i + 1], want)
    other = strong_augment(
        images, generator(5), jitter_threshold=0.0, blur_threshold=1.0, color_jitter="kornia-0.9"
    )
    assert (default - other).abs().max() > 0.01
    with pytest.raises(ValueError, match="color_jitter='pil'"):
        strong_augment(images, generator(5), color_jitter="pil")

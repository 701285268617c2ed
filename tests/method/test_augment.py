"""The DACS strong augmentation (METHOD.md §4.3): kornia's operations, our reproducible draws."""

from __future__ import annotations

import kornia
import pytest
import torch

from madm_pl.method.augment import blur_kernel_size, color_jitter, gaussian_blur, strong_augment


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
    green = torch.tensor([0.0, 1.0, 0.0]).reshape(1, 3, 1, 1)
    assert torch.allclose(color_jitter(red, 1, 1, 1, 1 / 3, (3,)), green, atol=1e-6)
    grey = torch.full((1, 3, 1, 1), 0.3)
    assert torch.allclose(color_jitter(grey, 1, 1, 1, 0.17, (3,)), grey)
    rgb = torch.rand(1, 3, 5, 5, generator=generator(0))
    assert torch.allclose(color_jitter(rgb, 1, 1, 1, 0.0, (3,)), rgb, atol=1e-6)
    there = color_jitter(rgb, 1, 1, 1, 0.2, (3,))
    assert torch.allclose(color_jitter(there, 1, 1, 1, -0.2, (3,)), rgb, atol=1e-5)
    with pytest.raises(ValueError, match="permutation"):
        color_jitter(rgb, 1, 1, 1, 0, (4,))


def test_color_jitter_is_kornias_colorjitter_with_its_drawn_factors():
    # The reference's module: ColorJitter(s, s, s, s) with s = 0.2; replay its draws through color_jitter.
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
        got = color_jitter(images[i : i + 1], *factors, order=order)
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

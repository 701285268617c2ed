"""Parity with the reference: the strong augmentation (DACS colour jitter, then Gaussian blur).

The reference ran ``strong_transform`` (no mix) on one image with kornia 0.6.0, the version its pins
install; each case records its draws (jitter and blur decisions, kornia's factors and order, the blur
sigma), and madm-pl's ``strong_augment`` gets the same values through its own draws.
"""

from __future__ import annotations

import pytest
import torch

from madm_pl.method.augment import strong_augment
from tests.parity import fixtures as fx
from tests.parity.common import assert_close, golden_json, golden_tensors
from tests.parity.draws import DrawFeeder


def _image() -> torch.Tensor:
    generator = torch.Generator().manual_seed(13)
    return (torch.rand(1, 3, 24, 40, generator=generator) * 255).round() / 255


def _augment(monkeypatch, case: int, **options: object) -> tuple[torch.Tensor, torch.Tensor]:
    golden = golden_json("augment")
    image = _image()
    assert fx.checksum(image) == golden["image_checksum"]
    recorded = golden["cases"][case]
    # The reference's jitter and blur decisions were given (not drawn) in this golden: they are the uniforms.
    draws = {
        **recorded["draws"],
        "uniform": [recorded["jitter"], recorded["blur"]],
        "classmix_n": 0,
        "classmix_choice": [],
        "dplg_t0": 0,
    }
    feeder = DrawFeeder([{"draws": draws}], 0, strength=golden["strength"])
    feeder.install(monkeypatch)
    out = strong_augment(image, torch.Generator(), strength=golden["strength"], **options)
    return out, golden_tensors("augment")[str(case)]


def _cases(jitter: bool) -> list[int]:
    return [i for i, c in enumerate(golden_json("augment")["cases"]) if (c["jitter"] > 0.2) == jitter]


@pytest.mark.parametrize("case", _cases(jitter=False))
def test_blur_and_no_jitter(monkeypatch, case):
    # No jitter applies here (the reference's draw <= 0.2): blur (sigma from the draw, kernel 0.1 x size
    # rounded to odd, reflect border) or nothing. kornia 0.6 and 0.9's gaussian_blur2d: ~1e-7.
    out, expected = _augment(monkeypatch, case)
    assert_close(out, expected, rtol=1e-5, atol=1e-6, what=f"augmentation case {case}")


@pytest.mark.parametrize("case", _cases(jitter=True))
def test_colour_jitter_of_kornia_0_6(monkeypatch, case):
    # The factors reach madm-pl through a float32 uniform (1 + 0.2 (2u - 1)): ~1e-7 on the factor; kornia
    # 0.6's HSV round trip vs madm-pl's formulas: ~1e-6 on [0, 1] pixels.
    out, expected = _augment(monkeypatch, case, color_jitter="kornia-0.6")
    assert_close(out, expected, rtol=1e-5, atol=1e-5, what=f"augmentation case {case}")

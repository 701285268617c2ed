"""The learning-rate factor (METHOD.md §5) at the iterations where it changes."""

from __future__ import annotations

import pytest

from madm_pl.method.schedule import lr_factor


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

"""DPLG (METHOD.md §4.4): the teacher's timestep and its start draw."""

from __future__ import annotations

import pytest
import torch

from madm_pl.method.dplg import dplg_timestep, draw_dplg_t0


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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

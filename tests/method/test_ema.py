"""The EMA teacher (METHOD.md §4.1) on hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from madm_pl.method.ema import ema_alpha, ema_update


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

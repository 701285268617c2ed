"""The learning-rate factor of the recipe: linear warm-up, then two steps down (METHOD.md §5)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

# Recipe constants of METHOD.md §5 (the reference's detectron2/fvcore scheduler configuration).
LR_WARMUP_LENGTH = 500 / 184375
LR_WARMUP_FACTOR = 0.067
LR_MILESTONES = (0.88888, 0.96296)
LR_VALUES = (1.0, 0.1, 0.01)
# fvcore compares progress fractions with this slack; it decides the exact iterations of the steps.
_WHERE_EPSILON = 1e-6


def lr_factor(
    iteration: int,
    max_iterations: int,
    warmup_length: float = LR_WARMUP_LENGTH,
    warmup_factor: float = LR_WARMUP_FACTOR,
    milestones: Sequence[float] = LR_MILESTONES,
    values: Sequence[float] = LR_VALUES,
) -> float:
    """LR multiplier for 0-based ``iteration`` of ``max_iterations`` (N), as the reference computes it.

    With p = iteration / N and M = 2N - 1 (the reference's ``num_updates``):
    warm-up while ``p + 1e-6 <= warmup_length``: ``warmup_factor + (1 - warmup_factor) * p / warmup_length``
    (linear towards the first value); afterwards ``values[k]`` with k the number of milestones
    ``int(f * M)`` that are <= ``int((p + 1e-6) * M)``. For N = 10,000: warm-up i = 0..27, 0.1 from
    i = 8,889 (milestone 17,776), 0.01 from i = 9,630 (milestone 19,258). The same fractions apply
    to any N. Derivation in docs/REFERENCE_NOTES.md.

    Args:
        iteration: 0-based step, 0 <= iteration <= max_iterations.
        max_iterations: total optimiser steps N > 0.
        warmup_length: warm-up as a fraction of the run.
        warmup_factor: multiplier at iteration 0, relative to ``values[0]``.
        milestones: increasing fractions of ``2N - 1`` updates where the value steps down.
        values: the multipliers, one more than milestones.
    """
    if max_iterations <= 0 or not 0 <= iteration <= max_iterations:
        raise ValueError(
            f"lr_factor: need 0 <= iteration <= max_iterations, got {iteration}/{max_iterations}"
        )
    if len(values) != len(milestones) + 1:
        raise ValueError(f"lr_factor: need len(values) == len(milestones) + 1, got {values}, {milestones}")
    num_updates = 2 * max_iterations - 1
    steps = [int(fraction * num_updates) for fraction in milestones]

    def multistep(where: float) -> float:
        return values[bisect.bisect_right(steps, int((where + _WHERE_EPSILON) * num_updates))]

    where = iteration / max_iterations
    if where + _WHERE_EPSILON <= warmup_length:
        start, end = warmup_factor * multistep(0.0), multistep(warmup_length)
        progress = where / warmup_length
        return end * progress + start * (1 - progress)
    return multistep(where)

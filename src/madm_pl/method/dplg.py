"""DPLG: the teacher's diffusion timestep, decaying to 0 over training (METHOD.md §4.4)."""

from __future__ import annotations

import torch


def draw_dplg_t0(base: int, generator: torch.Generator) -> int:
    """DPLG start timestep t0, uniform from {base, base + 1} (reference: ``randint(a, a + 1)``)."""
    return base + int(torch.randint(0, 2, (1,), generator=generator, device=generator.device).item())


def dplg_timestep(iteration: int, t0: int, t_end: int) -> int:
    """Teacher timestep under DPLG: ``int(t0 * (1 - iteration / t_end))`` up to ``t_end``, then 0.

    ``int`` truncates (50 * 0.5 = 25, 51 * 0.5 = 25.5 -> 25). At ``iteration == t_end`` both
    branches give 0, so ``<=`` and ``<`` agree. The student always uses t = 0.

    Args:
        iteration: 0-based optimiser step index.
        t0: start timestep from ``draw_dplg_t0``.
        t_end: the step at which the noise reaches 0 (8000; depth: 5000), > 0.
    """
    if t_end <= 0:
        raise ValueError(f"dplg_timestep: t_end must be > 0, got {t_end}")
    if iteration > t_end:
        return 0
    return int(t0 * (1 - iteration / t_end))

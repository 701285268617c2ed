"""The EMA teacher (METHOD.md §4.1)."""

from __future__ import annotations

import torch
from torch import nn


def ema_alpha(iteration: int, max_alpha: float = 0.999) -> float:
    """EMA decay for a 0-based iteration: ``min(1 - 1/(iteration + 1), max_alpha)`` (METHOD.md §4).

    Iteration 0 gives 0 (the teacher becomes a copy of the student), iteration 1 gives 0.5 and the
    decay reaches ``max_alpha`` from iteration 999 on (for 0.999).

    Args:
        iteration: 0-based optimiser step index, >= 0.
        max_alpha: upper bound of the decay, in [0, 1).

    Raises:
        ValueError: for a negative iteration.
    """
    if iteration < 0:
        raise ValueError(f"ema_alpha: iteration must be >= 0, got {iteration}")
    return min(1.0 - 1.0 / (iteration + 1), max_alpha)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """In place: ``teacher_param <- alpha * teacher_param + (1 - alpha) * student_param``.

    Parameters only (METHOD.md §4): buffers such as BatchNorm running statistics are left as
    they are, exactly as the reference's ``_update_ema`` does. The teacher runs in train mode, so
    its BatchNorm layers use batch statistics and the running buffers never matter for it.

    Args:
        teacher: the EMA module; same architecture (parameter names and shapes) as ``student``.
        student: the trained module.
        alpha: decay in [0, 1]; 0 copies the student, 1 keeps the teacher.

    Raises:
        ValueError: when the two modules' parameters do not match by name and shape, or alpha is
            outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"ema_update: alpha must lie in [0, 1], got {alpha}")
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    if teacher_params.keys() != student_params.keys():
        missing = sorted(teacher_params.keys() ^ student_params.keys())
        raise ValueError(f"ema_update: teacher and student parameters differ: {missing[:5]}")
    targets, sources = [], []
    for name, teacher_param in teacher_params.items():
        student_param = student_params[name]
        if teacher_param.shape != student_param.shape:
            raise ValueError(
                f"ema_update: parameter {name!r} has shape {tuple(teacher_param.shape)} in the teacher "
                f"but {tuple(student_param.shape)} in the student"
            )
        targets.append(teacher_param)
        sources.append(student_param.detach().to(teacher_param.dtype))
    # Multi-tensor kernels: two launches for the whole model instead of two per parameter.
    torch._foreach_mul_(targets, alpha)
    torch._foreach_add_(targets, sources, alpha=1.0 - alpha)

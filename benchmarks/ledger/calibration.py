"""What the GPU holds that no tensor shows, as named terms; the measured figures the ledger is checked on.

The ledger counts tensors (through the allocator model, so their blocks); a CUDA run also allocates,
through the same caching allocator (so inside ``max_memory_allocated``):

- cuBLAS workspaces (:func:`cublas_workspace_bytes`): torch gives each cuBLAS handle a workspace from
  the caching allocator and keeps it for the process; one handle per thread that runs matmuls: the
  forward's (the main thread) and the backward's (autograd's device thread). Size: torch's default
  ``CUBLAS_WORKSPACE_CONFIG`` for the card, ``:4096:8`` (32 MiB) on sm90 (H100), ``:4096:2:16:8``
  (8.125 MiB) before. Derived, not fitted.
- cuDNN convolution workspaces (:class:`ConvWorkspace`): every cuDNN convolution allocates scratch for
  the engine its heuristics pick while it runs. Its size depends on cuDNN's choice, which no CPU run
  can make, so it is the one *calibrated* term: ``coefficient x`` the bytes of the convolution's input
  activation, for the backward convolutions (data and weight gradients), fitted on one measured row
  (:data:`FITTED_ROW`) and checked on every other. Depthwise convolutions (the head's dilated ASPP
  convolutions) run torch's own CUDA kernel, not cuDNN, and get none.

Not in ``max_memory_allocated``, so not in the prediction: the CUDA context and the kernels' module
images (about 0.5-1 GiB of the card, in ``nvidia-smi`` only), NCCL's buffers (``sharded``), the
allocator's cached free blocks (in *reserved*, which the allocator model predicts separately).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

MiB = 1 << 20
GiB = 1 << 30

#: torch's default cuBLAS workspace per handle on an sm90 card (``CUBLAS_WORKSPACE_CONFIG=:4096:8``).
CUBLAS_WORKSPACE_SM90 = 4096 * 1024 * 8
#: Threads that run matmuls in a training step: the forward's and autograd's device thread.
CUBLAS_HANDLES = 2

#: Measured on one H100 80GB (BENCHMARKS.md "GPU: the paper model on an H100", issue 7), GiB:
#: ``python -m benchmarks.gpu_recipe --modes recipe eager --warmup 3 --steps 10``.
MEASURED_ITERATION = {"recipe": (27.30, 28.18), "eager": (37.29, 38.37)}  # (allocated, reserved)
#: ``python -m benchmarks.gpu_backbone``: (batch, UNet checkpointing) -> (student peak, teacher peak).
MEASURED_BACKBONE = {
    (2, False): (28.10, 11.80),
    (1, False): (16.70, 8.53),
    (2, True): (26.11, 11.80),
    (1, True): (15.70, 8.53),
}

#: The row the cuDNN workspace coefficient is fitted on; every other row is held out.
FITTED_ROW = "recipe"
#: cuDNN backward-convolution workspace per byte of the convolution's input, fitted on :data:`FITTED_ROW`:
#: the ledger gave 27.17 GiB at 7.0 and 27.92 GiB at 8.5 for the measured 27.30 (``python -m
#: benchmarks.memory_ledger --modes recipe --conv-workspace 7`` and ``8.5``); linear between them: 7.26.
#: ``--fit`` redoes it by bisection.
CONV_WORKSPACE_COEFFICIENT = 7.26


def cublas_workspace_bytes(handles: int = CUBLAS_HANDLES, per_handle: int = CUBLAS_WORKSPACE_SM90) -> int:
    """Bytes of the cuBLAS workspaces a training step leaves allocated (see the module docstring)."""
    return handles * per_handle


@dataclass(frozen=True)
class ConvWorkspace:
    """cuDNN's transient convolution workspace, ``coefficient x`` input bytes (see the module docstring).

    Called by :class:`~.tracker.MemoryLedger` with each operator; returns the scratch bytes it allocates.
    """

    coefficient: float = CONV_WORKSPACE_COEFFICIENT

    def __call__(self, func: Any, args: tuple) -> int:
        if self.coefficient <= 0 or func is not torch.ops.aten.convolution_backward.default:
            return 0
        _, activation, weight = args[:3]
        groups = args[9]
        if groups > 1 and groups == activation.shape[1] and weight.shape[1] == 1:
            return 0  # depthwise: torch's own kernel, no cuDNN workspace
        return int(self.coefficient * activation.numel() * activation.element_size())


def relative_error(predicted: float, measured: float) -> float:
    """``(predicted - measured) / measured``."""
    return (predicted - measured) / measured

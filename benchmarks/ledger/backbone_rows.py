"""The ledger's prediction of ``benchmarks/gpu_backbone.py``'s table (student fwd+bwd, teacher fwd peaks).

The same parts and calls as ``gpu_backbone.main``: a ``DiffusionBackbone``, ``PromptConditioning`` and a
``MADMHead`` *without* activation checkpointing, bf16 autocast, the student's loss
``logits.float().mean() + latent.float().abs().mean()`` and ``zero_grad(set_to_none=True)`` after each
student run, the teacher at t = 50 under ``no_grad``; the rows in the script's order (UNet checkpointing
off then on, batch 2 then 1) through one allocator model, each measurement after a warm-up run with the
peak reset before it, as the script does. The peak is what ``torch.cuda.max_memory_allocated`` read
(weights included, no optimiser).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from benchmarks.ledger.allocator import CachingAllocatorModel
from benchmarks.ledger.calibration import CONV_WORKSPACE_COEFFICIENT, ConvWorkspace, cublas_workspace_bytes
from benchmarks.ledger.emulation import CudaEmulation
from benchmarks.ledger.tracker import Category, MemoryLedger, Snapshot
from madm_pl.models import DiffusionBackbone, MADMHead, PromptConditioning


@dataclass
class BackboneRow:
    """Predicted peaks of one row of the backbone table (and where they happened)."""

    batch: int
    checkpointing: bool
    student: Snapshot
    student_phase: str
    teacher: Snapshot
    teacher_phase: str


def predict_backbone_rows(
    batch_sizes: Sequence[int] = (2, 1),
    preset: str = "sd14-random",
    size: int = 512,
    embed_dim: int = 256,
    num_classes: int = 11,
    timestep: int = 50,
    repeats: int = 1,
    conv_workspace: float = CONV_WORKSPACE_COEFFICIENT,
    cublas_bytes: int | None = None,
) -> list[BackboneRow]:
    """Predict ``gpu_backbone``'s rows (see the module docstring); ``repeats`` measured runs after one
    warm-up run per measurement (the script: 3); the GPU-only terms as in
    :func:`~.iteration.predict`."""
    emulation = CudaEmulation(unique_size=num_classes + 1)
    with torch.device("cpu" if preset == "tiny" else "meta"):
        backbone = DiffusionBackbone(preset)
        conditioning = PromptConditioning(backbone.context_dim, backbone.time_embed_dim, backbone.num_tokens)
        head = MADMHead(backbone.feature_channels, num_classes, embed_dim=embed_dim)
    modules = (backbone, conditioning, head)
    for module in modules:
        module.to("meta").train()
    ledger = MemoryLedger(allocator=CachingAllocatorModel(), workspace=ConvWorkspace(conv_workspace))
    for module in modules:
        ledger.register(module.parameters(), Category.PARAMETERS)
        ledger.register(module.buffers(), Category.PARAMETERS)
    ledger.allocate_workspace(cublas_workspace_bytes() if cublas_bytes is None else cublas_bytes)
    ledger.watch_gradients(p for module in modules for p in module.parameters())

    def student(image: torch.Tensor) -> None:
        with ledger.phase("student forward"), emulation.autocast():
            cond, time_offset = conditioning(backbone.uncond)
            output = backbone(image, 0, cond, time_offset)
            logits = head(output.features, output.decoded)
            loss = logits.float().mean() + output.latent.float().abs().mean()
        with ledger.phase("student backward", creates=Category.TEMPORARIES):
            loss.backward()
        for module in modules:
            module.zero_grad(set_to_none=True)

    def teacher(image: torch.Tensor) -> None:
        with ledger.phase("teacher forward"), torch.no_grad(), emulation.autocast():
            cond, time_offset = conditioning(backbone.uncond)
            output = backbone(image, timestep, cond, time_offset)
            head(output.features, output.decoded)

    def measure(run: Callable[[torch.Tensor], None], image: torch.Tensor) -> tuple[Snapshot, str]:
        run(image)  # warm-up
        ledger.reset_peak()
        for _ in range(repeats):
            run(image)
        return ledger.peak.copy(), ledger.peak_phase

    rows = []
    with emulation, ledger:
        for checkpointing in (False, True):
            if checkpointing:
                backbone.unet.enable_gradient_checkpointing(gradient_checkpointing_func=emulation.checkpoint)
            else:
                backbone.unet.disable_gradient_checkpointing()
            for batch in batch_sizes:
                image = torch.rand(batch, 3, size, size, device="meta") * 2 - 1
                student_peak, student_phase = measure(student, image)
                teacher_peak, teacher_phase = measure(teacher, image)
                rows.append(
                    BackboneRow(
                        batch, checkpointing, student_peak, student_phase, teacher_peak, teacher_phase
                    )
                )
    return rows

"""The 2-process (gloo) worker of the fast ZeRO test in tests/test_memory_modes.py, in a module of its own so
that the spawned processes import torch and madm_pl.optim only (not diffusers or Lightning)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from madm_pl.optim import build_adamw


def small_model() -> nn.Module:
    """Convolutions, a GroupNorm and a linear layer, seeded: the same weights on every rank."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.GroupNorm(4, 16),
        nn.SiLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )


def named_groups(model: nn.Module) -> list[dict]:
    """Decay and no-decay groups with their own rates, as MADMModule.parameter_groups gives them."""
    decay = [p for name, p in model.named_parameters() if name.endswith("weight") and p.ndim > 1]
    no_decay = [p for name, p in model.named_parameters() if not (name.endswith("weight") and p.ndim > 1)]
    return [
        {"name": "unet", "params": decay, "weight_decay": 0.05, "lr": 1e-2},
        {"name": "unet_no_decay", "params": no_decay, "weight_decay": 0.0, "lr": 1e-2},
    ]


def zero_worker(rank: int, port: int, out: Path) -> None:
    """3 DDP steps (batch 4 per rank, each rank its own data) with ``adamw`` and with ``adamw-sharded``:
    closure with backward and clipping (0.01) inside ``step``, an LR factor per step; saves the weights,
    the number of tensors this rank's AdamW holds moments for, and ZeRO's consolidated state (rank 0)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = {}
        for name in ("adamw", "adamw-sharded"):
            model = DistributedDataParallel(small_model(), gradient_as_bucket_view=True)
            optimizer = build_adamw(name, named_groups(model.module), lr=1e-2)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 / (1 + i))
            for step in range(3):
                generator = torch.Generator().manual_seed(10 * step + rank)
                image = torch.randn(4, 3, 8, 8, generator=generator)
                target = torch.randint(0, 5, (4,), generator=generator)

                def closure(
                    image: torch.Tensor = image, target: torch.Tensor = target, model: nn.Module = model
                ) -> torch.Tensor:
                    loss = nn.functional.cross_entropy(model(image), target)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
                    return loss

                optimizer.step(closure)
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            local = getattr(optimizer, "optim", optimizer)
            state = None
            if hasattr(optimizer, "consolidate_state_dict"):
                optimizer.consolidate_state_dict(to=0)
                state = optimizer.state_dict() if rank == 0 else None
            elif rank == 0:
                state = optimizer.state_dict()
            results[name] = {
                "weights": {k: v.detach().clone() for k, v in model.module.state_dict().items()},
                "local_state_count": len(local.state),
                "state_dict": state,
                "parameters": sum(1 for _ in model.parameters()),
            }
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()

"""benchmarks.offload_cost: the counts it reports, checked by hand and against a real torchao state."""

from __future__ import annotations

import torch

from benchmarks import offload_cost
from madm_pl.optim import adamw_8bit_class
from tests.test_module import make_module


def test_8bit_state_bytes_by_hand_and_as_torchao_allocates_them() -> None:
    # (64, 64): 4096 values, 16 blocks -> 2 x (4096 + 16 x 4); (100,): fp32 moments; (4100,): not a multiple
    shapes = [(64, 64), (100,), (4100,)]
    assert offload_cost.adamw_8bit_state_bytes(shapes) == 2 * (4096 + 64) + 8 * 100 + 8 * 4100
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in shapes]
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer = adamw_8bit_class()(params, lr=1e-3)
    with torch.compiler.set_stance("force_eager"):
        optimizer.step()
    allocated = 0
    for param in params:
        for key in ("exp_avg", "exp_avg_sq"):
            state = optimizer.state[param][key]
            tensors = [state.codes, state.scale] if hasattr(state, "codes") else [state]
            allocated += sum(t.numel() * t.element_size() for t in tensors)
    assert allocated == offload_cost.adamw_8bit_state_bytes(shapes)


def test_parameter_counts_are_the_modules_trained_groups() -> None:
    module = make_module()
    counts = offload_cost.parameter_counts(module)
    assert set(counts["groups"]) == {g["name"] for g in module.parameter_groups()}
    unet = sum(p.numel() for p in module.backbone.unet.parameters() if p.requires_grad)
    assert counts["groups"]["unet"][1] + counts["groups"]["unet_no_decay"][1] == unet
    vae = module.backbone.vae
    assert counts["vae_values"] == sum(p.numel() for p in vae.parameters())
    norms = sum(p.numel() for m in vae.modules() if isinstance(m, torch.nn.GroupNorm) for p in m.parameters())
    assert counts["vae_bf16_values"] == counts["vae_values"] - norms
    assert sum(torch.Size(s).numel() for s in counts["trained_shapes"]) == sum(
        v for _, v in counts["groups"].values()
    )
    sample = offload_cost.sample_shapes(counts["trained_shapes"], 100_000)
    assert sample[0] == max(counts["trained_shapes"], key=lambda s: torch.Size(s).numel())  # largest kept

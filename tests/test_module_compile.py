"""``compile_unet``: compiled in place (checkpoints stay portable); logits and gradients against eager.

Both tests are slow: inductor's C++ code generation for the tiny UNet takes minutes on 2 CPU cores.
"""

from __future__ import annotations

import pytest
import torch

from madm_pl.module import MADMModule
from tests.test_module import TINY_HEAD

TINY = {"backbone": "tiny", **TINY_HEAD}


@pytest.fixture(scope="module")
def modules() -> tuple[MADMModule, MADMModule]:
    """(eager, compiled) with the same weights, in eval mode (BatchNorm running statistics, no dropout)."""
    eager = MADMModule(**TINY)
    compiled = MADMModule(**TINY, compile_unet=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.configure_model()  # what the Trainer calls
    return eager.eval(), compiled.eval()


def image() -> torch.Tensor:
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.slow
def test_compiled_unet_keeps_state_dict_keys_and_logits(modules: tuple[MADMModule, MADMModule]) -> None:
    eager, compiled = modules
    # compiled in place: a checkpoint of a compiled run loads into an eager module and back
    assert list(compiled.state_dict()) == list(eager.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(compiled(image()), eager(image()), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.xfail(
    raises=AssertionError,
    strict=True,
    reason="torch 2.13 CPU inductor: UNet gradients through the s16 and s8 taps are 50-80% off "
    "(exact with backend='aot_eager'); check a GPU with benchmarks/gpu_recipe.py before compile_unet",
)
def test_compiled_unet_gradients_through_every_tap(modules: tuple[MADMModule, MADMModule]) -> None:
    for tap in range(3):
        eager_grad, compiled_grad = (tap_gradient(module, tap) for module in modules)
        torch.testing.assert_close(compiled_grad, eager_grad, atol=1e-6, rtol=1e-3)


def tap_gradient(module: MADMModule, tap: int) -> torch.Tensor:
    """Gradient of the UNet's ``conv_in.weight`` for the loss mean(tap^2) (one forward per tap: the
    compiled backward frees its buffers, so the graph cannot be retained)."""
    cond, time_offset = module.student.conditioning(module.backbone.uncond)
    features = module.backbone(image() * 2 - 1, 0, cond, time_offset).features
    return torch.autograd.grad(features[tap].square().mean(), module.backbone.unet.conv_in.weight)[0]

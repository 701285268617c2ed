"""``compile_unet``: the compiled UNet gives the eager logits and gradients, and keeps checkpoints portable."""

from __future__ import annotations

import pytest
import torch

from madm_pl.module import MADMModule

TINY = {
    "backbone": "tiny",
    "head_embed_dim": 16,
    "head_projection_channels": 32,
    "head_decoded_channels": 32,
    "head_bottleneck_width": 32,
}


@pytest.mark.slow  # torch.compile (inductor, C++ codegen) of the tiny UNet takes minutes on 2 CPU cores
def test_compile_unet_matches_eager_and_keeps_state_dict_keys() -> None:
    eager = MADMModule(**TINY)
    compiled = MADMModule(**TINY, compile_unet=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.configure_model()  # what the Trainer calls
    # compiled in place: a checkpoint of a compiled run loads into an eager module and back
    assert list(compiled.state_dict()) == list(eager.state_dict())
    eager.eval()
    compiled.eval()  # BatchNorm running statistics, no dropout: deterministic
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    logits = {name: module(image) for name, module in (("eager", eager), ("compiled", compiled))}
    torch.testing.assert_close(logits["compiled"], logits["eager"], atol=1e-4, rtol=1e-4)
    for name, module in (("eager", eager), ("compiled", compiled)):
        logits[name].square().mean().backward()
    torch.testing.assert_close(
        compiled.backbone.unet.conv_in.weight.grad, eager.backbone.unet.conv_in.weight.grad, atol=1e-5, rtol=1e-3
    )

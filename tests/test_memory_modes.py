"""The memory modes of issue 24 through a Lightning Trainer on the tiny stack, with the recipe's settings
(bf16-mixed, batch 1 x 2 accumulated micro-batches, clipping 0.01, the full method): the 24 GB mode
(``adamw-offload`` + the bf16 VAE) trains the plain recipe's weights bit for bit, also across a checkpoint
and across modes; the 8-bit option stays within the bound measured for it."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.strategies import DDPStrategy

from madm_pl.module import MADMModule
from madm_pl.optim import HostOffloadAdamW
from tests import sharded_workers
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


# ---------------------------------------------------------------------------------------- sharded
class SaveAtEnd(Callback):
    """Every rank calls ``save_checkpoint``: ZeRO consolidates its shards on rank 0 (a collective)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: Trainer, pl_module: MADMModule) -> None:
        optimizer = trainer.optimizers[0]
        # what this rank's own AdamW holds: ZeRO's local optimizer, or the whole state
        local = getattr(optimizer, "optim", optimizer).state
        self.local_state_count = len(local)
        trainer.save_checkpoint(self.path)


def sharded_worker(rank: int, port: int, root: Path, out: Path) -> None:
    """One of 2 DDP processes (gloo): 3 iterations with ``adamw`` then with ``adamw-sharded``, as the
    2-GPU recipe trains (batch 1 per process, no accumulation, bf16-mixed, clipping 0.01)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    os.environ["NODE_RANK"] = "0"
    torch.set_num_threads(1)
    counts = {}
    for name in ("adamw", "adamw-sharded"):
        fitted = module(optimizer=name)
        saver = SaveAtEnd(out / f"{name}.ckpt")
        trainer = make_trainer(
            out / name,
            3,
            devices=2,
            strategy=DDPStrategy(gradient_as_bucket_view=True),
            precision="bf16-mixed",
            callbacks=[saver],
        )
        trainer.fit(fitted, make_data(root, batch_size=1))
        torch.save(fitted.state_dict(), out / f"{name}-rank{rank}.pt")
        counts[name] = saver.local_state_count
    (out / f"counts-rank{rank}.json").write_text(json.dumps(counts))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # 2 processes x 2 Lightning fits: ~70 s on 2 cores (the fast variant: the test below)
def test_sharded_adamw_equals_unsharded_ddp_and_consolidates_its_checkpoint(
    synthetic_root: Path, tmp_path: Path
) -> None:
    torch.multiprocessing.spawn(sharded_worker, args=(free_port(), synthetic_root, tmp_path), nprocs=2)
    weights = {
        (name, rank): torch.load(tmp_path / f"{name}-rank{rank}.pt")
        for name in ("adamw", "adamw-sharded")
        for rank in (0, 1)
    }
    trained = {name for name, _ in module().named_parameters()}
    expected = weights["adamw", 0]
    assert not torch.equal(expected["backbone.unet.conv_in.weight"], module().backbone.unet.conv_in.weight)
    for (name, rank), state in weights.items():
        # parameters equal on both ranks in both modes; buffers (BN statistics, per process) within a rank
        reference = weights["adamw", rank]
        for key, value in state.items():
            assert torch.equal(value, (expected if key in trained else reference)[key]), (name, rank, key)
    # each rank's AdamW held the moments of part of the parameters only, together all of them
    counts = [json.loads((tmp_path / f"counts-rank{rank}.json").read_text()) for rank in (0, 1)]
    total = counts[0]["adamw"]
    assert counts[1]["adamw"] == total
    assert 0 < counts[0]["adamw-sharded"] < total and 0 < counts[1]["adamw-sharded"] < total
    assert counts[0]["adamw-sharded"] + counts[1]["adamw-sharded"] == total
    # Lightning consolidated ZeRO's shards into rank 0's checkpoint: plain AdamW's state, tensor for tensor
    plain = torch.load(tmp_path / "adamw.ckpt", weights_only=False)["optimizer_states"][0]
    sharded = torch.load(tmp_path / "adamw-sharded.ckpt", weights_only=False)["optimizer_states"][0]
    assert sharded["state"].keys() == plain["state"].keys() and len(plain["state"]) == total
    for index, state in plain["state"].items():
        for key, value in state.items():
            assert torch.equal(sharded["state"][index][key], value), (index, key)
    assert sharded["param_groups"] == plain["param_groups"]


def test_sharded_adamw_step_equals_the_unsharded_ddp_step(tmp_path: Path) -> None:
    """Fast variant (2 gloo processes, torch only): 3 DDP steps with ZeRO equal 3 plain-AdamW DDP steps bit
    for bit, each rank holding part of the moments, and the consolidated state is plain AdamW's."""
    torch.multiprocessing.spawn(sharded_workers.zero_worker, args=(free_port(), tmp_path), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    expected = ranks[0]["adamw"]["weights"]
    assert not torch.equal(expected["0.weight"], sharded_workers.small_model()[0].weight)
    for rank in ranks:
        for name in ("adamw", "adamw-sharded"):
            for key, value in expected.items():
                assert torch.equal(rank[name]["weights"][key], value), (name, key)
    total = ranks[0]["adamw"]["parameters"]
    assert [rank["adamw"]["local_state_count"] for rank in ranks] == [total, total]
    shares = [rank["adamw-sharded"]["local_state_count"] for rank in ranks]
    assert sum(shares) == total and min(shares) > 0
    plain, sharded = ranks[0]["adamw"]["state_dict"], ranks[0]["adamw-sharded"]["state_dict"]
    assert sharded["param_groups"] == plain["param_groups"]
    assert sharded["state"].keys() == plain["state"].keys()
    for index, state in plain["state"].items():
        for key, value in state.items():
            assert torch.equal(sharded["state"][index][key], value), (index, key)


# ------------------------------------------------------------------------------------------ 8-bit
@pytest.mark.slow  # torchao's eager per-tensor step: ~50 s on 2 shared cores (fast: tests/test_optim.py)
def test_8bit_mode_stays_within_its_measured_distance_of_fp32_adamw(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """3 iterations with torchao's AdamW8bit (its per-tensor step run eagerly: compiling it takes minutes on
    a CPU) against fp32 AdamW from the same start: different, by at most the bound measured for it."""
    start, plain, eight = module(), module(), module(optimizer="adamw-8bit")
    fit(plain, synthetic_root, tmp_path / "plain", 3)
    with torch.compiler.set_stance("force_eager"):
        fit(eight, synthetic_root, tmp_path / "8bit", 3)
    trained = {name for name, p in plain.named_parameters() if p.requires_grad}
    reference, before, actual = plain.state_dict(), start.state_dict(), eight.state_dict()
    drift = max((actual[n] - reference[n]).abs().max().item() for n in trained)
    change = max((reference[n] - before[n]).abs().max().item() for n in trained)
    drift_norm = sum(((actual[n] - reference[n]) ** 2).sum().item() for n in trained) ** 0.5
    change_norm = sum(((reference[n] - before[n]) ** 2).sum().item() for n in trained) ** 0.5
    # measured (this test, torch 2.13 CPU, 2026-12-04): max |difference| 3.07e-3 = 3.1 lr, ||difference|| /
    # ||AdamW's own change|| 0.13 (0.39 before issue 25's arms and jitter): Adam's first steps move each
    # weight by about lr, and 8-bit second moments that underestimate a small value in a block enlarge that
    # weight's step (docs/DEVIATIONS.md)
    assert 0 < drift <= 4e-3  # lr = 1e-3
    assert change > 1e-3 and drift_norm / change_norm <= 0.5

"""MADMModule on the tiny stack: one step, EMA, DPLG, LPLR switches, skipping, optimiser groups, resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from madm_pl.callbacks import FiniteWeightsGuard
from madm_pl.data import CrossModalityDataModule
from madm_pl.losses import dplg_timestep, ema_alpha
from madm_pl.module import MADMModule

SIZE = 64  # crop and test size: the tiny stack needs multiples of 8 (VAE stride) and 32 (UNet taps)
TINY_HEAD = dict(
    head_embed_dim=16, head_projection_channels=32, head_decoded_channels=32, head_bottleneck_width=32
)


def make_module(**overrides) -> MADMModule:
    kwargs = dict(task="rgb2infrared", backbone="tiny", lr=1e-3, dplg_t_end=10, **TINY_HEAD)
    kwargs.update(overrides)
    return MADMModule(**kwargs)


def make_data(root: Path, **overrides) -> CrossModalityDataModule:
    kwargs = dict(
        task="rgb2infrared",
        source_root=str(root / "cityscapes"),
        target_root=str(root / "fmb"),
        source_resize=(SIZE, 2 * SIZE),
        crop_size=(SIZE, SIZE),
        target_resize=(SIZE, 2 * SIZE),
        test_size=(SIZE, SIZE),
        batch_size=2,
        rcs_min_pixels=20,
    )
    kwargs.update(overrides)
    return CrossModalityDataModule(**kwargs)


def make_trainer(tmp_path: Path, max_steps: int, **overrides) -> Trainer:
    kwargs = dict(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=0.01,
        default_root_dir=str(tmp_path),
    )
    kwargs.update(overrides)
    return Trainer(**kwargs)


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_one_step_changes_student_and_unet_not_vae(synthetic_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = make_module()
    before_head, before_unet = state(module.student), state(module.backbone.unet)
    before_vae = state(module.backbone.vae)
    make_trainer(tmp_path, 1).fit(module, make_data(synthetic_root))
    changed = [k for k, v in module.student.state_dict().items() if not torch.equal(v, before_head[k])]
    assert any("conditioning.prompt" in k for k in changed)
    assert any("head.classifier" in k for k in changed)
    unet_after = module.backbone.unet.state_dict()
    assert any(not torch.equal(unet_after[k], before_unet[k]) for k in before_unet)
    # Frozen per SPEC section 3: the VAE, and the UNet's output norm/conv.
    assert all(torch.equal(v, before_vae[k]) for k, v in module.backbone.vae.state_dict().items())
    for name in ("conv_out.weight", "conv_norm_out.weight"):
        assert torch.equal(unet_after[name], before_unet[name])
    assert not module.backbone.vae.training


def test_teacher_follows_ema_formula_after_two_steps(synthetic_root: Path, tmp_path: Path) -> None:
    """Teacher after step k's EMA update = alpha_k * teacher + (1 - alpha_k) * student (SPEC 4.1)."""
    module = make_module()
    snapshots: list[tuple[dict, dict]] = []

    original = module.on_train_batch_start

    def record(batch, batch_idx):
        snapshots.append((state(module.teacher), state(module.student)))
        original(batch, batch_idx)
        snapshots.append((state(module.teacher), state(module.student)))

    module.on_train_batch_start = record
    make_trainer(tmp_path, 3).fit(module, make_data(synthetic_root))
    # Iteration 0: alpha 0 copies the student; iterations 1 and 2: alpha 1/2 and 2/3.
    for iteration in range(3):
        (teacher_before, student), (teacher_after, _) = snapshots[2 * iteration : 2 * iteration + 2]
        alpha = ema_alpha(iteration)
        for name, _ in module.teacher.named_parameters():
            expected = alpha * teacher_before[name] + (1 - alpha) * student[name]
            torch.testing.assert_close(teacher_after[name], expected)
    assert ema_alpha(1) == 0.5


def test_dplg_teacher_sees_scheduled_timestep(synthetic_root: Path, tmp_path: Path) -> None:
    module = make_module(dplg_t0=50, dplg_t_end=4)
    seen: list[int] = []
    forward = module.backbone.forward

    def spy(image, timestep, cond, time_offset):
        seen.append(int(timestep))
        return forward(image, timestep, cond, time_offset)

    module.backbone.forward = spy
    make_trainer(tmp_path, 5).fit(module, make_data(synthetic_root))
    # Per step: source (t=0), teacher (DPLG t), mixed (t=0).
    assert len(seen) == 15
    teacher_steps = seen[1::3]
    assert seen[0::3] == [0] * 5 and seen[2::3] == [0] * 5
    for iteration, timestep in enumerate(teacher_steps):
        assert timestep in {dplg_timestep(iteration, 50, 4), dplg_timestep(iteration, 51, 4)}
    assert teacher_steps[0] in (50, 51) and teacher_steps[4] == 0
    assert teacher_steps[2] in (25,)  # int(50 * 0.5) = int(51 * 0.5) = 25


def count_encoder_calls(module: MADMModule) -> list[int]:
    calls: list[int] = []
    module.backbone.vae.encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize(
    ("lplr_source", "lplr_target", "expected"),
    [(True, True, 5), (True, False, 4), (False, True, 4), (False, False, 3)],
)
def test_lplr_switches_skip_palette_encodes(
    synthetic_root: Path, tmp_path: Path, lplr_source: bool, lplr_target: bool, expected: int
) -> None:
    """Encodes per step: source, target (teacher), mixed, plus one per LPLR palette."""
    module = make_module(lplr_source=lplr_source, lplr_target=lplr_target)
    calls = count_encoder_calls(module)
    make_trainer(tmp_path, 1).fit(module, make_data(synthetic_root))
    assert len(calls) == expected


def test_source_only_skips_teacher_and_target(synthetic_root: Path, tmp_path: Path) -> None:
    module = make_module(mode="source_only", lplr_source=False)
    assert module.teacher is None
    calls = count_encoder_calls(module)
    make_trainer(tmp_path, 1).fit(module, make_data(synthetic_root))
    assert len(calls) == 1


def test_non_finite_loss_skips_step(synthetic_root: Path, tmp_path: Path) -> None:
    module = make_module()
    head = module.student.head
    original = head.forward
    head.forward = lambda features, decoded: original(features, decoded) * float("nan")
    before = state(module.student)
    with pytest.warns(UserWarning, match="non-finite loss"):
        make_trainer(tmp_path, 2).fit(module, make_data(synthetic_root))
    after = module.student.state_dict()
    assert all(
        torch.equal(after[k], v) for k, v in before.items() if "running" not in k and "num_batches" not in k
    )


def test_non_finite_gradient_skips_the_optimiser_step(tmp_path: Path) -> None:
    module = make_module()
    module.trainer = make_trainer(tmp_path, max_steps=1)
    params = [p for p in module.parameters() if p.requires_grad][:3]
    optimizer = torch.optim.SGD(params, lr=1.0)
    for param in params:
        param.grad = torch.ones_like(param)
    module.on_before_optimizer_step(optimizer)  # finite: the gradients stay
    assert all(param.grad is not None and bool((param.grad == 1).all()) for param in params)
    params[1].grad.view(-1)[0] = float("inf")  # one element of one parameter
    with pytest.warns(UserWarning, match="non-finite gradient at iteration 0"):
        module.on_before_optimizer_step(optimizer)
    assert all(param.grad is None for param in params)  # AdamW then skips every parameter


def test_finite_weights_guard_refuses_nan_checkpoint(tmp_path: Path) -> None:
    module = make_module()
    checkpoint = {"state_dict": {"a": torch.ones(2), "b": torch.tensor([1.0, math.nan])}}

    class FakeTrainer:
        global_step = 7

    with pytest.raises(RuntimeError, match="non-finite weights in \\['b'\\]"):
        FiniteWeightsGuard().on_save_checkpoint(FakeTrainer(), module, checkpoint)


def test_optimizer_groups_and_lr_schedule(synthetic_root: Path, tmp_path: Path) -> None:
    module = make_module(lr=5e-6, weight_decay=0.05)
    trainer = make_trainer(tmp_path, 1000)
    module.trainer = trainer  # configure_optimizers reads trainer.max_steps
    trainer.strategy._lightning_module = module
    config = module.configure_optimizers()
    decay, no_decay = config["optimizer"].param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    # LearningRateMonitor logs lr/weights and lr/norms_and_biases
    assert (decay["name"], no_decay["name"]) == ("weights", "norms_and_biases")
    assert config["lr_scheduler"]["name"] == "lr"
    decay_ids = {id(p) for p in decay["params"]}
    no_decay_ids = {id(p) for p in no_decay["params"]}
    conditioning = module.student.conditioning
    assert all(id(p) in decay_ids for p in conditioning.parameters())  # prompt, gates, time embedding
    for name, param in module.student.head.named_parameters():
        if name.endswith("bias"):
            assert id(param) in no_decay_ids, name
    norm = module.student.head.fuse[1]  # BatchNorm after the 3x3 fusion conv
    assert id(norm.weight) in no_decay_ids
    assert id(module.backbone.unet.conv_in.weight) in decay_ids
    frozen = {id(p) for p in module.backbone.vae.parameters()} | {
        id(p) for p in module.backbone.unet.conv_out.parameters()
    }
    assert not frozen & (decay_ids | no_decay_ids)
    assert not decay_ids & no_decay_ids
    scheduler = config["lr_scheduler"]["scheduler"]
    assert scheduler.get_last_lr()[0] == pytest.approx(5e-6 * 0.067)
    assert config["lr_scheduler"]["interval"] == "step"


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_resume_equals_uninterrupted(synthetic_root: Path, tmp_path: Path) -> None:
    """3 steps + resume + 3 steps gives the weights of 6 uninterrupted steps (SPEC section 4, issue 4)."""
    torch.manual_seed(1)
    uninterrupted = make_module()
    torch.manual_seed(1)
    first = make_module()
    torch.manual_seed(2)  # a different initialisation: the checkpoint must restore everything
    resumed = make_module()

    make_trainer(tmp_path / "a", 6).fit(uninterrupted, make_data(synthetic_root))
    # Interrupted after 3 of 6 steps: the LR schedule is over 6 steps in both runs.
    trainer = make_trainer(tmp_path / "b", 6, callbacks=[StopAt(3)])
    trainer.fit(first, make_data(synthetic_root))
    assert trainer.global_step == 3
    ckpt = tmp_path / "three.ckpt"
    trainer.save_checkpoint(ckpt)
    torch.manual_seed(123)  # the global RNG must not matter either
    make_trainer(tmp_path / "c", 6).fit(resumed, make_data(synthetic_root), ckpt_path=str(ckpt))

    expected, actual = uninterrupted.state_dict(), resumed.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_oracle_trains_on_target_labels_only(synthetic_root: Path, tmp_path: Path) -> None:
    module = make_module(mode="oracle", lplr_source=True)  # LPLR flags do not apply to the oracle
    assert module.teacher is None
    calls = count_encoder_calls(module)
    trainer = make_trainer(tmp_path, 1)
    data = make_data(synthetic_root, target_train_labels=True)
    trainer.fit(module, data)
    assert len(calls) == 1  # the target image only: no source pass, no palette, no teacher
    logged = set(trainer.callback_metrics)
    assert "train/loss_target" in logged and not {"train/loss_source", "train/loss_lplr_source"} & logged


def test_pseudo_label_accuracy_is_logged_with_target_labels(synthetic_root: Path, tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, 1)
    trainer.fit(make_module(), make_data(synthetic_root, target_train_labels=True))
    assert 0.0 <= float(trainer.callback_metrics["train/pseudo_label_accuracy"]) <= 1.0
    trainer = make_trainer(tmp_path, 1)
    trainer.fit(make_module(), make_data(synthetic_root))  # without target labels: nothing to compare
    assert "train/pseudo_label_accuracy" not in trainer.callback_metrics


def test_oracle_without_target_labels_is_a_clear_error(synthetic_root: Path, tmp_path: Path) -> None:
    module = make_module(mode="oracle")
    with pytest.raises(ValueError, match=r"model\.mode='oracle'.*data\.target_train_labels: true"):
        make_trainer(tmp_path, 1).fit(module, make_data(synthetic_root))


class KeepOutputs(Callback):
    def __init__(self) -> None:
        self.outputs: list[dict] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.outputs.append(outputs)


def test_confidence_mask_visual_is_the_pixels_of_q(synthetic_root: Path, tmp_path: Path) -> None:
    # A threshold of 0.15 with 9 classes makes some pixels confident and others not at initialisation.
    module = make_module(pseudo_label_threshold=0.15)
    keep = KeepOutputs()
    trainer = make_trainer(tmp_path, 1, callbacks=[keep])
    trainer.fit(module, make_data(synthetic_root))
    visuals = keep.outputs[0]["visuals"]
    mask = visuals["confidence_mask"]
    assert mask.dtype == torch.bool and mask.shape == visuals["pseudo_label"].shape == (2, SIZE, SIZE)
    assert 0.0 < mask.float().mean() < 1.0
    logged_q = float(trainer.callback_metrics["train/pseudo_label_weight"])  # mean of the per-sample q
    assert mask.float().mean(dim=(1, 2)).mean().item() == pytest.approx(logged_q)


def test_pseudo_label_logits_use_the_dplg_timestep(synthetic_root: Path) -> None:
    module = make_module(dplg_t0=50, dplg_t_end=10).eval()
    image = torch.rand(1, 3, SIZE, SIZE)
    seen: list[int] = []
    forward = module.backbone.forward

    def spy(image, timestep, cond, time_offset):
        seen.append(int(timestep))
        return forward(image, timestep, cond, time_offset)

    module.backbone.forward = spy
    logits, timestep = module.pseudo_label_logits(image, iteration=5)
    assert timestep == 25 == dplg_timestep(5, 50, 10) and seen == [25]  # t0 = dplg_t0, no draw
    torch.testing.assert_close(logits, module.segment(module.teacher, image, 25)[0])
    assert module.pseudo_label_logits(image, iteration=10)[1] == 0
    assert make_module(dplg=False).pseudo_label_timestep(0) == 0
    with pytest.raises(ValueError, match="makes no pseudo-labels"):
        make_module(mode="source_only").pseudo_label_logits(image, 0)

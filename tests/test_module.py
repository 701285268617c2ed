"""MADMModule on the tiny stack: one step, EMA, DPLG, LPLR switches, skipping, optimiser groups, resume."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.plugins import MixedPrecision

from madm_pl.callbacks import FiniteWeightsGuard, IoUTable
from madm_pl.data import CrossModalityDataModule
from madm_pl.method.dplg import dplg_timestep
from madm_pl.method.ema import ema_alpha
from madm_pl.module import MADMModule
from madm_pl.optim import HostOffloadAdamW
from tests.fake_trees import FakeTree, image_value, split_label, write_cityscapes, write_file_list, write_fmb

SIZE = 64  # crop and test size: the tiny stack needs multiples of 8 (VAE stride) and 32 (UNet taps)
#: A narrow head for the tiny stack, shared by the module tests.
NARROW_HEAD_WIDTHS = {
    "embed_dim": 16,
    "projection_channels": 32,
    "decoded_projection_channels": 32,
    "bottleneck_width": 32,
}
TINY_HEAD = {"head": {"class_path": "madm_pl.models.MADMHead", "init_args": NARROW_HEAD_WIDTHS}}


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
    # Frozen per METHOD.md §3: the VAE, and the UNet's output norm/conv.
    assert all(torch.equal(v, before_vae[k]) for k, v in module.backbone.vae.state_dict().items())
    for name in ("conv_out.weight", "conv_norm_out.weight"):
        assert torch.equal(unet_after[name], before_unet[name])
    assert not module.backbone.vae.training


def test_teacher_follows_ema_formula_after_two_steps(synthetic_root: Path, tmp_path: Path) -> None:
    """Teacher after step k's EMA update = alpha_k * teacher + (1 - alpha_k) * student (METHOD.md §4.1)."""
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
    ("lplr_source", "lplr_target", "expected", "decodes"),
    [(True, True, 5, 3), (True, False, 4, 3), (False, True, 4, 3), (False, False, 3, 0)],
)
def test_lplr_switches_skip_palette_encodes_and_tie_the_decode(
    synthetic_root: Path, tmp_path: Path, lplr_source: bool, lplr_target: bool, expected: int, decodes: int
) -> None:
    """Encodes per step: source, target (teacher), mixed, plus one per LPLR palette. Decodes: one per
    pass (source, teacher, mixed) when either LPLR term is on, none when both are off (METHOD.md §3)."""
    module = make_module(lplr_source=lplr_source, lplr_target=lplr_target)
    lplr = lplr_source or lplr_target
    assert module.backbone.decode_output is lplr
    for net in (module.student, module.teacher):
        assert net.head.finest_level == ("decoded" if lplr else "vae_encoder")
        assert (
            hasattr(net.head, "decoded_projection") is lplr
            and hasattr(net.head, "encoder_projection") is not lplr
        )
    calls = count_encoder_calls(module)
    decoder_calls: list[int] = []
    module.backbone.vae.decoder.register_forward_hook(lambda *_: decoder_calls.append(1))
    make_trainer(tmp_path, 1).fit(module, make_data(synthetic_root))
    assert len(calls) == expected and len(decoder_calls) == decodes
    logits = module(torch.rand(1, 3, SIZE, 2 * SIZE))
    assert logits.shape == (1, module.task.num_classes, SIZE, 2 * SIZE)


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
    head.forward = lambda *args: original(*args) * float("nan")
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


def test_non_finite_gradient_is_left_to_a_grad_scaler(tmp_path: Path) -> None:
    # With 16-mixed, Lightning's GradScaler skips overflowing steps (and lowers its scale) itself: the
    # module's guard must neither warn nor drop the gradients the scaler decides about.
    module = make_module()
    module.trainer = make_trainer(
        tmp_path, 1, plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]
    )
    params = [p for p in module.parameters() if p.requires_grad][:2]
    for param in params:
        param.grad = torch.full_like(param, math.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "non-finite gradient" warning would fail here
        module.on_before_optimizer_step(torch.optim.SGD(params, lr=1.0))
    assert all(bool(torch.isinf(param.grad).all()) for param in params)


def test_finite_weights_guard_refuses_nan_checkpoint(tmp_path: Path) -> None:
    module = make_module()
    checkpoint = {"state_dict": {"a": torch.ones(2), "b": torch.tensor([1.0, math.nan])}}

    class FakeTrainer:
        global_step = 7

    with pytest.raises(RuntimeError, match="non-finite weights in \\['b'\\]"):
        FiniteWeightsGuard().on_save_checkpoint(FakeTrainer(), module, checkpoint)


def test_optimizer_option_builds_its_mode_over_the_same_groups(tmp_path: Path) -> None:
    for name, kind in (("adamw", torch.optim.AdamW), ("adamw-offload", HostOffloadAdamW)):
        module = make_module(optimizer=name, adamw_implementation="fused")
        module.trainer = make_trainer(tmp_path, 10)
        module.trainer.strategy._lightning_module = module
        optimizer = module.configure_optimizers()["optimizer"]
        assert type(optimizer) is kind
        adamw = optimizer.host_optimizer if kind is HostOffloadAdamW else optimizer
        assert adamw.defaults["fused"] is True and not adamw.defaults["foreach"]
        assert [g["name"] for g in optimizer.param_groups] == [g["name"] for g in module.parameter_groups()]
    with pytest.raises(
        ValueError, match=r"model\.optimizer='sgd': expected one of \['adamw', 'adamw-offload'"
    ):
        make_module(optimizer="sgd")
    with pytest.raises(
        ValueError, match=r"model\.adamw_implementation='loop': expected 'foreach' or 'fused'"
    ):
        make_module(adamw_implementation="loop")


def test_optimizer_groups_and_lr_schedule(synthetic_root: Path, tmp_path: Path) -> None:
    module = make_module(lr=5e-6, weight_decay=0.05, head_lr_multiplier=10.0)
    trainer = make_trainer(tmp_path, 1000)
    module.trainer = trainer  # configure_optimizers reads trainer.max_steps
    trainer.strategy._lightning_module = module
    config = module.configure_optimizers()
    groups = {group["name"]: group for group in config["optimizer"].param_groups}
    assert list(groups) == ["unet", "unet_no_decay", "conditioning", "head", "head_no_decay"]
    assert {name: g["weight_decay"] for name, g in groups.items()} == {
        "unet": 0.05,
        "unet_no_decay": 0.0,
        "conditioning": 0.05,
        "head": 0.05,
        "head_no_decay": 0.0,
    }
    # The head (from scratch) at 10x the UNet's and the conditioning's rate.
    assert {name: g["initial_lr"] for name, g in groups.items()} == pytest.approx(
        {"unet": 5e-6, "unet_no_decay": 5e-6, "conditioning": 5e-6, "head": 5e-5, "head_no_decay": 5e-5}
    )
    decay_ids = {id(p) for name in ("unet", "conditioning", "head") for p in groups[name]["params"]}
    no_decay_ids = {id(p) for name in ("unet_no_decay", "head_no_decay") for p in groups[name]["params"]}
    head_ids = {id(p) for p in module.student.head.parameters()}
    assert head_ids == {id(p) for name in ("head", "head_no_decay") for p in groups[name]["params"]}
    assert config["lr_scheduler"]["name"] == "lr"
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
    assert scheduler.get_last_lr()[3] == pytest.approx(5e-5 * 0.067)
    assert config["lr_scheduler"]["interval"] == "step"


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_resume_equals_uninterrupted(synthetic_root: Path, tmp_path: Path) -> None:
    """3 steps + resume + 3 steps gives the weights of 6 uninterrupted steps (METHOD.md §4, issue 4)."""
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


def test_pseudo_labels_use_the_dplg_timestep_and_the_threshold(synthetic_root: Path) -> None:
    module = make_module(dplg_t0=50, dplg_t_end=10, pseudo_label_threshold=0.2).eval()
    image = torch.rand(1, 3, SIZE, SIZE)
    seen: list[int] = []
    forward = module.backbone.forward

    def spy(image, timestep, cond, time_offset):
        seen.append(int(timestep))
        return forward(image, timestep, cond, time_offset)

    module.backbone.forward = spy
    pseudo, timestep = module.pseudo_labels(image, iteration=5)
    assert timestep == 25 == dplg_timestep(5, 50, 10) and seen == [25]  # t0 = dplg_t0, no draw
    logits = module.segment(module.teacher, image, 25)[0]
    torch.testing.assert_close(pseudo.label, logits.argmax(1))
    confident = torch.softmax(logits, 1).amax(1) >= 0.2  # the module's threshold, not the default
    assert torch.equal(pseudo.confident, confident) and 0 < confident.float().mean() <= 1
    assert module.pseudo_labels(image, iteration=10)[1] == 0
    assert make_module(dplg=False).pseudo_label_timestep(0) == 0
    with pytest.raises(ValueError, match="makes no pseudo-labels"):
        make_module(mode="source_only").pseudo_labels(image, 0)


# --------------------------------------------------------------------- the reference protocol
# Five uniform 8x8 FMB test images, (ground truth, prediction) in 9-class ids (sky 0, road 4, car 7).
# The reference's rank-0 share on 2 GPUs is the first 3 images of its list (data/reference.py).
FIVE_IMAGES = [(0, 0), (4, 4), (0, 4), (7, 7), (7, 0)]
FMB_ID = {0: 7, 4: 1, 7: 9}  # FMB label ids of sky, road, car


def five_image_test_split(tmp_path: Path) -> FakeTree:
    """``tmp_path/fmb`` with the five test images (and one Cityscapes image, which the test never reads)."""
    write_cityscapes(tmp_path / "cityscapes", [split_label((32, 64), 0, 13)])
    labels = [np.full((8, 8), FMB_ID[truth], np.uint8) for truth, _ in FIVE_IMAGES]
    return write_fmb(tmp_path / "fmb", labels, train_count=1, size=(8, 8))


def predict_by_image(module: MADMModule) -> None:
    """Replace the network: image ``i`` (grey value ``image_value(i)``) is predicted as FIVE_IMAGES[i][1]."""

    def forward(image: torch.Tensor) -> torch.Tensor:
        index = ((image[:, 0, 0, 0] * 255 - image_value(0)) / 20).round().long()
        classes = torch.tensor([predicted for _, predicted in FIVE_IMAGES])[index]
        one_hot = torch.nn.functional.one_hot(classes, module.task.num_classes).float()
        return one_hot[:, :, None, None].expand(-1, -1, *image.shape[-2:])

    module.forward = forward


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's CPU/num_workers advice
def test_reference_protocol_scores_the_first_half_next_to_the_whole_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fmb = five_image_test_split(tmp_path)
    module = make_module()
    predict_by_image(module)
    trainer_args = dict(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[IoUTable()])
    data = dict(test_size=(8, 8), source_resize=(32, 64), crop_size=(32, 32), target_resize=(32, 64))
    caplog.set_level(logging.INFO)
    scores = Trainer(**trainer_args).test(module, make_data(tmp_path, **data), verbose=False)[0]
    # whole split: sky TP 64, FN 64 (image 2), FP 64 (image 4) -> 1/3; road 1/2; car 1/2 -> 4/9; logged in
    # percent, rounded once to the table's two decimals
    assert scores["test/miou"] == pytest.approx(44.44)
    assert scores["test_iou/sky"] == pytest.approx(33.33)
    # images 0-2: sky TP 64, FN 64 -> 1/2; road TP 64, FP 64 -> 1/2; car absent (not logged) -> 1/2
    assert scores["test/miou_reference_protocol"] == pytest.approx(50.0)
    assert scores["test_iou/sky_reference_protocol"] == pytest.approx(50.0)
    assert "test_iou/car_reference_protocol" not in scores and "test_iou/car" in scores
    assert (
        "reference protocol: the reference's rank-0 share on 2 GPUs: the first 3 of the 5 test" in caplog.text
    )
    assert module.last_scores["reference_protocol"]["miou"] == pytest.approx(0.5)

    # A file list sets the order: reversed, the share is images 4, 3, 2 (sky 0, road 0, car 1/2 -> 1/6).
    reversed_list = write_file_list(
        tmp_path / "test.json", target_images=fmb.test_images[::-1], target_labels=fmb.test_labels[::-1]
    )
    listed = make_data(tmp_path, test_file_list=str(reversed_list), **data)
    scores = Trainer(**trainer_args).test(module, listed, verbose=False)[0]
    assert scores["test/miou"] == pytest.approx(44.44)
    assert scores["test/miou_reference_protocol"] == pytest.approx(16.67)
    assert scores["test_iou/road_reference_protocol"] == 0.0  # predicted on image 2, in no label of the share


# ------------------------------------------------------------------------------------ precision
def test_fp16_vae_option_and_its_precision_check(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"model\.vae_dtype='float64': expected one of \['float32', 'float16', 'bfloat16'\]"
    ):
        make_module(vae_dtype="float64")
    # the bf16 VAE (the 24 GB mode's) meets fp32 tensors only under bf16 autocast
    with pytest.raises(
        ValueError,
        match=r"model\.vae_dtype='bfloat16' needs trainer\.precision='bf16-mixed', but .*'32-true'",
    ):
        make_trainer(tmp_path, 1).fit(make_module(vae_dtype="bfloat16"), make_data(synthetic_root))
    module = make_module(vae_dtype="float16")
    assert {p.dtype for p in module.backbone.vae.parameters()} == {torch.float16}
    assert {p.dtype for p in module.backbone.unet.parameters()} == {torch.float32}
    # the fp32 head and losses read fp16 VAE outputs only under fp16 autocast: a clear error, no dtype crash
    with pytest.raises(
        ValueError, match=r"needs trainer\.precision='16-mixed' .* but trainer\.precision='32-true'"
    ):
        make_trainer(tmp_path, 1).fit(module, make_data(synthetic_root))
    # on a CPU Lightning runs 16-mixed as bf16-mixed, where an fp16 VAE cannot run: the same clear error
    with pytest.raises(
        ValueError, match=r"trainer\.precision='bf16-mixed' \(on a CPU Lightning runs 16-mixed"
    ):
        make_trainer(tmp_path, 1, precision="16-mixed").fit(module, make_data(synthetic_root))


@pytest.mark.slow  # fp16 convolutions on the CPU: minutes for 2 steps (the guard logic: the test above)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's CPU advice and lr_scheduler order note
def test_16_mixed_with_fp16_vae_leaves_overflows_to_the_grad_scaler(
    synthetic_root: Path, tmp_path: Path
) -> None:
    # The reference's precision on the CPU: Trainer(precision="16-mixed") falls back to bf16 there, so the
    # plugin is passed itself (fp16 autocast on the CPU and a GradScaler; a small initial scale keeps the
    # tiny model's fp16 backward from overflowing by itself).
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    module = make_module(vae_dtype="float16")
    first = next(module.student.head.parameters())
    calls = {"backward": 0}

    def overflow_first_step(grad: torch.Tensor) -> torch.Tensor:
        calls["backward"] += 1
        return torch.full_like(grad, math.inf) if calls["backward"] == 1 else grad

    first.register_hook(overflow_first_step)
    snapshots: list[tuple[dict[str, torch.Tensor], float]] = []

    class Snapshot(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            snapshots.append((state(pl_module.student), trainer.precision_plugin.scaler.get_scale()))

    before = state(module.student)
    trainer = make_trainer(
        tmp_path, 2, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)], callbacks=[Snapshot()]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, make_data(synthetic_root))
    assert trainer.precision == "16-mixed"
    assert not [w for w in caught if "non-finite gradient" in str(w.message)]  # the module's guard kept out
    learned = [k for k in before if "running" not in k and "num_batches" not in k]
    (after_overflow, scale_0), (after_finite, scale_1) = snapshots
    assert all(torch.equal(after_overflow[k], before[k]) for k in learned)  # the scaler skipped step 0
    assert (scale_0, scale_1) == (128.0, 128.0)  # halved once, no growth within 2000 steps
    assert any(not torch.equal(after_finite[k], before[k]) for k in learned)  # step 1 trained
    # Lightning moved the module (.to(device)) without touching dtypes: the VAE is still fp16
    assert {p.dtype for p in module.backbone.vae.parameters()} == {torch.float16}


@pytest.mark.parametrize("color_jitter", ["kornia-0.6", "kornia-0.9"])
def test_color_jitter_option_reaches_the_strong_augmentation(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, color_jitter: str
) -> None:
    import madm_pl.module as module_file

    seen: list[str] = []
    original = module_file.strong_augment

    def recording(image, generator, **kwargs):
        seen.append(kwargs["color_jitter"])
        return original(image, generator, **kwargs)

    monkeypatch.setattr(module_file, "strong_augment", recording)
    module = make_module(color_jitter=color_jitter, lplr_source=False, lplr_target=False)
    make_trainer(tmp_path, 1).fit(module, make_data(synthetic_root))
    assert seen == [color_jitter]


def test_unknown_color_jitter_is_named() -> None:
    with pytest.raises(ValueError, match=r"model.color_jitter='kornia-0.7': expected one of \['kornia-0.6'"):
        make_module(color_jitter="kornia-0.7")

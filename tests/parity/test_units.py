"""Parity with the reference, rule by rule: madm-pl's functions on the inputs the reference was run on.

Goldens: ``tests/parity/goldens/`` (``tools/parity/regenerate.py``). Tolerances and their reasons are in
``tests/parity/README.md``; each assertion names the compared quantity.
"""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

import madm_pl.method.classmix as classmix_module
from madm_pl.labels import get_task
from madm_pl.method.classmix import classmix_masks, mix
from madm_pl.method.dplg import dplg_timestep
from madm_pl.method.ema import ema_alpha, ema_update
from madm_pl.method.lplr import lplr_loss, painted_label
from madm_pl.method.pseudo_label import mixed_weight, pseudo_label
from madm_pl.method.schedule import lr_factor
from madm_pl.method.segmentation import segmentation_loss
from tests.parity import fixtures as fx
from tests.parity.common import (
    REPO,
    assert_close,
    assert_sample,
    build_module,
    golden_json,
    golden_tensors,
    paper_config,
    reference_name,
)
from tests.parity.draws import TorchWith

# diffusers 0.25 (reference) vs 0.42 (madm-pl) kernels and reduction orders differ at ~1e-6 at tiny widths.
KERNELS = {"rtol": 1e-5, "atol": 2e-6}


@pytest.fixture(scope="module")
def module():
    """The paper recipe's module on the parity stack, with the reference's weights."""
    with pytest.MonkeyPatch.context() as patch:
        built, _ = build_module(patch)
    return built


def expand(runs: list[list]) -> list:
    return [value for first, last, value in runs for _ in range(first, last + 1)]


# ---------------------------------------------------------------------------------------------- DPLG
def test_dplg_timestep_at_every_iteration_of_every_task():
    # Exact: integer arithmetic on both sides; every iteration 0 .. T_end + 2, both t0 draws, three tasks.
    for key, schedule in golden_json("dplg")["schedules"].items():
        t0 = int(key.split("t0=")[1])
        expected = expand(schedule["runs"])
        actual = [dplg_timestep(i, t0, schedule["t_end"]) for i in range(len(expected))]
        assert actual == expected, (
            f"{key}: first difference at iteration {_first_difference(actual, expected)}"
        )


def test_paper_configs_use_the_reference_dplg_constants():
    schedules = golden_json("dplg")["schedules"]
    for task in ("rgb2infrared", "rgb2depth", "rgb2event"):
        from madm_pl.cli import parse_config

        config = parse_config(["-c", str(REPO / "configs" / f"{task}.yaml")]).model.init_args
        golden = next(v for k, v in schedules.items() if k.startswith(task))
        assert (config.dplg_t0, config.dplg_t_end) == (golden["base"], golden["t_end"]), task


def test_fixed_noise_and_noised_latent(module):
    golden = golden_json("dplg")
    # The fixed noise: torch.randn(1, 4, 64, 64) from seed 42 on both sides: bit-identical.
    assert_sample(module.backbone.noise, golden["noise"], rtol=0, atol=0, what="fixed noise")
    latent = fx.fill("parity/latent64", (2, 4, 64, 64))
    assert fx.checksum(latent) == golden["latent_checksum"]
    for t, expected in golden["noised"].items():
        # DDPMScheduler.add_noise in diffusers 0.25 and 0.42: the same float32 formula.
        assert_sample(
            module.backbone.add_noise(latent, int(t)),
            expected,
            rtol=1e-6,
            atol=1e-6,
            what=f"noised latent at t={t}",
        )


# ---------------------------------------------------------------------------------------------- LPLR
def test_palettes_and_painted_labels():
    golden, tensors = golden_json("lplr"), golden_tensors("lplr")
    for task, palette in golden["palettes"].items():
        assert get_task(task).palette.reshape(-1).tolist() == palette, f"{task} palette"
    label = tensors["label"].long()
    label[label == 255] = 255  # stored as uint8
    painted = painted_label(label, get_task("rgb2infrared").palette)
    # Exact: (rgb / 255 - 0.5) / 0.5 and rgb / 255 * 2 - 1 round the same way in float32.
    assert_close(painted, tensors["painted"], rtol=0, atol=0, what="painted label")
    assert torch.equal((label != 255).to(torch.uint8), tensors["valid"]), "LPLR valid mask"


def test_vae_latents_encode_and_decode(module):
    tensors = golden_tensors("lplr")
    # Encode: the posterior mean times 0.18215 through diffusers 0.25 / 0.42 kernels.
    assert_close(module.backbone.encode(tensors["painted"]), tensors["latent"], what="VAE latent", **KERNELS)
    # Decode: the reference multiplies by 1/0.18215, madm-pl divides by 0.18215 (one rounding apart, ~1e-7
    # relative on the latent), which the decoder amplifies to ~1e-5 on its output.
    assert_close(
        module.backbone.decode(tensors["latent"]), tensors["decoded"], rtol=1e-4, atol=2e-5, what="VAE decode"
    )


def test_both_losses():
    golden, tensors = golden_json("lplr"), golden_tensors("lplr")
    generator = torch.Generator().manual_seed(7)
    source_logits = torch.randn(1, fx.NUM_CLASSES, 32, 32, generator=generator) * 3
    target_logits = torch.randn(1, fx.NUM_CLASSES, 32, 32, generator=generator) * 3
    pred_source = torch.randn(1, 4, 4, 4, generator=generator)
    pred_target = torch.randn(1, 4, 4, 4, generator=generator)
    assert fx.checksum(source_logits) == golden["inputs_checksum"]["source_logits"]
    assert fx.checksum(pred_target) == golden["inputs_checksum"]["pred_target"]
    source_label, target_label = _label(tensors["loss_label"]), _label(tensors["target_label"])
    losses = golden["losses"]
    q = torch.tensor([golden["q"]])
    actual = {
        "source_loss": segmentation_loss(source_logits, source_label),
        "target_loss": segmentation_loss(target_logits, target_label, tensors["pixel_weight"]),
        "vae_decoder_source_loss": lplr_loss(pred_source, tensors["source_latent"], source_label),
        "vae_decoder_target_loss": lplr_loss(pred_target, tensors["target_latent"], target_label, q),
    }
    # float32 reductions of the same terms: ~1e-7 relative.
    for name, value in actual.items():
        assert value.item() == pytest.approx(losses[name], rel=1e-6), name


def test_painted_target_latent(module):
    tensors = golden_tensors("lplr")
    palette = get_task("rgb2infrared").palette
    latent = module.backbone.encode(painted_label(_label(tensors["target_label"]), palette))
    assert_close(latent, tensors["target_latent"], what="LPLR target latent", **KERNELS)


# ------------------------------------------------------------------------------------ q and weights
def test_q_and_pixel_weights():
    golden, tensors = golden_json("pseudo_label"), golden_tensors("pseudo_label")
    for name, case in golden.items():
        generator = torch.Generator().manual_seed(11)
        logits = torch.randn(1, fx.NUM_CLASSES, 32, 48, generator=generator) * case["scale"]
        assert fx.checksum(logits) == case["logits_checksum"]
        label, q = pseudo_label(logits)
        # The same softmax and >= 0.968 count over all pixels; q is float32 here, a Python float there.
        assert q.item() == pytest.approx(case["q"], rel=6e-8, abs=0), f"{name}: q"
        assert torch.equal(label, tensors[f"{name}/pseudo_label"].long()), f"{name}: pseudo-labels"
        weight = mixed_weight(tensors[f"{name}/mix_mask"].float(), q)
        assert_close(weight, tensors[f"{name}/mixed_weight"], rtol=0, atol=0, what=f"{name}: pixel weights")
    assert 0.2 < golden["confident"]["q"] < 0.8, "the golden's q should be neither 0 nor 1"


# ----------------------------------------------------------------------------------------------- EMA
def test_ema_teacher():
    golden, tensors = golden_json("ema"), golden_tensors("ema")

    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))

    student, teacher = net(), net()
    with torch.no_grad():
        for prefix, model in (("student", student), ("teacher", teacher)):
            for name, tensor in model.state_dict(keep_vars=True).items():
                if tensor.is_floating_point():
                    tensor.copy_(fx.fill(f"ema/{prefix}/{name}", tensor.shape))
    for step, iteration in enumerate(golden["iterations"]):
        with torch.no_grad():
            for name, param in student.named_parameters():
                param.add_(0.1 * fx.fill(f"ema/move/{step}/{name}", param.shape))
        ema_update(teacher, student, ema_alpha(iteration, golden["ema_alpha"]))
        for name, tensor in teacher.state_dict().items():
            # alpha * ema + (1 - alpha) * param: a float32 rounding apart (multi-tensor add vs two products).
            assert_close(
                tensor,
                tensors[f"{iteration}/{name}"],
                rtol=1e-6,
                atol=1e-7,
                what=f"teacher {name} after the update at iteration {iteration}",
            )


# ------------------------------------------------------------------------------------------ ClassMix
def test_classmix_masks_and_mix(monkeypatch):
    golden, tensors = golden_json("classmix"), golden_tensors("classmix")
    label = _label(tensors["label"])
    chosen, classes = golden["chosen"], golden["classes"]
    assert torch.unique(label).tolist() == classes, "classes of the batch, 255 included"

    def randperm(n: int, **kwargs: object) -> torch.Tensor:
        assert n == len(classes), f"madm-pl draws among {n} classes, the reference among {len(classes)}"
        return torch.tensor(chosen + [i for i in range(n) if i not in chosen])

    monkeypatch.setattr(classmix_module, "torch", TorchWith(randperm=randperm))
    mask = classmix_masks(label, torch.Generator(), include_ignore=True)
    # ceil(n / 2) classes (255 counts as one) -> the same pasted pixels, exactly.
    assert len(chosen) == math.ceil(len(classes) / 2)
    assert torch.equal(mask.to(torch.uint8), tensors["mask"]), "ClassMix mask"
    generator = torch.Generator().manual_seed(5)
    source, target = torch.rand(2, 3, 16, 16, generator=generator).unbind(0)
    pseudo = torch.randint(0, fx.NUM_CLASSES, (16, 16), generator=generator)
    assert fx.checksum(source) == golden["inputs_checksum"]["source"]
    mixed_image = mix(mask, source[None], target[None])
    assert_close(mixed_image, tensors["mixed_image"], rtol=0, atol=0, what="mixed image")
    mixed_label = mix(mask, label, pseudo[None])
    assert torch.equal(mixed_label[:, None].to(torch.uint8), tensors["mixed_label"]), "mixed label"


def test_classmix_draws_half_the_classes_with_its_own_generator():
    label = _label(golden_tensors("classmix")["label"])
    count = len(golden_json("classmix")["chosen"])
    for seed in range(5):
        mask = classmix_masks(label, torch.Generator().manual_seed(seed), include_ignore=True)
        assert torch.unique(label[mask[:, 0] > 0]).numel() == count


# ---------------------------------------------------------------------------------------- UNet taps
def test_unet_taps_and_output(module):
    golden, tensors = golden_json("taps"), golden_tensors("taps")
    cond, time_offset = module.student.conditioning(module.backbone.uncond)
    # tanh(a_u) * uncond + tanh(a_c) * P and tanh(g) * E: the same float32 ops.
    assert_sample(cond, golden["cond"], rtol=1e-6, atol=1e-7, what="prompt (cross-attention context)")
    assert_sample(time_offset[:, None], golden["time"], rtol=1e-6, atol=1e-7, what="time offset")
    latent = fx.fill("parity/latent_taps", (1, 4, 8, 16))
    assert fx.checksum(latent) == golden["latent_checksum"]
    with torch.no_grad():
        features, output = module.backbone.forward_latent(latent, golden["timestep"], cond, time_offset)
    # Reference indices [5, 8, 11] ('after') = the last layer of up blocks 1, 2, 3 with layers_per_block=2.
    assert golden["unet_block_indices"] == [5, 8, 11]
    for name, feature in zip(("s32", "s16", "s8"), features):
        assert_close(feature, tensors[name], what=f"UNet tap {name}", **KERNELS)
    assert_close(output, tensors["output"], what="UNet output", **KERNELS)


# ---------------------------------------------------------------------------------------------- head
def test_projections_and_head(module):
    golden = golden_json("head")
    head = module.student.head
    saved = head.dropout
    fx.replace_dropout(head, "student")
    try:
        decoded = fx.fill("parity/head/decoded", (1, 3, *fx.IMAGE_SIZE))
        taps = []
        for stride, channels in zip((8, 16, 32), reversed(fx.TAP_CHANNELS)):
            size = (fx.IMAGE_SIZE[0] // stride, fx.IMAGE_SIZE[1] // stride)
            taps.append(fx.fill(f"parity/head/s{stride}", (1, channels, *size)))
        assert [fx.checksum(t) for t in (decoded, *taps)] == golden["inputs_checksum"]
        head.train()
        with torch.no_grad():
            logits = head(list(reversed(taps)), decoded)
    finally:
        head.dropout = saved
    # Train mode (BatchNorm batch statistics, the replayed dropout masks). Linear-on-pixels (reference) vs
    # 1x1 conv (madm-pl) embeddings and GroupNorm / BatchNorm reductions: ~1e-6.
    assert_sample(logits, golden["logits"], rtol=1e-4, atol=1e-5, what="head logits")
    assert_close(
        logits.double().sum(dim=(0, 2, 3)),
        torch.tensor(golden["class_sums"]),
        rtol=1e-5,
        atol=1e-2,
        what="head logits, per-class sums",
    )


# ------------------------------------------------------------------------------------------ optimizer
def test_optimizer_groups(module, tmp_path):
    golden = golden_json("optimizer")
    module.trainer = Trainer(max_steps=10000, accelerator="cpu", logger=False, default_root_dir=tmp_path)
    optimizer = module.configure_optimizers()["optimizer"]
    actual = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            actual[id(param)] = (group["initial_lr"], group["weight_decay"])
    by_name = {reference_name(n): actual[id(p)] for n, p in module.named_parameters() if id(p) in actual}
    expected = {n: (g["lr"], g["weight_decay"]) for g in golden["groups"] for n in g["params"]}
    assert sorted(by_name) == sorted(expected), "the trained parameters differ: " + repr(
        sorted(set(by_name) ^ set(expected))[:10]
    )
    assert by_name == expected, [n for n in expected if by_name[n] != expected[n]][:10]
    assert module.hparams.lr == golden["lr"] and module.hparams.weight_decay == golden["weight_decay"]


def test_lr_schedule_at_every_iteration():
    # fvcore's formulas re-derived: equal to float rounding (~1e-16).
    for max_iter, runs in golden_json("optimizer")["lr_factor"].items():
        expected = expand(runs)
        actual = [lr_factor(i, int(max_iter)) for i in range(int(max_iter))]
        assert actual == pytest.approx(expected, rel=1e-12, abs=0), f"N={max_iter}"


def test_paper_config_clip_and_steps():
    golden = golden_json("optimizer")
    trainer = paper_config().trainer
    assert trainer.gradient_clip_val == golden["grad_clip"] and trainer.gradient_clip_algorithm == "norm"
    assert trainer.max_steps == golden_json("full_step")["max_iter"]


def _label(stored: torch.Tensor) -> torch.Tensor:
    return stored.long()


def _first_difference(actual: list, expected: list) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(actual, expected)) if a != b), None)

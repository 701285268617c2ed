"""The tiny diffusion prior: the committed folder, palette reconstruction, reproducible, atomic training."""

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import madm_pl.prior.train as prior_train
from madm_pl.models import DiffusionBackbone
from madm_pl.models.backbone import tap_layers, tap_output
from madm_pl.models.presets import STACK_PARTS, TINY_UNET_CONFIG, TINY_VAE_CONFIG, build_stack
from madm_pl.prior import PriorOptions, main, train_prior
from madm_pl.prior.evaluate import nearest_class, palette_accuracy
from madm_pl.prior.scenes import HELDOUT_START, render_pool
from madm_pl.prior.train import cross_modal_contrastive_loss, fold_latent_scale, warmup_cosine_factor

PRIOR = Path(__file__).parents[2] / "priors" / "tiny"
WEIGHTS = ("vae/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors")


def tiny_options(out: Path, **changes) -> PriorOptions:
    """A few steps on a pool of one scene per modality at 64x128: seconds on CPU."""
    options = dict(
        out=str(out), pool_size=1, height=64, width=128, size=32, unet_size=64, steps_vae=2, steps_unet=2,
        batch_vae=4, batch_unet=4, paired_pool_size=1,
    )  # fmt: skip
    return PriorOptions(**(options | changes))


@pytest.fixture(scope="module")
def held_out_layouts() -> torch.Tensor:
    """The layouts of 4 held-out prior scenes (one per modality) at the pool size 128x256."""
    _, layouts = render_pool(0, 1, 128, 256, start=HELDOUT_START, progress=False)
    return layouts


# ------------------------------------------------------------------------------------ the committed prior
def test_committed_prior_has_the_diffusers_layout_and_tiny_architecture():
    assert (PRIOR / "model_index.json").is_file() and (PRIOR / "TRAINING.json").is_file()
    for part in STACK_PARTS:
        assert (PRIOR / part).is_dir(), part
    for name in WEIGHTS:
        assert (PRIOR / name).is_file(), name
    vae_config = json.loads((PRIOR / "vae" / "config.json").read_text())
    unet_config = json.loads((PRIOR / "unet" / "config.json").read_text())
    for key, value in TINY_VAE_CONFIG.items():
        assert vae_config[key] == (list(value) if isinstance(value, tuple) else value), key
    for key, value in TINY_UNET_CONFIG.items():
        assert unet_config[key] == (list(value) if isinstance(value, tuple) else value), key


def test_committed_prior_loads_through_the_backbone():
    backbone = DiffusionBackbone(str(PRIOR))
    tiny = DiffusionBackbone("tiny")
    assert backbone.feature_channels == tiny.feature_channels
    assert torch.equal(backbone.uncond, tiny.uncond)  # the same tiny text encoder and tokenizer
    with torch.no_grad():
        output = backbone(
            torch.zeros(1, 3, 64, 64), 0, backbone.uncond, torch.zeros(1, backbone.time_embed_dim)
        )
    assert output.latent.shape == (1, 4, 8, 8) and output.decoded.shape == (1, 3, 64, 64)
    # Not the random preset: the weights were trained.
    assert not torch.equal(backbone.vae.encoder.conv_in.weight, tiny.vae.encoder.conv_in.weight)


@pytest.mark.parametrize("palette_index", [0, 1], ids=["11-class", "9-class"])
def test_prior_vae_reconstructs_palettes_and_the_random_vae_does_not(held_out_layouts, palette_index):
    prior_accuracy, _ = palette_accuracy(build_stack(str(PRIOR)).vae.eval(), held_out_layouts, palette_index)
    random_accuracy, _ = palette_accuracy(build_stack("tiny").vae.eval(), held_out_layouts, palette_index)
    # Loose but failing-if-broken: the committed prior scores 0.89 (11 classes) and 0.91 (9 classes) on
    # these held-out layouts, the random-weight VAE 0.14 and 0.24.
    assert prior_accuracy > 0.8
    assert random_accuracy < 0.8  # the bound can fail


def test_nearest_class_maps_palette_colours_and_black():
    palette = torch.tensor([[255, 0, 0], [0, 0, 255]], dtype=torch.uint8)
    decoded = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.0, 0.8], [0.05, 0.05, 0.05]]).T.reshape(1, 3, 1, 3)
    assert nearest_class(decoded, palette).tolist() == [[[0, 1, 255]]]


# ------------------------------------------------------------------------------------------------ training
def test_training_is_reproducible_and_writes_a_loadable_prior(tmp_path):
    first = train_prior(tiny_options(tmp_path / "first"), progress=False)
    second = train_prior(tiny_options(tmp_path / "second"), progress=False)
    for name in WEIGHTS:
        weights_first, weights_second = load_file(first / name), load_file(second / name)
        assert weights_first.keys() == weights_second.keys()
        assert all(torch.equal(weights_first[key], weights_second[key]) for key in weights_first), name
    record = json.loads((first / "TRAINING.json").read_text())
    assert record["options"]["seed"] == 0 and record["pool"]["split_code"] == 3
    assert set(record["final_losses"]) == {"vae", "unet"}
    assert set(record["final_losses"]["unet"]) == {"mse", "align", "align_top1"}  # the paired pool aligned
    assert set(json.loads((first / "model_index.json").read_text())) >= set(STACK_PARTS)
    assert DiffusionBackbone(str(first)).feature_channels == DiffusionBackbone("tiny").feature_channels
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first", "second"]  # no staging left


def test_another_seed_gives_other_weights(tmp_path):
    first = train_prior(tiny_options(tmp_path / "a", steps_unet=0), progress=False)
    other = train_prior(tiny_options(tmp_path / "b", steps_unet=0, seed=1), progress=False)
    assert not torch.equal(load_file(first / WEIGHTS[0])["encoder.conv_in.weight"],
                           load_file(other / WEIGHTS[0])["encoder.conv_in.weight"])  # fmt: skip


def test_interrupted_write_leaves_the_old_prior_and_no_half_one(tmp_path, monkeypatch):
    out = tmp_path / "tiny"
    out.mkdir()
    (out / "marker").write_text("old prior")

    def failing_save(path, **parts):
        parts["vae"].save_pretrained(Path(path) / "vae")
        raise KeyboardInterrupt

    monkeypatch.setattr(prior_train, "save_stack", failing_save)
    with pytest.raises(KeyboardInterrupt):
        train_prior(tiny_options(out, steps_vae=0, steps_unet=0), progress=False)
    assert [path.name for path in tmp_path.iterdir()] == ["tiny"]
    assert (out / "marker").read_text() == "old prior"


def test_fold_latent_scale_scales_the_latent_and_keeps_the_reconstruction():
    vae = build_stack("tiny").vae.eval()
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latent = vae.encode(image).latent_dist.mean
        decoded = vae.decode(latent).sample
        fold_latent_scale(vae, 4.0)
        folded = vae.encode(image).latent_dist.mean
        assert torch.allclose(folded, 4.0 * latent, atol=1e-5)
        assert torch.allclose(vae.decode(folded).sample, decoded, atol=1e-5)


@pytest.mark.parametrize(
    ("argument", "option"),
    [
        (["--size", "60"], "--size"),
        (["--unet-size", "96"], "--unet-size"),
        (["--pool-size", "0"], "--pool-size"),
    ],
)
def test_bad_options_name_the_option(tmp_path, capsys, argument, option):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "tiny"), *argument])
    assert option in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()


def test_warmup_cosine_factor_on_hand_computed_steps():
    assert warmup_cosine_factor(0, 100) == pytest.approx(1 / 20)  # linear warm-up over 20 steps
    assert warmup_cosine_factor(19, 100) == 1.0
    assert warmup_cosine_factor(20, 100) == 1.0  # the cosine starts at 1
    assert warmup_cosine_factor(60, 100) == pytest.approx(0.55)  # half way: 0.1 + 0.45
    assert warmup_cosine_factor(100, 100) == pytest.approx(0.1)
    assert warmup_cosine_factor(500, 100) == pytest.approx(0.1)  # stays at 10 % past the end


# ------------------------------------------------------------------------------- cross-modal alignment
def test_contrastive_loss_on_hand_computed_tokens():
    # Two samples of one position, one-hot features, b = a: the tokens are [e1, e2, e1, e2]. At temperature
    # 1 each token's candidates are the 3 others, with cosines (0, 1, 0) for e1: loss log(1 + 2/e).
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 2, 1, 1)
    loss, accuracy = cross_modal_contrastive_loss(a, a.clone(), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e))
    assert accuracy.item() == 1.0
    # Features that carry nothing (all equal): every logit ties among the 2T - 1 others (T = 12 tokens).
    flat = torch.ones(3, 4, 2, 2)
    loss, _ = cross_modal_contrastive_loss(flat, flat, temperature=0.1)
    assert loss.item() == pytest.approx(math.log(2 * 12 - 1))
    # Swapped pairs: [e1, e2, e2, e1]: e1's pair is e2 (cosine 0) against e2 (0) and e1 (1): log(2 + e).
    loss_swapped, accuracy = cross_modal_contrastive_loss(a, a.flip(0), temperature=1.0)
    assert accuracy.item() == 0.0 and loss_swapped.item() == pytest.approx(math.log(2 + math.e))
    # A modality offset: b = a + the same vector at every token. Matched within the batch, but the tokens of
    # a's own modality are candidates too, so the offset costs loss (it would cost nothing in a
    # cross-modal-only InfoNCE).
    plain = torch.cat([a, torch.zeros(2, 1, 1, 1)], 1)
    shifted = torch.cat([a, torch.full((2, 1, 1, 1), 3.0)], 1)
    assert (
        cross_modal_contrastive_loss(plain, shifted, 1.0)[0]
        > cross_modal_contrastive_loss(plain, plain, 1.0)[0]
    )
    # At most max_tokens positions enter: with 1 of 12, only its pair and its copy in b compete (log 1 = 0).
    many = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    loss, accuracy = cross_modal_contrastive_loss(many, many, 0.1, max_tokens=1, generator=torch.Generator())
    assert loss.item() == pytest.approx(0.0) and accuracy.item() == 1.0
    with pytest.raises(ValueError, match="differ"):
        cross_modal_contrastive_loss(a, flat, temperature=1.0)


def test_alignment_makes_paired_taps_retrievable():
    # Paired latents whose second modality is a fixed transform of the first (-x): a short UNet training
    # with the alignment term makes a crop's taps find their pair among every position of the batch,
    # which an untrained UNet cannot.
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(6, 1, 4, 8, 8, generator=generator)
    paired = torch.cat([first, -first], dim=1)  # (S=6, M=2, 4, 8, 8)
    options = tiny_options("unused", steps_unet=60, batch_unet=8, lr_unet=3e-3, align_weight=1.0)
    stack = build_stack("tiny")

    def retrieval(unet) -> float:
        taps = []
        hooks = [
            layer.register_forward_hook(lambda m, a, o: taps.append(tap_output(o)))
            for layer in tap_layers(unet)
        ]
        with torch.no_grad():
            unet(paired.flatten(0, 1), torch.zeros(12, dtype=torch.long), stack.uncond.expand(12, -1, -1))
        for hook in hooks:
            hook.remove()
        return statistics.fmean(
            cross_modal_contrastive_loss(tap[0::2], tap[1::2], 0.1)[1].item() for tap in taps
        )

    before = retrieval(stack.unet)
    losses = prior_train.train_unet(
        stack.unet, paired[:, 0], stack.uncond, stack.scheduler, options, generator, paired_latents=paired
    )
    assert set(losses) == {"mse", "align", "align_top1"}
    # chance is 1/383 per token; measured: 0.002 before, 0.23 after (mean over the three taps)
    assert before < 0.05 and retrieval(stack.unet) > 0.15


def test_vae_from_reuses_a_vae_and_trains_only_the_unet(tmp_path):
    first = train_prior(tiny_options(tmp_path / "first", steps_unet=0), progress=False)
    second = train_prior(tiny_options(tmp_path / "second", vae_from=str(first), steps_vae=0), progress=False)
    assert all(
        torch.equal(load_file(first / WEIGHTS[0])[k], v) for k, v in load_file(second / WEIGHTS[0]).items()
    )
    record = json.loads((second / "TRAINING.json").read_text())
    assert record["final_losses"]["vae"] == {"reused_from": str(first)}
    with pytest.raises(ValueError, match="--vae-from"):
        train_prior(tiny_options(tmp_path / "third", vae_from=str(tmp_path / "none")), progress=False)

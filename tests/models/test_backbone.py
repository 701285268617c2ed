"""DiffusionBackbone, PromptConditioning and the stack presets (METHOD.md §3), on the tiny preset."""

import copy
import json
import math
import shutil
import time

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from benchmarks import gpu_backbone
from madm_pl.models import DiffusionBackbone, MADMHead, PromptConditioning
from madm_pl.models.presets import SD14_UNET_CONFIG, SD14_VAE_CONFIG, tiny_clip_vocab
from tests.models.tiny_stack import write_tiny_stack


@pytest.fixture(scope="module")
def backbone() -> DiffusionBackbone:
    """A shared tiny backbone, for tests that run without gradient."""
    return DiffusionBackbone("tiny")


def make_conditioning(backbone: DiffusionBackbone, time_gate: float = 0.0) -> PromptConditioning:
    conditioning = PromptConditioning(backbone.context_dim, backbone.time_embed_dim, backbone.num_tokens)
    with torch.no_grad():
        conditioning.time_gate.fill_(time_gate)
    return conditioning


def random_image(batch_size: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch_size, 3, height, width, generator=generator) * 2 - 1


def sd_alphas_cumprod() -> torch.Tensor:
    """SD's scaled-linear DDPM schedule, computed by hand: betas = linspace(sqrt(0.00085), sqrt(0.012))^2."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


# ------------------------------------------------------------------------------------- shapes, freezing
@pytest.mark.parametrize(("height", "width"), [(64, 64), (64, 128)])
def test_taps_have_the_tiny_channels_at_strides_32_16_8(backbone, height, width):
    conditioning = make_conditioning(backbone)
    with torch.no_grad():
        output = backbone(random_image(2, height, width), 0, *conditioning(backbone.uncond))
    assert backbone.feature_channels == (64, 32, 32)
    for feature, channels, stride in zip(output.features, backbone.feature_channels, (32, 16, 8)):
        assert feature.shape == (2, channels, height // stride, width // stride)
    assert output.latent.shape == (2, 4, height // 8, width // 8)
    assert output.decoded.shape == (2, 3, height, width)


def test_decoded_is_detached_full_resolution_and_the_raw_decode():
    backbone = DiffusionBackbone("tiny")
    conditioning = make_conditioning(backbone)
    output = backbone(random_image(1, 64, 64), 0, *conditioning(backbone.uncond))
    assert output.latent.requires_grad and all(feature.requires_grad for feature in output.features)
    assert not output.decoded.requires_grad and output.decoded.grad_fn is None
    assert output.decoded.shape == (1, 3, 64, 64)
    # The decoding is exactly decode(latent).
    torch.testing.assert_close(output.decoded, backbone.decode(output.latent))


def test_without_decode_the_backbone_hands_the_vae_encoders_stride_4_feature(monkeypatch):
    # LPLR off (METHOD.md §3, "Finest level"): no decode; the finest level is the frozen VAE encoder's
    # feature after the first resnet of its third block, as the reference's base config
    # (encoder_block_indices=[5] over SD's 2 resnets per block).
    backbone = DiffusionBackbone("tiny", decode_output=False)
    assert backbone.encoder_feature_channels == 32  # the tiny VAE's block_out_channels[2]
    monkeypatch.setattr(backbone, "decode", lambda latent: pytest.fail("decoded with decode_output=False"))
    conditioning = make_conditioning(backbone)
    image = random_image(2, 64, 128)
    output = backbone(image, 0, *conditioning(backbone.uncond))
    assert output.decoded is None and output.finest is output.encoder_feature
    assert output.encoder_feature.shape == (2, 32, 16, 32)
    assert not output.encoder_feature.requires_grad
    assert output.latent.shape == (2, 4, 8, 16) and output.latent.requires_grad
    # The value: diffusers' encoder layers run by hand up to that resnet.
    encoder = backbone.vae.encoder
    with torch.no_grad():
        x = encoder.conv_in(image)
        for block in encoder.down_blocks[:2]:
            for resnet in block.resnets:
                x = resnet(x, None)
            for downsampler in block.downsamplers:
                x = downsampler(x)
        expected = encoder.down_blocks[2].resnets[0](x, None)
    torch.testing.assert_close(output.encoder_feature, expected)
    # The LPLR palette encodes (encode() outside forward) leave no feature behind.
    backbone.encode(image)
    assert backbone._encoder_tap is None
    # With decode_output (the default) there is no encoder feature.
    decoding = DiffusionBackbone("tiny")
    with torch.no_grad():
        decoded = decoding(image, 0, *conditioning(decoding.uncond))
    assert decoded.encoder_feature is None and decoded.finest is decoded.decoded


def test_without_decode_a_vae_without_a_stride_4_block_is_refused(tmp_path, monkeypatch):
    from madm_pl.models import backbone as backbone_file
    from madm_pl.models.presets import build_stack, tiny_vae_config

    def two_block_stack(source):
        stack = build_stack(source)
        stack.vae = AutoencoderKL(**tiny_vae_config(stride=2))
        return stack

    monkeypatch.setattr(backbone_file, "build_stack", two_block_stack)
    with pytest.raises(ValueError, match=r"decode_output=False .* 2 down blocks"):
        DiffusionBackbone("tiny", decode_output=False)


def test_decode_is_not_clipped_so_the_head_reads_values_outside_minus_one_one():
    # The reference feeds the head the raw decode and clips only its visualisation copy (METHOD.md §3).
    backbone = DiffusionBackbone("tiny")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 50
    raw = backbone.vae.decode(latent / backbone.vae.config.scaling_factor).sample
    assert raw.abs().max() > 1  # this latent decodes outside [-1, 1] ...
    torch.testing.assert_close(backbone.decode(latent), raw)  # ... and decode() keeps those values


def test_vae_frozen_and_in_eval_mode_after_train():
    backbone = DiffusionBackbone("tiny").train()
    assert not backbone.vae.training
    assert backbone.unet.training
    assert not any(parameter.requires_grad for parameter in backbone.vae.parameters())
    frozen = {name for name, parameter in backbone.unet.named_parameters() if not parameter.requires_grad}
    assert frozen == {"conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"}


def test_fp16_vae_runs_on_cpu_and_keeps_its_dtype_when_moved(backbone):
    # The reference's fp16 VAE weights (ldm_diffusers.py _init_vae); the UNet stays fp32.
    half = DiffusionBackbone("tiny", vae_dtype=torch.float16).to("cpu").to(torch.device("cpu"))
    assert {p.dtype for p in half.vae.parameters()} == {torch.float16}
    assert {p.dtype for p in half.unet.parameters()} == {torch.float32}
    image = random_image(1, 64, 64)
    with torch.no_grad():
        latent, full_latent = half.encode(image), backbone.encode(image)
        decoded = half.decode(full_latent)
    assert latent.dtype == decoded.dtype == torch.float16
    # the same preset weights rounded to fp16: the latents agree to fp16 precision
    assert torch.allclose(latent.float(), full_latent, atol=2e-3)
    assert torch.allclose(decoded.float(), backbone.decode(full_latent), atol=0.05)
    with pytest.raises(
        ValueError, match=r"vae_dtype=torch\.int8: expected torch\.float32, torch\.float16 or torch\.bfloat16"
    ):
        DiffusionBackbone("tiny", vae_dtype=torch.int8)


@pytest.mark.parametrize("config", [None, SD14_VAE_CONFIG], ids=["tiny", "sd14-vae"])
def test_bf16_vae_gives_the_fp32_vae_outputs_bit_for_bit_under_bf16_autocast(backbone, config):
    """Under bf16 autocast the VAE's convolutions and linear layers read bf16 copies of their weights: storing
    them in bf16 changes no output bit, while the GroupNorms keep fp32 weights (issue 24's 24 GB mode)."""
    full = DiffusionBackbone("tiny")
    if config is not None:  # SD v1-4's VAE architecture (84M parameters, random weights)
        full.vae = AutoencoderKL(**config).eval().requires_grad_(False)
    bf16 = DiffusionBackbone("tiny", vae_dtype=torch.bfloat16)
    bf16.vae = copy.deepcopy(full.vae)
    for layer in bf16.vae.modules():  # what the constructor does, on the swapped-in VAE
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            layer.to(torch.bfloat16)
    dtypes = {type(m).__name__: p.dtype for m in bf16.vae.modules() for p in m.parameters(recurse=False)}
    assert dtypes == {"Conv2d": torch.bfloat16, "Linear": torch.bfloat16, "GroupNorm": torch.float32}
    image = random_image(2, 64, 64)
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        encoded, expected_encoded = bf16.encode(image), full.encode(image)
        decoded, expected_decoded = bf16.decode(latent), full.decode(latent)
    assert torch.equal(encoded, expected_encoded)
    assert torch.equal(decoded, expected_decoded)
    # casting the latent to bf16 before dividing by the latent scale (as the VAE's dtype would) rounds twice
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        twice = bf16.vae.decode(latent.bfloat16() / bf16.vae.config.scaling_factor).sample
    assert not torch.equal(twice, expected_decoded)


def test_bf16_vae_constructor_casts_only_convolutions_and_linear_layers():
    vae = DiffusionBackbone("tiny", vae_dtype=torch.bfloat16).to(torch.device("cpu")).vae
    norms = [p for m in vae.modules() if isinstance(m, torch.nn.GroupNorm) for p in m.parameters()]
    others = [p for m in vae.modules() if not isinstance(m, torch.nn.GroupNorm) for p in m.parameters(False)]
    assert norms and {p.dtype for p in norms} == {torch.float32}
    assert {p.dtype for p in others} == {torch.bfloat16}


def test_image_size_not_a_multiple_of_64_is_an_error(backbone):
    conditioning = make_conditioning(backbone)
    assert backbone.size_divisor == 64
    with pytest.raises(ValueError, match="multiple of 64"):
        backbone(random_image(1, 96, 64), 0, *conditioning(backbone.uncond))


# -------------------------------------------------------------------------------------- conditioning
def test_conditioning_initialisation_and_shapes():
    conditioning = PromptConditioning(context_dim=16, time_embed_dim=8, num_tokens=77)
    assert conditioning.prompt.shape == conditioning.prompt_gate.shape == (1, 77, 16)
    assert conditioning.uncond_gate.shape == (1, 77, 16)
    assert conditioning.time_embedding.shape == (1, 1, 8) and conditioning.time_gate.shape == (8,)
    for gate in (conditioning.prompt_gate, conditioning.uncond_gate):
        assert gate.min() >= 0 and gate.max() < 1
    assert 0.015 < conditioning.prompt.std() < 0.025
    assert torch.equal(conditioning.time_gate, torch.zeros(8))
    cond, time_offset = conditioning(torch.randn(1, 77, 16))
    assert cond.shape == (1, 77, 16)
    assert torch.equal(time_offset, torch.zeros(1, 8))  # the gate starts at 0
    with pytest.raises(ValueError, match="uncond has shape"):
        conditioning(torch.randn(1, 77, 15))


def test_unet_receives_the_gated_prompt_blend(backbone):
    conditioning = make_conditioning(backbone)
    captured = {}

    def capture(module, args, kwargs):
        captured["context"] = kwargs["encoder_hidden_states"].detach().clone()

    handle = backbone.unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            backbone(random_image(2, 64, 64), 0, *conditioning(backbone.uncond))
    finally:
        handle.remove()
    expected = (
        torch.tanh(conditioning.uncond_gate) * backbone.uncond
        + torch.tanh(conditioning.prompt_gate) * conditioning.prompt
    ).detach()
    assert captured["context"].shape == (2, 77, backbone.context_dim)
    torch.testing.assert_close(captured["context"], expected.expand(2, -1, -1))


def test_time_offset_is_added_to_the_unet_time_embedding(backbone):
    conditioning = make_conditioning(backbone, time_gate=0.5)
    cond, time_offset = conditioning(backbone.uncond)
    captured = []
    # Registered after the backbone's hook, so it sees the time embedding with the offset added.
    handle = backbone.unet.time_embedding.register_forward_hook(
        lambda m, a, out: captured.append(out.detach())
    )
    latent = torch.randn(2, 4, 8, 8)
    try:
        with torch.no_grad():
            backbone.forward_latent(latent, 10, cond, time_offset)
            backbone.forward_latent(latent, 10, cond, torch.zeros_like(time_offset))
    finally:
        handle.remove()
    expected_offset = (math.tanh(0.5) * conditioning.time_embedding[:, 0]).detach()
    torch.testing.assert_close(captured[0] - captured[1], expected_offset.expand(2, -1))
    assert expected_offset.abs().max() > 0


def test_offset_and_taps_are_cleared_even_when_the_unet_fails(backbone):
    conditioning = make_conditioning(backbone, time_gate=0.5)
    cond, time_offset = conditioning(backbone.uncond)
    with (
        pytest.raises(RuntimeError),
        torch.no_grad(),
    ):  # a context of the wrong width fails in cross-attention
        backbone.forward_latent(torch.randn(1, 4, 8, 8), 0, cond[..., :-1], time_offset)
    assert backbone._time_offset is None and backbone._taps is None
    # A plain UNet call afterwards gets no offset: the same time embedding as with a zero offset.
    captured = []
    handle = backbone.unet.time_embedding.register_forward_hook(
        lambda m, a, out: captured.append(out.detach())
    )
    try:
        with torch.no_grad():
            backbone.unet(torch.randn(1, 4, 8, 8), 10, encoder_hidden_states=cond)
            backbone.forward_latent(torch.randn(1, 4, 8, 8), 10, cond, torch.zeros_like(time_offset))
    finally:
        handle.remove()
    torch.testing.assert_close(captured[0], captured[1])


# ----------------------------------------------------------------------------------------- fixed noise
def test_add_noise_matches_the_closed_form_with_the_fixed_noise(backbone):
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = backbone.fixed_noise(8, 8)
    alphas_cumprod = sd_alphas_cumprod()
    for timestep in (0, 500):
        abar = alphas_cumprod[timestep].item()
        expected = math.sqrt(abar) * latent + math.sqrt(1 - abar) * noise
        torch.testing.assert_close(backbone.add_noise(latent, timestep), expected)
    assert math.sqrt(1 - alphas_cumprod[0].item()) == pytest.approx(0.0292, abs=1e-4)
    # Per-sample timesteps as a tensor.
    mixed = backbone.add_noise(latent, torch.tensor([0, 500]))
    torch.testing.assert_close(mixed[0], backbone.add_noise(latent, 0)[0])
    torch.testing.assert_close(mixed[1], backbone.add_noise(latent, 500)[1])


def test_fixed_noise_is_the_same_across_calls_and_backbones_with_the_same_seed(backbone):
    assert torch.equal(backbone.fixed_noise(8, 16), backbone.fixed_noise(8, 16))
    other = DiffusionBackbone("tiny", noise_seed=42)
    assert torch.equal(backbone.fixed_noise(8, 16), other.fixed_noise(8, 16))
    assert not torch.equal(
        backbone.fixed_noise(8, 16), DiffusionBackbone("tiny", noise_seed=7).fixed_noise(8, 16)
    )
    # At SD's 64x64 latent size it is value for value the reference's noise.
    reference = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(42))
    assert torch.equal(backbone.fixed_noise(64, 64), reference)
    assert "noise" not in backbone.state_dict() and "uncond" not in backbone.state_dict()


# ----------------------------------------------------------------------------------- loading, saving
def test_saved_tiny_stack_loads_back_with_equal_outputs(backbone, tmp_path):
    write_tiny_stack(tmp_path / "stack")
    index = json.loads((tmp_path / "stack" / "model_index.json").read_text())
    assert {"vae", "unet", "scheduler", "tokenizer", "text_encoder"} <= index.keys()
    loaded = DiffusionBackbone(source=str(tmp_path / "stack"))
    torch.testing.assert_close(loaded.uncond, backbone.uncond)
    conditioning = make_conditioning(backbone, time_gate=0.5)
    image = random_image(1, 64, 64)
    with torch.no_grad():
        expected = backbone(image, 20, *conditioning(backbone.uncond))
        actual = loaded(image, 20, *conditioning(loaded.uncond))
    for got, want in zip(actual.features, expected.features):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(actual.latent, expected.latent)

    # SD v1-4 ships its tokenizer as vocab.json + merges.txt: that layout gives the same empty prompt.
    tokenizer_dir = tmp_path / "stack" / "tokenizer"
    shutil.rmtree(tokenizer_dir)
    tokenizer_dir.mkdir()
    (tokenizer_dir / "vocab.json").write_text(json.dumps(tiny_clip_vocab()))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n")
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    torch.testing.assert_close(DiffusionBackbone(source=str(tmp_path / "stack")).uncond, backbone.uncond)


def test_stack_folder_missing_a_part_is_a_named_error(tmp_path):
    write_tiny_stack(tmp_path / "stack")
    shutil.rmtree(tmp_path / "stack" / "unet")
    with pytest.raises(
        FileNotFoundError, match=r"lacks unet/.*vae/, unet/, text_encoder/, tokenizer/, scheduler/"
    ):
        DiffusionBackbone(source=str(tmp_path / "stack"))
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        DiffusionBackbone(source=str(tmp_path / "nowhere"))


# ------------------------------------------------------------------------------------------ gradients
def test_gradients_reach_prompt_gates_unet_and_head_but_not_frozen_parts():
    backbone = DiffusionBackbone("tiny").train()
    conditioning = make_conditioning(backbone)
    head = MADMHead(backbone.feature_channels, num_classes=5, embed_dim=32).train()
    output = backbone(random_image(2, 64, 64), 0, *conditioning(backbone.uncond))
    logits = head(output.features, output.decoded)
    assert logits.shape == (2, 5, 64, 64)
    (logits.logsumexp(dim=1).mean() + output.latent.abs().mean()).backward()

    for name in ("prompt", "prompt_gate", "uncond_gate", "time_gate"):
        assert getattr(conditioning, name).grad.abs().sum() > 0, name
    # E's gradient is tanh(g) * (...) and g starts at 0, so E gets an exact zero gradient on step one.
    assert torch.equal(conditioning.time_embedding.grad, torch.zeros_like(conditioning.time_embedding))
    assert all(parameter.grad is None for parameter in backbone.vae.parameters())
    for module in (backbone.unet.conv_norm_out, backbone.unet.conv_out):
        assert all(parameter.grad is None for parameter in module.parameters())
    trainable = [parameter for parameter in backbone.unet.parameters() if parameter.requires_grad]
    assert sum(
        parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in trainable
    ) > 0.9 * len(trainable)
    assert all(parameter.grad is not None for parameter in head.parameters())


def test_unet_gradient_checkpointing_gives_the_same_taps_and_gradients():
    plain = DiffusionBackbone("tiny").train()
    checkpointed = DiffusionBackbone("tiny", unet_gradient_checkpointing=True).train()
    assert checkpointed.unet.is_gradient_checkpointing and not plain.unet.is_gradient_checkpointing
    conditioning = make_conditioning(plain, time_gate=0.5)
    image = random_image(1, 64, 64)
    results = []
    for backbone in (plain, checkpointed):
        output = backbone(image, 0, *conditioning(backbone.uncond))
        (sum(feature.square().mean() for feature in output.features) + output.latent.abs().mean()).backward()
        results.append((output, [parameter.grad for parameter in backbone.unet.parameters()]))
    (plain_output, plain_grads), (checkpointed_output, checkpointed_grads) = results
    for got, want in zip(checkpointed_output.features, plain_output.features):
        torch.testing.assert_close(got, want)
    for got, want in zip(checkpointed_grads, plain_grads):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------ SD v1-4 size
def test_sd14_architecture_has_sd14_parameter_counts():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD14_UNET_CONFIG)
        vae = AutoencoderKL(**SD14_VAE_CONFIG)
    assert sum(parameter.numel() for parameter in unet.parameters()) == 859_520_964
    assert sum(parameter.numel() for parameter in vae.parameters()) == 83_653_863


@pytest.mark.slow
def test_sd14_random_taps_are_1280_640_320_at_strides_32_16_8():
    # 26 s alone on 2 CPU cores (16 s of it initialising 944M random parameters), ~1 min when the cores are
    # shared, and ~4 GB of memory: slow. The parameter counts above check the architecture quickly.
    start = time.perf_counter()
    backbone = DiffusionBackbone("sd14-random")
    assert backbone.feature_channels == (1280, 640, 320)
    assert (backbone.context_dim, backbone.time_embed_dim, backbone.uncond.shape) == (768, 1280, (1, 77, 768))
    conditioning = make_conditioning(backbone, time_gate=0.5)
    with torch.no_grad():
        output = backbone(random_image(1, 256, 256), 0, *conditioning(backbone.uncond))
    assert [tuple(feature.shape) for feature in output.features] == [
        (1, 1280, 8, 8),
        (1, 640, 16, 16),
        (1, 320, 32, 32),
    ]
    assert output.latent.shape == (1, 4, 32, 32) and output.decoded.shape == (1, 3, 256, 256)
    print(f"sd14-random build + forward at 256x256: {time.perf_counter() - start:.1f} s")


def test_gpu_benchmark_script_runs_on_cpu_with_the_tiny_preset():
    arguments = {"--device": "cpu", "--size": "64", "--preset": "tiny", "--embed-dim": "32"}
    arguments |= {"--batch-sizes": "1", "--warmup": "0", "--repeats": "1"}
    rows = gpu_backbone.main([token for pair in arguments.items() for token in pair])
    assert [(row["batch"], row["unet_checkpointing"]) for row in rows] == [(1, False), (1, True)]
    assert all(row["student_ms"] > 0 and row["teacher_ms"] > 0 for row in rows)

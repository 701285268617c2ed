"""The conversion table: a bijection between madm-pl's state dict and the reference's layout."""

from __future__ import annotations

import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from madm_pl.convert import convert_state_dict, to_reference_layout
from madm_pl.models.presets import SD14_UNET_CONFIG, SD14_VAE_CONFIG
from madm_pl.module import MADMModule
from tests.convert.conftest import DEMO_HEAD, PRIOR
from tests.convert.reference_layout import random_fill, reference_state_dict

#: CLIP ViT-L/14's text tower: SD v1-4's text encoder.
CLIP_L = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)


def not_in_madm_pl(key: str) -> bool:
    """Reference tensors a madm-pl state dict cannot give: the CLIP text encoder and two buffers."""
    return ".text_encoder." in key or key.endswith(("shared_noise", "uncond_inputs"))


def test_round_trip_through_the_reference_layout_is_the_identity() -> None:
    module = MADMModule(task="rgb2event", backbone="tiny", **DEMO_HEAD)
    fill = random_fill(seed=3)
    state = {key: fill(key, tuple(value.shape), value.dtype) for key, value in module.state_dict().items()}
    back = convert_state_dict(to_reference_layout(state), state).state_dict
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key


def test_without_lplr_the_encoder_level_maps_to_the_references_level_0() -> None:
    # LPLR off: the head's finest level is the VAE encoder feature, the reference base config's level 0.
    module = MADMModule(
        task="rgb2infrared", backbone="tiny", lplr_source=False, lplr_target=False, **DEMO_HEAD
    )
    fill = random_fill(seed=4)
    state = {key: fill(key, tuple(value.shape), value.dtype) for key, value in module.state_dict().items()}
    reference = to_reference_layout(state)
    projection = "backbone.feature_projections.0.0."
    assert torch.equal(
        reference[projection + "conv1.weight"], state["student.head.encoder_projection.conv1.weight"]
    )
    assert reference[projection + "conv1.weight"].shape[1] == 32  # the tiny VAE's stride-4 feature, not 3
    assert torch.equal(
        reference["sem_seg_head.embed_layers.0.proj.weight"],
        state["student.head.encoder_embedding.weight"].flatten(1),
    )
    back = convert_state_dict(reference, state).state_dict
    assert back.keys() == state.keys()
    assert all(torch.equal(back[key], value) for key, value in state.items())


def test_table_gives_exactly_the_reference_layout(prior_reference: dict[str, torch.Tensor]) -> None:
    # Two readings of the reference compared: the table read backwards, and tests/convert/reference_layout.py.
    module = MADMModule(task="rgb2infrared", backbone=str(PRIOR), **DEMO_HEAD)
    ours = to_reference_layout(module.state_dict())
    theirs = {key: value for key, value in prior_reference.items() if not not_in_madm_pl(key)}
    assert sorted(ours) == sorted(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def sd14_meta_reference() -> dict[str, torch.Tensor]:
    """The reference layout at SD v1-4's size, as meta tensors (no memory, no values)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD14_UNET_CONFIG)
        vae = AutoencoderKL(**SD14_VAE_CONFIG)
        text = CLIPTextModel(CLIP_L)
    return reference_state_dict(
        unet=unet.state_dict(),
        vae=vae.state_dict(),
        text_encoder=text.state_dict(),
        uncond=torch.empty(1, 77, 768, device="meta"),
        tap_channels=(320, 640, 1280),
        num_classes=9,
        fill=random_fill(device="meta"),
    )


def test_full_size_key_list_converts_on_meta_tensors() -> None:
    started = time.perf_counter()
    reference = sd14_meta_reference()
    with torch.device("meta"):
        target = MADMModule(task="rgb2infrared", backbone="sd14-random").state_dict()
    converted = convert_state_dict(reference, target)
    assert time.perf_counter() - started < 60
    assert {k: v.shape for k, v in converted.state_dict.items()} == {k: v.shape for k, v in target.items()}
    # 686 UNet tensors; per network 5 conditioning tensors, 4 bottlenecks (all with shortcuts) and a head
    # of 4 embeddings (weight, bias), 8 conv + BN modules (6 tensors each) and the classifier.
    assert converted.groups["UNet"] == 686
    assert converted.groups["conditioning (teacher)"] == 5
    assert converted.groups["projections (teacher)"] == 4 * 12
    assert converted.groups["head (student)"] == 4 * 2 + 8 * 6 + 2
    assert converted.groups["from --backbone"] == 248
    assert set(to_reference_layout(target)) == {key for key in reference if not not_in_madm_pl(key)}

"""``madm-pl convert``: reference-layout files converted, loaded strictly, used by test / predict / fit."""

from __future__ import annotations

import argparse
import re
import time
import warnings
from pathlib import Path

import pytest
import torch
from transformers import CLIPTextModel

from madm_pl.callbacks.checkpoint_file import WEIGHTS_DIGEST_KEY, load_checkpoint_file, weights_digests
from madm_pl.cli import MADMCLI, main
from madm_pl.convert import ConversionError, convert, read_reference, reference_key
from madm_pl.data import CrossModalityDataModule
from madm_pl.models.presets import build_stack, load_stack
from madm_pl.module import MADMModule
from tests.cli_runs import DEMO, small_run_args
from tests.convert.conftest import DEMO_HEAD, PRIOR
from tests.convert.reference_layout import UNET, detectron2_checkpoint, reference_state_dict
from tests.convert.test_table import CLIP_L
from tests.malicious import RunsACommand

EXTRACTOR = "backbone.feature_extractor."


def write_reference(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save(detectron2_checkpoint(state), path)
    return path


def run_convert(reference: Path, out: Path, backbone: str = str(PRIOR), **kwargs) -> Path:
    return convert("rgb2infrared", reference, backbone, out, log=lambda line: None, **kwargs)


def command(reference: Path, out: Path) -> list[str]:
    return ["convert", "--task", "rgb2infrared", "--reference", str(reference), "--backbone", str(PRIOR)] + [
        "--out",
        str(out),
    ]


def test_converted_checkpoint_loads_strictly_with_the_reference_tensors(
    prior_reference: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    reference = write_reference(tmp_path / "model_RGB2Infrared.pth", prior_reference)
    checkpoint = torch.load(run_convert(reference, tmp_path / "c.ckpt"), weights_only=True)
    module = MADMModule(task="rgb2infrared", backbone=str(PRIOR), **DEMO_HEAD)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    state = checkpoint["state_dict"]
    # Correspondences read off the reference by hand: s3 (stride 8) is madm-pl's s8 (index 2), s5 its s32.
    projections, ema_projections = "backbone.feature_projections.", "backbone.ema_feature_projections."
    fuse = "sem_seg_head.fuse_layer."
    pairs = {
        "student.head.feature_projections.2.norm1.weight": projections + "1.0.conv1.norm.weight",
        "student.head.feature_projections.2.shortcut.0.weight": projections + "1.0.shortcut.weight",
        "student.head.feature_projections.0.conv2.weight": projections + "3.0.conv2.weight",
        "student.head.decoded_projection.conv3.weight": projections + "0.0.conv3.weight",
        "teacher.head.feature_projections.1.norm3.bias": ema_projections + "2.0.conv3.norm.bias",
        "student.head.aspp.2.0.1.running_var": fuse + "aspp_modules.2.depthwise_conv.bn.running_var",
        "student.head.aspp.2.1.0.weight": fuse + "aspp_modules.2.pointwise_conv.conv.weight",
        "student.head.fuse.1.num_batches_tracked": fuse + "bottleneck.bn.num_batches_tracked",
        "teacher.head.classifier.bias": "ema_sem_seg_head.conv_seg.bias",
        "student.conditioning.uncond_gate": EXTRACTOR + "clip_project_others.alpha_uncond_prompt",
        "teacher.conditioning.time_gate": EXTRACTOR + "ema_clip_project_others.alpha_cond_time",
        "backbone.unet.conv_in.weight": UNET + "conv_in.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(state[ours], prior_reference[theirs]), ours
    # The 1x1-conv embedding is the reference's nn.Linear weight with two unit dimensions.
    linear = prior_reference["sem_seg_head.embed_layers.3.proj.weight"]
    assert torch.equal(state["student.head.feature_embeddings.0.weight"], linear[:, :, None, None])
    # The fine-tuned UNet is the reference's, not the prior's; the VAE the prior's (fp32), not the fp16 copy.
    prior = load_stack(PRIOR)
    assert not torch.equal(state["backbone.unet.conv_in.weight"], prior.unet.conv_in.weight)
    for key, value in prior.vae.state_dict().items():
        assert state[f"backbone.vae.{key}"].dtype == torch.float32
        assert torch.equal(state[f"backbone.vae.{key}"], value)
    # Every other tensor is the reference tensor the table names.
    for key, value in state.items():
        if not key.startswith("backbone.vae."):
            theirs = prior_reference[reference_key(key)]
            assert torch.equal(value.flatten(), theirs.flatten().to(value.dtype)), key
    assert checkpoint["global_step"] == 10000  # saved at iteration 9999
    assert checkpoint["optimizer_states"] == [] and checkpoint["lr_schedulers"] == []
    assert "hyper_parameters" not in checkpoint


def test_wrong_shape_is_named_and_nothing_is_written(
    prior_reference: dict[str, torch.Tensor], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = dict(prior_reference)
    state[UNET + "conv_in.weight"] = torch.zeros(32, 5, 3, 3)  # a 5-channel input (input_channel_plus=1)
    reference = write_reference(tmp_path / "r.pth", state)
    expected = r"conv_in.weight \(32, 5, 3, 3\) -> backbone.unet.conv_in.weight expects \(32, 4, 3, 3\)"
    # The command line ends with the error's own message (madm_pl.errors); --debug raises it.
    with pytest.raises(SystemExit) as caught:
        main(command(reference, tmp_path / "c.ckpt"))
    assert caught.value.code == 1
    assert re.search(expected, capsys.readouterr().err)
    with pytest.raises(ConversionError, match=expected):
        main([*command(reference, tmp_path / "c.ckpt"), "--debug"])
    assert list(tmp_path.iterdir()) == [reference]  # no output, no temporary file


def test_unknown_key_is_named(prior_reference: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = dict(prior_reference) | {"sem_seg_head.extra_layer.weight": torch.zeros(3)}
    expected = r"1 reference tensor\(s\) in neither MAPPING nor IGNORED.*\n\s+sem_seg_head.extra_layer.weight"
    with pytest.raises(ConversionError, match=expected):
        run_convert(write_reference(tmp_path / "r.pth", state), tmp_path / "c.ckpt")
    assert not (tmp_path / "c.ckpt").exists()


def test_missing_teacher_tensor_is_named(prior_reference: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = {k: v for k, v in prior_reference.items() if k != "ema_sem_seg_head.conv_seg.bias"}
    with pytest.raises(
        ConversionError, match=r"ema_sem_seg_head.conv_seg.bias -> teacher.head.classifier.bias"
    ):
        run_convert(write_reference(tmp_path / "r.pth", state), tmp_path / "c.ckpt")


def test_lora_adapters_are_refused_with_the_reason(
    prior_reference: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    key = UNET + "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.Infrared.weight"
    state = dict(prior_reference) | {key: torch.zeros(4, 32)}
    with pytest.raises(ConversionError, match=r"(?s)parts madm-pl does not have.*lora_A.*LoRA adapters"):
        run_convert(write_reference(tmp_path / "r.pth", state), tmp_path / "c.ckpt")


def test_head_saved_twice_must_be_one_module(
    prior_reference: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    state = dict(prior_reference)
    state["sem_seg_head_sec_modal.conv_seg.bias"] = state["sem_seg_head.conv_seg.bias"] + 1
    expected = r"(?s)sem_seg_head_sec_modal.\* should be the same module.*conv_seg.bias"
    with pytest.raises(ConversionError, match=expected):
        run_convert(write_reference(tmp_path / "r.pth", state), tmp_path / "c.ckpt")


def test_another_backbone_than_the_references_is_found(
    prior_reference: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    # The fixture was trained on priors/tiny; the "tiny" preset has the same shapes but other weights.
    reference = write_reference(tmp_path / "r.pth", prior_reference)
    with pytest.raises(ConversionError, match=r"the reference's VAE differs from --backbone 'tiny'"):
        run_convert(reference, tmp_path / "c.ckpt", backbone="tiny")
    state = {k: v for k, v in prior_reference.items() if ".vae." not in k}
    uncond = EXTRACTOR + "ldm_extractor.uncond_inputs"
    state[uncond] = prior_reference[uncond] + 0.5
    expected = r"empty-prompt embedding .* differs .*max \|difference\| 0\.(5|49)"
    with pytest.raises(ConversionError, match=expected):
        run_convert(write_reference(tmp_path / "r.pth", state), tmp_path / "c.ckpt")


def test_other_noise_warns_and_still_converts(
    prior_reference: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    state = dict(prior_reference) | {EXTRACTOR + "ldm_extractor.shared_noise": torch.zeros(1, 4, 64, 64)}
    with pytest.warns(UserWarning, match="fixed noise"):
        out = run_convert(write_reference(tmp_path / "r.pth", state), tmp_path / "c.ckpt")
    assert out.is_file()


def test_wrong_task_names_the_class_counts(prior_reference: dict[str, torch.Tensor], tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "r.pth", prior_reference)
    with pytest.raises(ConversionError, match=r"has 9 classes, task 'rgb2depth' has 11: fix --task"):
        convert("rgb2depth", reference, str(PRIOR), tmp_path / "c.ckpt", log=lambda line: None)


def test_a_checkpoint_trained_without_lplr_is_refused_with_the_reason(
    prior_reference: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    # Without --vae_decoder_loss the reference's level 0 reads the VAE encoder's feature, not 3 channels.
    state = dict(prior_reference)
    key = "backbone.feature_projections.0.0.conv1.weight"
    state[key] = torch.zeros(state[key].shape[0], 32, 1, 1)
    with pytest.raises(
        ConversionError, match=r"reads 32 channels, not the 3 of the decoded image: .*without LPLR"
    ):
        run_convert(write_reference(tmp_path / "r.pth", state), tmp_path / "c.ckpt")
    assert not (tmp_path / "c.ckpt").exists()


def test_pickled_objects_need_trust_pickle(prior_reference: dict[str, torch.Tensor], tmp_path: Path) -> None:
    checkpoint = detectron2_checkpoint(prior_reference)
    checkpoint["trainer"]["hooks"]["Namespace"] = argparse.Namespace(seed=42)  # not a plain type
    torch.save(checkpoint, tmp_path / "r.pth")
    with pytest.raises(ValueError, match=r"weights_only=True\) refused it .* pass --trust_pickle"):
        run_convert(tmp_path / "r.pth", tmp_path / "c.ckpt")
    assert run_convert(tmp_path / "r.pth", tmp_path / "c.ckpt", trust_pickle=True).is_file()


def test_a_reference_that_runs_a_command_is_refused(
    prior_reference: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    checkpoint = detectron2_checkpoint(prior_reference)
    checkpoint["trainer"]["hooks"]["x"] = RunsACommand(marker)
    torch.save(checkpoint, tmp_path / "r.pth")
    with pytest.raises(ValueError) as caught:
        run_convert(tmp_path / "r.pth", tmp_path / "c.ckpt")
    assert not marker.exists() and not (tmp_path / "c.ckpt").exists()
    assert str(caught.value).startswith(
        f"--reference '{tmp_path / 'r.pth'}': torch.load(weights_only=True) refused it (Trying to load "
        "unsupported GLOBAL posix.system"
    )
    assert "\n" not in str(caught.value)


def test_a_truncated_reference_is_one_line(prior_reference: dict[str, torch.Tensor], tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "r.pth", prior_reference)
    reference.write_bytes(reference.read_bytes()[:4000])
    with pytest.raises(
        ValueError, match=r"^--reference '.*r\.pth' cannot be read \(.*\): the file is truncated"
    ):
        run_convert(reference, tmp_path / "c.ckpt")


def test_the_converted_checkpoint_records_its_weights_digest(
    prior_reference: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    out = run_convert(write_reference(tmp_path / "r.pth", prior_reference), tmp_path / "c.ckpt")
    written = torch.load(out, weights_only=True)
    assert written[WEIGHTS_DIGEST_KEY] == weights_digests(written["state_dict"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "records no weights digest" warning
        load_checkpoint_file(out)


def test_existing_output_needs_overwrite(prior_reference: dict[str, torch.Tensor], tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "r.pth", prior_reference)
    (tmp_path / "c.ckpt").write_text("an older file")
    with pytest.raises(ValueError, match=r"--out .* exists: pass --overwrite"):
        run_convert(reference, tmp_path / "c.ckpt")
    assert (tmp_path / "c.ckpt").read_text() == "an older file"
    run_convert(reference, tmp_path / "c.ckpt", overwrite=True)
    assert "state_dict" in torch.load(tmp_path / "c.ckpt", weights_only=True)


def test_a_failed_write_leaves_the_previous_file(
    prior_reference: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = write_reference(tmp_path / "r.pth", prior_reference)
    (tmp_path / "c.ckpt").write_text("the previous file")

    def full_disk(obj: object, file) -> None:
        file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_convert(reference, tmp_path / "c.ckpt", overwrite=True)
    assert (tmp_path / "c.ckpt").read_text() == "the previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt", "r.pth"]  # no temporary file left


def test_reading_the_file(prior_reference: dict[str, torch.Tensor], tmp_path: Path) -> None:
    # Saved from inside DistributedDataParallel: the "module." prefix goes, as fvcore strips it.
    wrapped = {f"module.{key}": value for key, value in prior_reference.items()}
    torch.save({"model": wrapped, "iteration": 4}, tmp_path / "d.pth")
    read = read_reference(tmp_path / "d.pth")
    assert read.state_dict.keys() == prior_reference.keys()
    assert read.iteration == 4 and read.top_level == ["iteration"]
    torch.save(prior_reference, tmp_path / "bare.pth")  # a bare state dict
    read = read_reference(tmp_path / "bare.pth")
    assert read.iteration is None and read.top_level == []
    torch.save({"model": prior_reference, "ema_state": {}}, tmp_path / "u.pth")
    with pytest.raises(ValueError, match=r"unknown top-level entries \['ema_state'\]"):
        read_reference(tmp_path / "u.pth")


def test_help_lists_convert(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    # listed among the subcommands with its help line (as fit, test, prepare: tests/test_cli.py)
    assert re.search(r"^\s+convert\s+Turn a released MADM model_RGB2\*\.pth", capsys.readouterr().out, re.M)


def test_test_predict_and_fit_take_the_converted_checkpoint(
    prior_reference: dict[str, torch.Tensor], synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "converted.ckpt"
    main(command(write_reference(tmp_path / "r.pth", prior_reference), out))
    converted = torch.load(out, weights_only=True)["state_dict"]
    common = ["-c", str(DEMO), *small_run_args(synthetic_root, tmp_path), f"--ckpt_path={out}"]

    def cli(*args: str) -> MADMCLI:
        return MADMCLI(
            MADMModule,
            CrossModalityDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=list(args),
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )

    tested = cli("test", *common)
    assert tested.model.last_scores["iteration"] == 10000
    for key, value in tested.model.state_dict().items():
        assert torch.equal(value, converted[key]), key
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted((synthetic_root / "fmb" / "test" / "Infrared").glob("*.png"))[:1]:
        (images / source.name).write_bytes(source.read_bytes())
    predictions = tmp_path / "predictions"
    cli(
        "predict",
        *common,
        f"--data.init_args.predict_root={images}",
        f"--prediction_writer.output_dir={predictions}",
    )
    assert len(list((predictions / "labels").glob("*.png"))) == 1
    # fit --ckpt_path fine-tunes: the converted weights, a fresh optimiser, iteration 0.
    fitted = cli("fit", *common, "--trainer.max_steps=1")
    assert fitted.trainer.global_step == 1
    frozen = fitted.model.backbone.unet.conv_out.weight  # frozen in training: still the reference's
    assert torch.equal(frozen, converted["backbone.unet.conv_out.weight"])


@pytest.mark.slow
def test_full_size_file_converts(tmp_path: Path) -> None:
    """A 4 GB reference-layout file at SD v1-4's size (random values) through the real command. Its time
    is a benchmark (BENCHMARKS.md, "Converting a released checkpoint"), printed here, not asserted."""
    stack = build_stack("sd14-random")
    state = reference_state_dict(
        unet=stack.unet.state_dict(),
        vae=stack.vae.state_dict(),
        text_encoder=CLIPTextModel(CLIP_L).state_dict(),
        uncond=stack.uncond,
        tap_channels=(320, 640, 1280),
        num_classes=9,
    )
    reference = write_reference(tmp_path / "model_RGB2Infrared.pth", state)
    del stack, state
    started = time.perf_counter()
    out = convert("rgb2infrared", reference, "sd14-random", tmp_path / "c.ckpt")
    elapsed = time.perf_counter() - started
    print(f"full-size conversion: {elapsed:.1f} s, {out.stat().st_size / 1e9:.2f} GB written")
    converted = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    released = torch.load(reference, map_location="cpu", weights_only=True, mmap=True)["model"]
    assert torch.equal(converted["backbone.unet.conv_in.weight"], released[UNET + "conv_in.weight"])

"""The head comes from the config (model.init_args.head, a class_path + init_args): the module gives it
what depends on the backbone, the task and LPLR (the finest level), for MADMHead and another decoder."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from madm_pl.cli import ConfigOnlyCLI, cli_options, instantiate, parse_config
from madm_pl.data import CrossModalityDataModule
from madm_pl.models import MADMHead
from madm_pl.module import MADMModule, head_description
from tests.test_module import NARROW_HEAD_WIDTHS

DEMO = ["-c", "configs/demo/rgb2infrared.yaml", "--model.init_args.backbone=tiny"]
NARROW = NARROW_HEAD_WIDTHS


class PixelHead(nn.Module):
    """Another decoder: a 1x1 conv on the finest level only, upsampled to the image; records its inputs."""

    def __init__(
        self,
        feature_channels: Sequence[int],
        num_classes: int,
        finest_level: str,
        encoder_channels: int | None,
        width: int = 8,
    ) -> None:
        super().__init__()
        self.received = (tuple(feature_channels), num_classes, finest_level, encoder_channels)
        channels = 3 if finest_level == "decoded" else encoder_channels
        self.hidden = nn.Conv2d(channels, width, 1)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, features: Sequence[Tensor], finest: Tensor, output_size: Sequence[int]) -> Tensor:
        logits = self.classifier(torch.relu(self.hidden(finest)))
        return nn.functional.interpolate(
            logits, size=tuple(output_size), mode="bilinear", align_corners=False
        )


def cli_model(*options: str) -> MADMModule:
    """The model as ``madm-pl fit`` builds it: jsonargparse's instantiation of the parsed config."""
    cli = ConfigOnlyCLI(MADMModule, CrossModalityDataModule, args=[*DEMO, *options], **cli_options())
    return cli.parser.instantiate_classes(cli.config).model


LPLR_OFF = ["--model.init_args.lplr_source=false", "--model.init_args.lplr_target=false"]


@pytest.mark.parametrize("lplr", [True, False])
def test_another_decoder_from_the_config_gets_the_backbones_shapes(lplr: bool) -> None:
    head = json.dumps({"class_path": "tests.test_module_head.PixelHead", "init_args": {"width": 4}})
    module = cli_model(f"--model.init_args.head={head}", *([] if lplr else LPLR_OFF))
    built = module.student.head
    assert isinstance(built, PixelHead) and built.hidden.out_channels == 4
    backbone = module.backbone
    finest = "decoded" if lplr else "vae_encoder"
    assert built.received == (tuple(backbone.feature_channels), 9, finest, backbone.encoder_feature_channels)
    assert isinstance(module.teacher.head, PixelHead)  # the EMA teacher copies it
    module.eval()
    assert module(torch.rand(1, 3, 64, 64)).shape == (1, 9, 64, 64)
    # the hyper-parameters hold the config (a checkpoint's stay plain data)
    assert module.hparams.head["class_path"] == "tests.test_module_head.PixelHead"


@pytest.mark.parametrize("lplr", [True, False])
def test_the_daformer_head_from_the_config_has_the_level_lplr_decides(lplr: bool) -> None:
    options = [f"--model.init_args.head.init_args.{name}={value}" for name, value in NARROW.items()]
    module = cli_model(*options, *([] if lplr else LPLR_OFF))
    head = module.student.head
    assert isinstance(head, MADMHead) and head.finest_level == ("decoded" if lplr else "vae_encoder")
    assert hasattr(head, "decoded_projection") == lplr and hasattr(head, "encoder_projection") == (not lplr)
    assert head.classifier.in_channels == 16 and head.feature_projections[0].conv3.out_channels == 32
    if not lplr:  # the VAE encoder feature's channels reach the head
        assert head.encoder_projection.conv1.in_channels == module.backbone.encoder_feature_channels
    # cli.instantiate (the benchmarks' path) gives the same module: the head as a class_path mapping
    config = parse_config([*DEMO, *options, *([] if lplr else LPLR_OFF)])
    torch.manual_seed(0)
    again = instantiate(config.model)
    torch.manual_seed(0)
    first = cli_model(*options, *([] if lplr else LPLR_OFF))
    assert again.state_dict().keys() == first.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), first.state_dict().values()))


def test_the_default_head_is_the_daformer_head_with_the_paper_widths() -> None:
    module = MADMModule(backbone="tiny")
    head = module.student.head
    assert isinstance(head, MADMHead)
    assert head.classifier.in_channels == 256  # embed_dim
    assert head.feature_projections[0].conv3.out_channels == 512  # projection_channels
    assert head.decoded_projection.conv3.out_channels == 128  # decoded_projection_channels
    assert head.feature_projections[0].conv1.out_channels == 128  # bottleneck_width
    assert module.hparams.head is None


def test_a_module_given_keyword_cannot_be_set_in_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config([*DEMO, "--model.init_args.head.init_args.num_classes=3"])
    assert "num_classes" in capsys.readouterr().err


def test_a_head_given_in_python_is_stored_as_plain_data() -> None:
    module = MADMModule(backbone="tiny", head=functools.partial(MADMHead, **NARROW))
    expected = {"class_path": "madm_pl.models.head.MADMHead", "init_args": NARROW}
    assert module.hparams.head == expected
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": dict(module.hparams)}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["hyper_parameters"]["head"] == expected
    assert head_description(MADMHead) == {"class_path": "madm_pl.models.head.MADMHead"}
    assert head_description(None) is None


def test_a_bad_head_class_path_names_the_option() -> None:
    bad: dict[str, Any] = {"class_path": "no_such_module.Head", "init_args": {}}
    with pytest.raises(
        ValueError, match=r"model\.init_args\.head\.class_path='no_such_module\.Head' does not"
    ):
        MADMModule(backbone="tiny", head=bad)

"""A new target modality is one file and one config line: docs/ARCHITECTURE.md's worked example, run as
written; the registry of target datasets by their kind, and its rules."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from madm_pl.cli import instantiate, parse_config
from madm_pl.data import CrossModalityDataModule
from madm_pl.data.datasets import (
    TARGET_KINDS,
    DeliverDepthDataset,
    DSECEventDataset,
    FMBInfraredDataset,
    ImageFolderDataset,
    TargetDataset,
)
from tests.fake_trees import FakeTree, fake_image, split_label, write_png

ARCHITECTURE = Path(__file__).parents[3] / "docs" / "ARCHITECTURE.md"
# FMB ids of the radar test labels, left and right half: 9-class ids 4 and 5 (labels.FMB_TO_9)
LEFT, RIGHT = 1, 2


def example(language: str) -> str:
    """The first ``language`` block of ARCHITECTURE.md's section on adding a target modality."""
    text = ARCHITECTURE.read_text()
    section = text[text.index("## Adding a target modality") :]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def radar_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """docs/ARCHITECTURE.md's radar.py, written as a file and importable as ``radar``."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "radar.py").write_text(example("python"))
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("radar", None)
    TARGET_KINDS.pop("radar", None)  # registered when imported


def write_radar(root: Path, label_folder: str = "labels") -> Path:
    for i in range(3):
        write_png(root / f"train/radar/{i:03d}.png", fake_image((16, 32), i, channels=1))
    for i in range(2):
        write_png(root / f"test/radar/{i:03d}.png", fake_image((16, 32), i, channels=1))
        write_png(root / f"test/{label_folder}/{i:03d}.png", split_label((16, 32), LEFT, RIGHT))
    return root


def demo_config(cityscapes: FakeTree, target: Path, kind: str) -> Any:
    options = {
        "source_root": cityscapes.root,
        "target_root": target,
        "source_resize": "[16,32]",
        "crop_size": "[16,16]",
        "target_resize": "[16,24]",
        "test_size": "[8,16]",
        "num_workers": 0,
        "persistent_workers": "false",
        "pin_memory": "false",
        "rcs_min_pixels": 100,
        "batch_size": 2,
        "epoch_length": 4,
    }
    args = ["-c", "configs/demo/rgb2infrared.yaml", f"--data.init_args.target_kind={kind}"]
    return parse_config(args + [f"--data.init_args.{key}={value}" for key, value in options.items()])


def test_the_documented_modality_trains_and_validates(
    radar_module: Path, cityscapes_tree: FakeTree, tmp_path: Path
) -> None:
    line = example("yaml").splitlines()[0]
    assert line.startswith("data.init_args.target_kind: radar.RadarDataset")  # the config line
    config = demo_config(cityscapes_tree, write_radar(tmp_path / "radar_data"), "radar.RadarDataset")
    datamodule = instantiate(config.data)
    assert datamodule.target_kind == "radar" and TARGET_KINDS["radar"].__module__ == "radar"
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["target_image"].shape == (2, 3, 16, 16)
    datamodule.setup("validate")
    test = next(iter(datamodule.val_dataloader()))
    # the FMB ids of the labels, mapped by the task's map as FMBInfraredDataset's are
    assert (int(test["label"][0, 0, 0]), int(test["label"][0, -1, -1])) == (4, 5)
    assert "in_reference_share" not in test and datamodule.reference_share is None  # reference_protocol


def test_the_documented_modality_takes_its_own_options(
    radar_module: Path, cityscapes_tree: FakeTree, tmp_path: Path
) -> None:
    root = write_radar(tmp_path / "radar_data", label_folder="annotations")
    kind = '{"class_path": "radar.RadarDataset", "init_args": {"label_folder": "annotations"}}'
    datamodule = instantiate(demo_config(cityscapes_tree, root, kind).data)
    assert datamodule.target_dataset("test").label_folder == "annotations"
    with pytest.raises(FileNotFoundError, match=r"missing: test/labels"):  # without it: the default folder
        CrossModalityDataModule(**{**datamodule.hparams, "target_kind": "radar.RadarDataset"}).setup(
            "validate"
        )
    with pytest.raises(ValueError, match=r"data\.target_kind\.init_args\.label_dir: RadarDataset takes no "):
        CrossModalityDataModule(
            **{
                **datamodule.hparams,
                "target_kind": {"class_path": "radar.RadarDataset", "init_args": {"label_dir": "a"}},
            }
        )
    with pytest.raises(
        ValueError, match=r"data\.label_map applies only to data\.target_kind='folder', not 'radar'"
    ):
        CrossModalityDataModule(
            **{**datamodule.hparams, "target_kind": "radar.RadarDataset", "label_map": "m.yaml"}
        )
    with pytest.raises(
        ValueError, match=r"target_kind='radar' does not fit task 'rgb2depth'.*use data\.target_kind"
    ):
        CrossModalityDataModule(
            **{**datamodule.hparams, "target_kind": "radar.RadarDataset", "task": "rgb2depth"}
        )


def test_the_registry_is_built_from_each_class_kind() -> None:
    assert {kind: TARGET_KINDS[kind] for kind in ("deliver", "fmb", "dsec", "folder")} == {
        "deliver": DeliverDepthDataset,
        "fmb": FMBInfraredDataset,
        "dsec": DSECEventDataset,
        "folder": ImageFolderDataset,
    }
    assert TARGET_KINDS is TargetDataset.registry
    # the reference's evaluation protocol: said by each dataset, not "every kind but folder"
    assert {kind: TARGET_KINDS[kind].reference_protocol for kind in ("deliver", "fmb", "dsec", "folder")} == {
        "deliver": True,
        "fmb": True,
        "dsec": True,
        "folder": False,
    }


def test_a_dataset_must_say_whether_the_reference_protocol_applies() -> None:
    with pytest.raises(TypeError, match=r"Sonar \(kind 'sonar'\) must set reference_protocol"):

        class Sonar(TargetDataset):
            kind = "sonar"

    assert "sonar" not in TARGET_KINDS
    with pytest.raises(
        TypeError, match=r"kind 'fmb' is taken by madm_pl\.data\.datasets\.fmb\.FMBInfraredDataset"
    ):

        class OtherFMB(TargetDataset):
            kind = "fmb"
            reference_protocol = True

    assert TARGET_KINDS["fmb"] is FMBInfraredDataset


def test_a_bad_dotted_kind_names_the_option() -> None:
    base = {"task": "rgb2infrared", "source_root": "s", "target_root": "t", "source_resize": (16, 32)}
    base |= {"crop_size": (16, 16), "target_resize": (16, 24), "test_size": (8, 16)}
    with pytest.raises(ValueError, match=r"data\.target_kind 'no_such_module\.Data' does not import"):
        CrossModalityDataModule(**base, target_kind="no_such_module.Data")
    with pytest.raises(
        ValueError, match=r"data\.target_kind 'numpy\.ndarray' is not a TargetDataset subclass"
    ):
        CrossModalityDataModule(**base, target_kind="numpy.ndarray")

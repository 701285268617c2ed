"""``madm-pl prepare``: split counts, published-size warnings, RCS cache, histograms, missing folders."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from madm_pl import prepare as prepare_module
from madm_pl.cli import main as cli_main
from madm_pl.cli import parse_config
from madm_pl.data.rcs import CACHE_NAME
from madm_pl.prepare import DatasetSizeWarning, main, parse_datamodule
from tests.fake_trees import (
    FakeTree,
    split_label,
    write_cityscapes,
    write_dsec,
    write_file_list,
    write_fmb,
    write_png,
)

REPO = Path(__file__).resolve().parents[1]


def roots(source: FakeTree, target: FakeTree) -> list[str]:
    return [f"--data.source_root={source.root}", f"--data.init_args.target_root={target.root}"]


def row(out: str, name: str) -> list[str]:
    """The fields of the first output line that starts with ``name`` (after indentation)."""
    line = next(line for line in out.splitlines() if line.strip().startswith(name))
    return line.strip()[len(name) :].split()


def test_counts_cache_histograms_and_size_warnings(
    cityscapes_tree: FakeTree, fmb_tree: FakeTree, capsys: pytest.CaptureFixture
) -> None:
    with pytest.warns(DatasetSizeWarning) as caught:
        main(["--data.task=rgb2infrared", *roots(cityscapes_tree, fmb_tree), "--data.rcs_min_pixels=100"])
    out = capsys.readouterr().out
    # counts (images found, published), one warning per split whose count differs
    assert row(out, "Cityscapes train (source)")[:2] == ["3", "2975"]
    assert row(out, "FMB train (target)")[:2] == ["3", "1220"]
    assert row(out, "FMB test (target)")[:2] == ["2", "280"]
    assert len(caught) == 3
    assert "FMB test (target)" in str(caught[2].message) and "280" in str(caught[2].message)
    # the RCS cache of data/rcs.py, the one training reads
    cache = json.loads((cityscapes_tree.root / CACHE_NAME).read_text())
    assert sorted(cache["counts"]) == sorted(cityscapes_tree.train_labels)
    assert str(cityscapes_tree.root / CACHE_NAME) in out
    # RCS table: 6 Cityscapes classes of 1024 px each: equal frequencies, P = 1/6, one candidate each
    assert row(out, "road") == ["1,024", "16.67", "1"]
    assert row(out, "rider") == ["0", "0.00", "0"]
    # source histogram in the 9 classes: car = Cityscapes car + bicycle (2048 px of 6144)
    source = out[out.index("source label histogram") :]
    assert row(source, "car")[:2] == ["2,048", "33.33"]
    assert row(source, "car")[2] == "#" * prepare_module.BAR_WIDTH  # the largest class has the full bar
    assert row(source, "sky")[:2] == ["1,024", "16.67"]
    assert row(source, "pole")[:2] == ["0", "0.00"]
    # target test histogram (FMB ids road|car, sky|pole: 256 px each of 1024)
    target = out[out.index("target test label histogram") :]
    for name in ("road", "car", "sky", "pole"):
        assert row(target, name)[:2] == ["256", "25.00"]
    assert row(target, "person")[:2] == ["0", "0.00"]


def test_published_counts_do_not_warn(
    cityscapes_tree: FakeTree, fmb_tree: FakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    published = {("cityscapes", "train"): 3, ("fmb", "train"): 3, ("fmb", "test"): 2}
    monkeypatch.setattr(prepare_module, "PUBLISHED_SIZES", published)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetSizeWarning)
        main(["--data.task=rgb2infrared", *roots(cityscapes_tree, fmb_tree), "--data.rcs_min_pixels=100"])


@pytest.mark.filterwarnings("ignore::madm_pl.prepare.DatasetSizeWarning")
def test_config_gives_defaults_and_command_line_overrides(
    cityscapes_tree: FakeTree, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # the paper config names task rgb2event and placeholder roots; the command line replaces the roots
    dsec = write_dsec(tmp_path / "dsec", [split_label((16, 32), 5, 8)], train_count=1)  # frame 000002
    write_png(dsec.root / "69mask_train_edges/zurich_city_00_a/000001.png", np.zeros((16, 32), np.uint8))
    config = str(REPO / "configs" / "rgb2event.yaml")
    cli_main(["prepare", "-c", config, *roots(cityscapes_tree, dsec), "--data.rcs_min_pixels=100"])
    out = capsys.readouterr().out
    assert "task rgb2event (11 classes)" in out
    assert row(out, "DSEC test (target)")[:2] == ["1", "2806"]
    assert "data.rcs_temperature=0.01" in out  # from the config
    # the config's data.dsec_frames: reference drops the odd frame, as training does
    assert row(out, "DSEC train (target)")[:2] == ["1", "4037"]
    assert "DSEC train: kept 1 frames, dropped 1 (data.dsec_frames='reference'" in out
    cli_main(
        [
            "prepare",
            "-c",
            config,
            *roots(cityscapes_tree, dsec),
            "--data.rcs_min_pixels=100",
            "--data.dsec_frames=all",
        ]
    )
    out = capsys.readouterr().out
    assert row(out, "DSEC train (target)")[:2] == ["2", "4037"] and "dropped" not in out


@pytest.mark.filterwarnings("ignore::madm_pl.prepare.DatasetSizeWarning")
def test_file_lists_select_the_images(
    cityscapes_tree: FakeTree, fmb_tree: FakeTree, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    train = write_file_list(
        tmp_path / "train.json",
        source=(cityscapes_tree.train_images[:2], cityscapes_tree.train_labels[:2]),
        target_images=fmb_tree.train_images[:1],
    )
    test = write_file_list(
        tmp_path / "test.json", target_images=fmb_tree.test_images[1:], target_labels=fmb_tree.test_labels[1:]
    )
    main(
        [
            "--data.task=rgb2infrared",
            *roots(cityscapes_tree, fmb_tree),
            f"--data.init_args.train_file_list={train}",
            f"--data.test_file_list={test}",
            "--data.rcs_min_pixels=100",
        ]
    )
    out = capsys.readouterr().out
    assert row(out, "Cityscapes train (source)")[0] == "2"
    assert row(out, "FMB train (target)")[0] == "1"
    assert row(out, "FMB test (target)")[0] == "1"
    target = out[out.index("target test label histogram") :]
    assert row(target, "sky")[:2] == ["256", "50.00"]  # only the second test image (sky | pole)


@pytest.mark.filterwarnings("ignore::madm_pl.prepare.DatasetSizeWarning")
def test_folder_kind_with_label_map(
    cityscapes_tree: FakeTree, folder_tree: FakeTree, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main(
        [
            "--data.task=rgb2infrared",
            *roots(cityscapes_tree, folder_tree),
            "--data.target_kind=folder",
            f"--data.label_map={tmp_path / 'mycam_labels.yaml'}",
            "--data.rcs_min_pixels=100",
        ]
    )
    out = capsys.readouterr().out
    assert row(out, "image folder test (target)")[:2] == ["1", "-"]  # no published count, no warning
    target = out[out.index("target test label histogram") :]
    assert row(target, "road")[:2] == ["256", "50.00"]  # raw 1 -> road
    assert row(target, "car")[:2] == ["256", "50.00"]  # raw 2 -> train id 7 (car)


@pytest.mark.filterwarnings("ignore::madm_pl.prepare.DatasetSizeWarning")
def test_rcs_temperature_and_min_pixels(
    tmp_path: Path, capsys: pytest.CaptureFixture, fmb_tree: FakeTree
) -> None:
    # road 3/4, car 1/4 of the pixels: P(car) = 1 / (1 + exp(-0.5 / T)); images: 1536 road + 512 car px
    source = write_cityscapes(tmp_path / "cs", [split_label((32, 64), 0, 13, column=48)] * 2)
    main(
        [
            "--data.task=rgb2infrared",
            *roots(source, fmb_tree),
            "--data.rcs_temperature=1",
            "--data.rcs_min_pixels=100",
        ]
    )
    assert row(capsys.readouterr().out, "car")[:2] == ["1,024", f"{100 / (1 + np.exp(-0.5)):.2f}"]
    main(
        [
            "--data.task=rgb2infrared",
            *roots(source, fmb_tree),
            "--data.rcs_temperature=0.01",
            "--data.rcs_min_pixels=100",
        ]
    )
    assert row(capsys.readouterr().out, "car")[:2] == ["1,024", "100.00"]
    # min pixels: car (512 px per image) is no candidate above 600 px, road (1536) is
    with pytest.warns(UserWarning, match="never drawn"):
        main(["--data.task=rgb2infrared", *roots(source, fmb_tree), "--data.rcs_min_pixels=600"])
    out = capsys.readouterr().out
    assert row(out, "car") == ["1,024", "0.00", "0"]
    assert row(out, "road") == ["3,072", "100.00", "2"]
    with pytest.raises(SystemExit, match=r"data\.rcs_min_pixels"):
        main(["--data.task=rgb2infrared", *roots(source, fmb_tree), "--data.rcs_min_pixels=2000"])
    with pytest.raises(SystemExit, match=r"data\.rcs_temperature must be > 0"):
        main(["--data.task=rgb2infrared", *roots(source, fmb_tree), "--data.rcs_temperature=0"])


def test_missing_folders_name_their_paths(cityscapes_tree: FakeTree, tmp_path: Path) -> None:
    fmb = write_fmb(tmp_path / "fmb", [split_label((16, 32), 1, 9)])
    for label in (fmb.root / "test" / "Label").iterdir():
        label.unlink()
    (fmb.root / "test" / "Label").rmdir()
    missing_source = tmp_path / "no_cityscapes"
    with pytest.raises(SystemExit) as error:
        main(
            [
                "--data.task=rgb2infrared",
                f"--data.source_root={missing_source}",
                f"--data.target_root={fmb.root}",
            ]
        )
    message = str(error.value)
    # both problems at once, each with its path and option
    assert f"data.source_root='{missing_source}'" in message
    assert f"data.target_root='{fmb.root}'" in message and "test/Label" in message


def test_required_options_and_bad_values(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--data.task=rgb2infrared"])
    assert re.search(r"missing --data.source_root, --data.target_root", capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main(["-c", str(tmp_path / "nope.yaml")])
    assert "fix -c/--config" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"data\.task"):
        main(["--data.task=rgb2sonar", "--data.source_root=/a", "--data.target_root=/b"])


@pytest.mark.filterwarnings("ignore::madm_pl.prepare.DatasetSizeWarning")
def test_target_train_labels_are_checked_when_asked(
    cityscapes_tree: FakeTree, fmb_tree: FakeTree, capsys: pytest.CaptureFixture
) -> None:
    args = ["--data.task=rgb2infrared", *roots(cityscapes_tree, fmb_tree), "--data.rcs_min_pixels=100"]
    main([*args, "--data.target_train_labels=false"])  # the default: train labels are not read
    with pytest.raises(SystemExit) as error:
        main([*args, "--data.target_train_labels=true"])
    message = str(error.value)
    assert "missing: train/Label" in message and "data.target_train_labels=false" in message
    for name in fmb_tree.train_images:
        write_png(fmb_tree.root / name.replace("/Infrared/", "/Label/"), split_label((16, 32), 1, 9))
    main([*args, "--data.init_args.target_train_labels=True"])
    assert row(capsys.readouterr().out, "FMB train (target)")[0] == "3"
    with pytest.raises(SystemExit):
        main([*args, "--data.target_train_labels=maybe"])
    assert "target_train_labels" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::madm_pl.prepare.DatasetSizeWarning")
def test_every_bad_file_is_listed_at_once_and_exits_non_zero(
    cityscapes_tree: FakeTree, fmb_tree: FakeTree, capsys: pytest.CaptureFixture
) -> None:
    """Five different defects, each of which stops training only when RCS or the sampler draws its
    file; prepare exited 0 on all but the unmatched pair, and named only the first of those."""
    source, target = cityscapes_tree.root, fmb_tree.root
    bad_ids = split_label((32, 64), 0, 30)  # 30 is no Cityscapes train id
    write_png(source / cityscapes_tree.train_labels[0], bad_ids)
    truncated_source = source / cityscapes_tree.train_images[1]
    truncated_source.write_bytes(truncated_source.read_bytes()[:40])
    truncated_target = target / fmb_tree.train_images[1]
    truncated_target.write_bytes(truncated_target.read_bytes()[:40])
    write_png(target / fmb_tree.test_labels[0], split_label((8, 8), 1, 9))  # the image is 16x32
    (target / fmb_tree.test_labels[1]).unlink()
    with pytest.raises(SystemExit) as error:
        main(["--data.task=rgb2infrared", *roots(cityscapes_tree, fmb_tree), "--data.rcs_min_pixels=100"])
    message = str(error.value)
    assert message.startswith("madm-pl prepare: error: 5 bad files")
    lines = message.splitlines()
    assert lines[-1].startswith("fix: replace or remove each file named")
    problems = [line.strip() for line in lines[1:-1]]
    assert len(problems) == 5
    expected = [
        f"label '{source / cityscapes_tree.train_labels[0]}'",  # ids outside the map
        f"cannot read image '{truncated_source}'",
        f"cannot read image '{truncated_target}'",
        f"image '{target / fmb_tree.test_images[0]}' is 16x32 but its label",
        f"FMB image '{target / fmb_tree.test_images[1]}' has no label",
    ]
    for start in expected:
        assert sum(problem.startswith(start) for problem in problems) == 1, (start, problems)
    assert not (source / CACHE_NAME).exists()  # nothing cached from a tree that fails
    assert "reading every image and label" in capsys.readouterr().out


def test_prepare_refuses_abbreviated_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as error:
        main(["--data.tas=rgb2infrared", "--data.source_root=/a", "--data.target_root=/b"])
    assert error.value.code == 2
    # madm-pl fit's parser, its one line
    assert capsys.readouterr().err.strip() == (
        "madm-pl prepare: error: --data.tas=rgb2infrared: CrossModalityDataModule has no option 'tas'; "
        "did you mean `task`? Fix: --data.init_args.task=rgb2infrared"
    )


def test_prepare_builds_the_datamodule_fit_would(cityscapes_tree: FakeTree, fmb_tree: FakeTree) -> None:
    # one parser: the same -c (a composed demo config) and --data.* options give the same data options
    args = ["-c", str(REPO / "configs" / "demo" / "rgb2infrared.yaml"), *roots(cityscapes_tree, fmb_tree)]
    datamodule = parse_datamodule([*args, "--data.seed=7"])
    fit = parse_config([*args, "--data.init_args.seed=7"]).data.init_args
    assert dict(datamodule.hparams) == fit.as_dict()
    assert (datamodule.seed, datamodule.crop_size, datamodule.target_root) == (
        7,
        (64, 64),
        str(fmb_tree.root),
    )

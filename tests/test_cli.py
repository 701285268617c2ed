"""The command line: three entry points, the demo config, errors that name the option, predict output,
checkpoints per run, a save on an error or Ctrl+C, folders checked at start, quiet output."""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from madm_pl.callbacks.checkpoint import AtomicCheckpointIO
from madm_pl.cli import lightning_main, main
from madm_pl.data.io import read_image
from madm_pl.data.samples import CrossModalityTrainDataset
from madm_pl.labels import TASKS
from madm_pl.module import MADMModule
from tests.cli_runs import DEMO, REPO, small_run_args
from tests.conftest import TrainedRun

BIN = Path(sys.executable).parent


def test_console_script_fast_dev_run(synthetic_root: Path, tmp_path: Path) -> None:
    # (the `lightning` script runs the `trained_run` fixture)
    command = [str(BIN / "madm-pl"), "fit", "-c", str(DEMO), "--trainer.fast_dev_run=true"]
    result = subprocess.run(
        command + small_run_args(synthetic_root, tmp_path),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # fast_dev_run runs one validation batch: the IoU table is printed.
    assert "mIoU" in result.stdout + result.stderr


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    # (`python -m madm_pl` runs in test_backbone_without_unet_...)
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for subcommand in ("fit", "validate", "test", "predict", "prepare", "convert"):
        assert re.search(rf"^\s+{subcommand}\s+\S", out, re.M), subcommand  # listed with its help
    assert "usage: madm-pl" in out


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str], code: int = 2) -> str:
    """The whole of what a bad command line prints: one line on stderr (no usage block), its exit code."""
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "usage:" not in captured.out + captured.err, captured.err
    return lines[0]


def test_unknown_model_option_names_the_nearest_and_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    # was a 93-line usage block ending in "Given value: NestedArg(key='learning_rate', val='1e-3')"
    line = _one_line_error(capsys, ["fit", "-c", str(DEMO), "--model.init_args.learning_rate=1e-3"])
    assert line == (
        "madm-pl fit: error: --model.init_args.learning_rate=1e-3: MADMModule has no option "
        "'learning_rate'; did you mean `lr`? Fix: --model.init_args.lr=1e-3"
    )
    line = _one_line_error(capsys, ["fit", "-c", str(DEMO), "--model.init_args.dplg_tt0=3"])
    assert line.endswith("has no option 'dplg_tt0'; did you mean `dplg_t0`? Fix: --model.init_args.dplg_t0=3")


def test_a_moved_head_option_names_its_new_place(capsys: pytest.CaptureFixture[str]) -> None:
    # the five model.head_* options of configs written before issue 29 are the head's init_args now
    line = _one_line_error(capsys, ["fit", "-c", str(DEMO), "--model.init_args.head_decoded_channels=16"])
    assert line == (
        "madm-pl fit: error: --model.init_args.head_decoded_channels=16: MADMModule has no option "
        "'head_decoded_channels' (it moved to head.init_args.decoded_projection_channels); did you mean "
        "`head.init_args.decoded_projection_channels`? Fix: "
        "--model.init_args.head.init_args.decoded_projection_channels=16"
    )


def test_abbreviated_option_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse's allow_abbrev would take --trainer.max_step for --trainer.max_steps (and print the
    # config with max_steps: 5, exit 0).
    line = _one_line_error(capsys, ["fit", "-c", str(DEMO), "--trainer.max_step=5", "--print_config"])
    assert line == (
        "madm-pl fit: error: --trainer.max_step=5: no such option; did you mean `trainer.max_steps`? "
        "Fix: --trainer.max_steps=5"
    )
    # an option without its group: the one of that name
    line = _one_line_error(capsys, ["fit", "-c", str(DEMO), "--max_steps=5"])
    assert line.endswith("did you mean `trainer.max_steps`? Fix: --trainer.max_steps=5")


def test_unknown_key_in_yaml_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the typo in the base the task file includes (configs/demo/base.yaml), as a user would copy both
    base = (DEMO.parent / "base.yaml").read_text()
    (tmp_path / "base.yaml").write_text(base.replace("    classmix: true", "    class_mix: true"))
    line_number = base.splitlines().index("    classmix: true") + 1
    config = tmp_path / "bad.yaml"
    config.write_text(DEMO.read_text())
    line = _one_line_error(capsys, ["fit", "-c", str(config)])
    assert line == (
        f"madm-pl fit: error: {tmp_path / 'base.yaml'}, line {line_number}: model.init_args.class_mix: "
        f"MADMModule has no option 'class_mix'; did you mean `classmix`? Fix: rename the key to classmix in "
        f"{tmp_path / 'base.yaml'}"
    )
    # a dotted key of a task file (found by the main parser, not fit's)
    (tmp_path / "base.yaml").write_text(base)
    config.write_text(DEMO.read_text().replace("trainer.default_root_dir:", "trainer.default_rootdir:"))
    line = _one_line_error(capsys, ["fit", "-c", str(config)])
    assert f"{config}, line " in line
    assert line.endswith(
        f"did you mean `trainer.default_root_dir`? Fix: write trainer.default_root_dir in {config}"
    )


def test_value_of_the_wrong_type_says_what_was_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line_error(capsys, ["fit", "-c", str(DEMO), "--data.init_args.batch_size=2.5"])
    assert line == (
        "madm-pl fit: error: --data.init_args.batch_size=2.5: expected int, got 2.5; did you mean 2? "
        "Fix: --data.init_args.batch_size=2"
    )
    line = _one_line_error(capsys, ["fit", "-c", str(DEMO), "--model.init_args.mode=madmm"])
    assert line == (
        "madm-pl fit: error: --model.init_args.mode=madmm: expected one of madm, source_only, oracle, got "
        "madmm; did you mean madm? Fix: --model.init_args.mode=madm"
    )
    config = tmp_path / "batch.yaml"
    config.write_text(f"config: {DEMO}\ndata:\n  init_args:\n    batch_size: 2.5\n")
    line = _one_line_error(capsys, ["fit", "-c", str(config)])
    assert line == (
        f"madm-pl fit: error: {config}, line 4: data.init_args.batch_size: expected int, got 2.5; did you "
        f"mean 2? Fix: set batch_size: 2 in {config}, line 4"
    )


def test_value_the_trainer_refuses_is_one_line_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # was a 37-line traceback before Lightning's sentence
    args = ["fit", "-c", str(DEMO), f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=-5"]
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "madm-pl: error: --trainer.max_steps=-5: `max_steps` must be a non-negative integer or -1 (infinite "
        "steps). You passed in -5."
    ]


def test_mistyped_command_and_missing_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _one_line_error(capsys, ["fti", "-c", str(DEMO)])
    assert line == (
        "madm-pl: error: unknown command 'fti': did you mean `fit`? The commands: fit, validate, test, "
        "predict, prepare, convert"
    )
    line = _one_line_error(capsys, ["fit", "-c", str(tmp_path / "nope.yaml")])
    assert line.startswith("madm-pl fit: error: -c/--config: File does not exist:") and "nope.yaml" in line


def test_debug_keeps_the_parsers_own_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(DEMO), "--trainer.max_step=5", "--debug"])
    err = capsys.readouterr().err
    assert "usage: madm-pl" in err and "unrecognized arguments: --trainer.max_step=5" in err


def test_lightning_script_names_itself(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning", "fit", "--help"])
    with pytest.raises(SystemExit) as caught:
        lightning_main()
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith("usage: lightning [options] fit")


def test_missing_data_folder_is_one_line_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as caught:
        main(
            ["fit", "-c", str(DEMO), "--trainer.fast_dev_run=true"]
            + small_run_args(tmp_path, tmp_path)
            + [f"--data.init_args.source_root={missing}"]
        )
    assert caught.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("madm-pl: error: Cityscapes not found under data.source_root=")
    assert "fix data.source_root" in last


def test_backbone_without_unet_is_one_last_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    backbone = tmp_path / "sd"
    shutil.copytree(REPO / "priors" / "tiny", backbone)
    shutil.rmtree(backbone / "unet")
    command = [
        sys.executable,
        "-m",
        "madm_pl",
        "fit",
        "-c",
        str(DEMO),
        f"--model.init_args.backbone={backbone}",
    ]
    env = {key: value for key, value in os.environ.items() if key != "MADM_DEBUG"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"madm-pl: error: model.backbone='{backbone}': diffusion stack")
    assert "lacks unet/" in last and "set --model.init_args.backbone" in last
    # --debug: the error propagates with its traceback (here: in-process, as the exception itself)
    with pytest.raises(Exception, match="lacks unet/") as caught:
        main(command[3:] + ["--debug"])
    assert not isinstance(caught.value, SystemExit)


# ---------------------------------------------------------------------------------- a trained run
def test_fit_output_is_quiet_and_counts_iterations(trained_run: TrainedRun) -> None:
    output = trained_run.output
    for noise in (
        "LightningCLI's args parameter",  # cli.main passes args on purpose
        "accelerate",  # diffusers' advice, twice per run
        "litlogger",
        "module(s) in eval mode",  # the frozen VAE
        "LeafSpec",  # a torch deprecation inside Lightning
        "FLOPs",  # always 0 here
        "Epoch 0/",  # the bar of an iteration-based run
        "v_num",
        "Loading weights",  # transformers' bar for the tiny text encoder
        "was configured so 100%",
    ):
        assert noise not in output, noise
    assert "Modules in eval mode (frozen parts without trainable parameters: expected)" in output
    # output is not a terminal: one line per iteration (progress_bar.every_n_steps=1), with the loss
    lines = re.findall(
        r"^iteration (\d+)/2 \| train/loss ([\d.]+) \| ([\d.]+) it/s \| ETA (\S+)$", output, re.M
    )
    assert [int(step) for step, *_ in lines] == [1, 2]
    assert lines[-1][3] == "0:00:00"
    assert all(float(rate) > 0 for _, _, rate, _ in lines)


def test_checkpoints_stay_in_the_run_folder(trained_run: TrainedRun) -> None:
    checkpoints = trained_run.version / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert len(names) == 3 and re.fullmatch(r"iter000002-miou[\d.]+\.ckpt", names[0])
    assert names[1:] == ["last.ckpt", "run_state.json"]  # run_state.json: the newest checkpoint written
    assert (trained_run.version / "config.yaml").is_file()
    assert not (trained_run.root / "checkpoints").exists()
    # written through the CLI's atomic plugin: no temporary file left next to them
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]


def test_tensorboard_scalars_written(trained_run: TrainedRun) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(trained_run.version.glob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(trained_run.version))
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    for tag in (
        "train/loss_source",
        "train/loss_target",
        "train/loss_lplr_source",
        "train/loss_lplr_target",
        "train/dplg_timestep",
        "train/pseudo_label_weight",
        "val/miou",
    ):
        assert tag in scalars, (tag, sorted(scalars))
    assert "train/lr" in scalars
    assert "visual_train/source" in accumulator.Tags()["images"]  # every tag: tests/callbacks/


def _copy_run(run: TrainedRun, logs: Path, versions: tuple[int, ...]) -> list[Path]:
    """The trained run's last.ckpt as ``logs/rgb2infrared/version_<n>/checkpoints/last.ckpt``."""
    copies = []
    for version in versions:
        target = logs / "rgb2infrared" / f"version_{version}" / "checkpoints" / "last.ckpt"
        target.parent.mkdir(parents=True)
        shutil.copy(run.version / "checkpoints" / "last.ckpt", target)
        copies.append(target)
    return copies


def test_test_uses_the_newest_runs_last_checkpoint_and_adds_no_run(
    trained_run: TrainedRun, synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, newest, _ = _copy_run(trained_run, tmp_path / "logs", (0, 10, 9))  # 10 is newer than 9
    # a newer run stopped by Ctrl+C before its first last.ckpt: passed over, and said so
    interrupted = tmp_path / "logs" / "rgb2infrared" / "version_11" / "checkpoints" / "on_exception.ckpt"
    interrupted.parent.mkdir(parents=True)
    shutil.copy(newest, interrupted)
    caplog.set_level("INFO")
    main(["test", "-c", str(DEMO), *small_run_args(synthetic_root, tmp_path)])
    assert f"madm-pl test: {newest} (the newest run's last checkpoint" in caplog.text
    assert (
        "madm-pl test: passed over the newer version_11: it holds only checkpoints/on_exception.ckpt (a fit "
        f"stopped by an error or Ctrl+C); --ckpt_path={interrupted} uses it"
    ) in caplog.text
    shutil.rmtree(interrupted.parent.parent)
    assert "test after iteration 2 (rgb2infrared)" in caplog.text
    assert "Test metric" not in caplog.text  # the IoU table only, not Lightning's table too
    runs = tmp_path / "logs" / "rgb2infrared"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_10", "version_9"]
    assert [p.name for p in (runs / "version_10").iterdir()] == ["checkpoints"]  # no config.yaml
    assert [p.name for p in (runs / "version_10" / "checkpoints").iterdir()] == ["last.ckpt"]


def test_test_without_any_run_names_what_it_looked_for(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["test", "-c", str(DEMO), *small_run_args(synthetic_root, tmp_path)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    expected = f"{tmp_path / 'logs' / 'rgb2infrared'}/version_*/checkpoints/last.ckpt; train first"
    assert last.startswith("madm-pl: error: no checkpoint to use") and expected in last


def test_predict_keeps_paths_and_full_names_and_skips_unreadable_files(
    trained_run: TrainedRun, synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = tmp_path / "my_images"
    (images / "sub").mkdir(parents=True)
    sources = sorted((synthetic_root / "fmb" / "test" / "Infrared").glob("*.png"))
    inputs = {"a.png": 0, "a.jpg": 1, "sub/a.png": 2, "frame.001.png": 3, "frame.002.png": 4}
    for name, index in inputs.items():
        Image.open(sources[index]).convert("RGB").save(images / name, quality=95)
    deep = (np.asarray(Image.open(sources[0]).convert("L")).astype(np.uint16) * 257)[:, :80]
    Image.fromarray(deep).save(images / "deep16.png")  # a 16-bit image of another size
    (images / "broken.png").write_bytes(sources[0].read_bytes()[:300])  # truncated
    out = tmp_path / "predictions"
    caplog.set_level("INFO")
    with pytest.warns(UserWarning, match=r"predict: skipped 'broken\.png': cannot read image"):
        main(
            ["predict", "-c", str(DEMO)]
            + small_run_args(synthetic_root, tmp_path)
            + [
                f"--ckpt_path={trained_run.version / 'checkpoints' / 'last.ckpt'}",
                f"--data.init_args.predict_root={images}",
                f"--prediction_writer.output_dir={out}",
            ]
        )
    palette = TASKS["rgb2infrared"].palette
    expected = {"a.png", "a.jpg.png", "sub/a.png", "frame.001.png", "frame.002.png", "deep16.png"}
    for kind in ("labels", "colour"):
        written = {p.relative_to(out / kind).as_posix() for p in (out / kind).rglob("*") if p.is_file()}
        assert written == expected  # 6 readable inputs, 6 outputs each
    for name in expected:
        label = np.array(Image.open(out / "labels" / name))
        colour = np.array(Image.open(out / "colour" / name))
        original = Image.open(images / name.removesuffix(".png") if name == "a.jpg.png" else images / name)
        assert label.shape == (original.height, original.width)  # back at the original size
        assert label.max() < len(palette)
        np.testing.assert_array_equal(colour, palette[label])
    assert "skipped 1 unreadable files:\n  broken.png" in caplog.text
    # both folders named: the colour one is what a user opens first
    assert (
        f"wrote 6 label maps (class ids) to {out / 'labels'} and their palette colours to {out / 'colour'}"
        in (caplog.text)
    )
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files
    assert not (tmp_path / "logs").exists()  # predict adds no TensorBoard run
    # a second predict into the now non-empty folder needs --prediction_writer.overwrite=true
    again = ["predict", "-c", str(DEMO), *small_run_args(synthetic_root, tmp_path)]
    again += [f"--data.init_args.predict_root={images}", f"--prediction_writer.output_dir={out}"]
    again += [f"--ckpt_path={trained_run.version / 'checkpoints' / 'last.ckpt'}"]
    with pytest.raises(SystemExit):
        main(again)


# ------------------------------------------------------------------------ errors during training
def _short_fit(synthetic_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["fit", "-c", str(DEMO), "--trainer.max_steps=4", "--trainer.val_check_interval=100"] + [
        *small_run_args(synthetic_root, tmp_path),
        *extra,
    ]


def test_bad_file_during_training_saves_a_checkpoint_and_prints_the_resume_command(
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(next((synthetic_root / "fmb" / "train" / "Infrared").glob("*.png")).read_bytes()[:300])
    original = CrossModalityTrainDataset.__getitem__

    def bad_file_from_sample_4(self: CrossModalityTrainDataset, index: int) -> dict:
        if index >= 4:  # batches of 2: the third batch meets a truncated target image
            read_image(broken)
        return original(self, index)

    monkeypatch.setattr(CrossModalityTrainDataset, "__getitem__", bad_file_from_sample_4)
    saved: list[Path] = []
    atomic_save = AtomicCheckpointIO.save_checkpoint

    def spy(self: AtomicCheckpointIO, checkpoint: dict, path: str, storage_options: object = None) -> None:
        saved.append(Path(path))
        atomic_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", spy)
    args = _short_fit(synthetic_root, tmp_path)
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    err = caplog.text  # Lightning's log (stderr outside pytest)
    checkpoint = tmp_path / "logs" / "rgb2infrared" / "version_0" / "checkpoints" / "on_exception.ckpt"
    assert saved == [checkpoint]  # through the CLI's atomic checkpoint plugin
    stopped = re.search(
        rf"training stopped by an error at iteration (\d+); saved {re.escape(str(checkpoint))}", err
    )
    step = int(stopped[1])  # 1 or 2: Lightning reads a batch ahead of the step that trains on it
    assert step >= 1
    command = re.search(r"resume with:\n  (.+)", err)[1]
    assert last.startswith(f"madm-pl: error: cannot read image '{broken}'")  # the last line of all
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["global_step"] == step
    assert (
        state["datamodule_hyper_parameters"]
        and state["CrossModalityDataModule"]["train_batches_seen"] == step
    )
    # the file is fixed: the printed command continues the run to max_steps
    monkeypatch.undo()
    words = shlex.split(command)
    assert words[0] == "madm-pl" and words[-1] == f"--ckpt_path={checkpoint}" and words[1:-1] == args
    main(words[1:])
    resumed = tmp_path / "logs" / "rgb2infrared" / "version_1" / "checkpoints" / "last.ckpt"
    assert torch.load(resumed, map_location="cpu", weights_only=False)["global_step"] == 4


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = MADMModule.training_step

    def interrupted_in_3(self: MADMModule, batch: dict, batch_idx: int) -> object:
        if self.trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C during iteration 3
        return original(self, batch, batch_idx)

    monkeypatch.setattr(MADMModule, "training_step", interrupted_in_3)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as caught:
            main(_short_fit(synthetic_root, tmp_path))
    finally:
        signal.signal(signal.SIGINT, handler)
    assert caught.value.code == 130  # 128 + SIGINT, as a shell reports it
    err = caplog.text
    checkpoint = tmp_path / "logs" / "rgb2infrared" / "version_0" / "checkpoints" / "on_exception.ckpt"
    # iteration 3 is completed first (tests/test_cli_checkpoints.py: the resumed run is exact)
    assert f"training interrupted (Ctrl+C) at iteration 3; saved {checkpoint}" in err
    assert f"--ckpt_path={checkpoint}" in re.search(r"resume with:\n  (.+)", err)[1]
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == 3


@pytest.mark.parametrize("folder", ["checkpoint", "log"])
def test_unwritable_folder_is_found_before_the_first_step(
    folder: str,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    if os.geteuid() != 0:
        read_only.chmod(0o555)
    else:  # root writes anywhere: a read-only file system for new files under `read_only`
        mkstemp = tempfile.mkstemp

        def read_only_file_system(*args: object, dir: str | None = None, **kwargs: object) -> object:
            if dir is not None and Path(dir).resolve().is_relative_to(read_only):
                raise OSError(errno.EROFS, "Read-only file system")
            return mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", read_only_file_system)

    def no_step_please(*args: object) -> None:
        raise AssertionError("a training step ran")

    monkeypatch.setattr(MADMModule, "training_step", no_step_please)
    option = (
        f"--checkpoint.dirpath={read_only / 'checkpoints'}"
        if folder == "checkpoint"
        else f"--trainer.logger.init_args.save_dir={read_only}"
    )
    with pytest.raises(SystemExit):
        main(_short_fit(synthetic_root, tmp_path, option))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"madm-pl: error: the {folder} folder '{read_only}" in last
    assert "is not writable (" in last
    assert (
        "fix checkpoint.dirpath" if folder == "checkpoint" else "fix trainer.logger.init_args.save_dir"
    ) in last


def test_help_imports_no_heavy_library() -> None:
    # `madm-pl --help` (and every command's start) builds the parser only: diffusers' models,
    # albumentations (with OpenCV) and tensorboard are imported where a stack, a data pipeline or a log
    # is made. (transformers, matplotlib and scipy still come with lightning, through torchmetrics.)
    heavy = ("diffusers", "albumentations", "cv2", "tensorboard")
    code = (
        "import sys\nfrom madm_pl.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(name for name in {heavy!r} if name in sys.modules), file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "[]"
    assert "usage: madm-pl" in result.stdout


def test_threads_is_a_config_setting_every_command_applies(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the demo configs hold `threads: 1`, so fit, test, predict and the resume line (which repeats -c)
    # run with it; an environment variable would fall off the README's test/predict commands
    import madm_pl.cli as cli

    set_threads = cli.set_threads
    applied: list[int | None] = []
    monkeypatch.setattr(cli, "set_threads", applied.append)
    cli.MADMCLI(
        MADMModule,
        cli.CrossModalityDataModule,
        args=["-c", str(DEMO), *small_run_args(synthetic_root, tmp_path)],
        run=False,
        **cli.cli_options(),
    )
    assert applied == [1]  # before the model and data are built
    for subcommand in ("test", "predict"):
        with pytest.raises(SystemExit):
            main([subcommand, "-c", str(DEMO), "--print_config"])
        assert "\nthreads: 1\n" in capsys.readouterr().out
    threads = torch.get_num_threads()
    try:
        set_threads(2)
        assert torch.get_num_threads() == 2
        set_threads(None)  # null: torch's default, untouched
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    monkeypatch.undo()  # the real set_threads refuses 0 before anything is built
    line = _one_line_error(capsys, ["fit", "-c", str(DEMO), "--threads=0"])
    assert line == "madm-pl: error: threads=0: give a number of CPU threads >= 1, or null for every core"


def test_importing_the_package_with_torchao_installed_prints_no_import_noise() -> None:
    """diffusers imports torchao (pinned for adamw-8bit) and torchao logs on import; madm_pl drops those
    known lines by their text (madm_pl/__init__.py), and nothing else is printed."""
    import importlib.util

    assert importlib.util.find_spec("torchao") is not None
    code = "import madm_pl.module, diffusers.quantizers.torchao, torchao"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == ""

"""Nothing lost on an interruption, no checkpoint that lies or runs code (issue 26), through the CLI:
``last.ckpt`` at the end of every run, Ctrl+C and SIGTERM stopping at an iteration boundary (the resumed
run equals an uninterrupted one), exit codes, paths printed only when they exist, checkpoints that
cannot be used named in one line."""

from __future__ import annotations

import errno
import os
import re
import shlex
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.connectors import signal_connector

from madm_pl.cli import main
from madm_pl.module import MADMModule
from tests.cli_runs import DEMO, small_run_args
from tests.malicious import RunsACommand

#: 4 iterations of 2 accumulated micro-batches (the paper recipe's accumulation), no validation; the
#: small world's epochs are 4 batches: iterations 1-2 are epoch 0, 3-4 epoch 1.
ACCUMULATED = [
    "--trainer.max_steps=4",
    "--trainer.accumulate_grad_batches=2",
    "--trainer.val_check_interval=100",
]


def fit_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["fit", "-c", str(DEMO), *small_run_args(root, tmp_path), *extra]


def run_folder(tmp_path: Path, version: int) -> Path:
    return tmp_path / "logs" / "rgb2infrared" / f"version_{version}" / "checkpoints"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(resumed: dict, uninterrupted: dict) -> None:
    """Same iteration, weights and AdamW state, to the bit."""
    assert resumed["global_step"] == uninterrupted["global_step"]
    assert resumed["state_dict"].keys() == uninterrupted["state_dict"].keys()
    for name, value in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
    (ours,), (theirs,) = resumed["optimizer_states"], uninterrupted["optimizer_states"]
    assert ours["state"].keys() == theirs["state"].keys() and theirs["state"]
    for index, state in theirs["state"].items():
        for key, value in state.items():
            assert torch.equal(ours["state"][index][key], value), (index, key)


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    # Lightning ignores SIGINT after a KeyboardInterrupt; a failed run may leave other handlers.
    handlers = {
        number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    }
    yield
    for number, handler in handlers.items():
        signal.signal(number, handler)


@pytest.fixture(scope="module")
def uninterrupted(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The last checkpoint of the 3-iteration accumulated run, without interruption."""
    root = tmp_path_factory.mktemp("uninterrupted")
    main(fit_args(synthetic_root, root, *ACCUMULATED))
    return load(run_folder(root, 0) / "last.ckpt")


def signal_in_micro_batch(monkeypatch: pytest.MonkeyPatch, number: int, at_call: int, times: int = 1) -> None:
    """Send ``number`` to this process ``times`` times at the start of the ``at_call``-th training_step
    (0-based): between the two micro-batches of an iteration when ``at_call`` is odd, in the first
    micro-batch when it is even."""
    original = MADMModule.training_step
    calls = {"n": 0}

    def step(self: MADMModule, batch: dict, batch_idx: int) -> object:
        if calls["n"] == at_call:
            for _ in range(times):
                os.kill(os.getpid(), number)
        calls["n"] += 1
        return original(self, batch, batch_idx)

    monkeypatch.setattr(MADMModule, "training_step", step)


# ------------------------------------------------------------------------------ 1. last.ckpt
def test_last_ckpt_holds_the_end_when_the_final_validation_does_not_improve(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Only the first validation improves the monitored mIoU (as 0.45 then 0.42, or --checkpoint.mode=min)
    monkeypatch.setattr(
        ModelCheckpoint, "check_monitor_top_k", lambda self, trainer, current=None: not self.best_k_models
    )
    main(fit_args(synthetic_root, tmp_path, "--trainer.max_steps=4", "--trainer.val_check_interval=2"))
    folder = run_folder(tmp_path, 0)
    (best,) = folder.glob("iter000002-*.ckpt")
    assert load(best)["global_step"] == 2
    assert load(folder / "last.ckpt")["global_step"] == 4
    # test of the older file: one warning line naming the newest; of last.ckpt: none
    caplog.set_level("INFO")
    evaluate = ["-c", str(DEMO), *small_run_args(synthetic_root, tmp_path)]
    with pytest.warns(UserWarning) as warned:
        main(["test", *evaluate, f"--ckpt_path={best}"])
    older = [str(w.message) for w in warned if "older than its run's last iteration" in str(w.message)]
    assert older == [
        f"'{best}' holds iteration 2, older than its run's last iteration 4 ({folder / 'last.ckpt'}, as "
        f"recorded in run_state.json): pass --ckpt_path={folder / 'last.ckpt'} to use that one"
    ]
    assert "test after iteration 2" in caplog.text
    caplog.clear()
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        main(["test", *evaluate])
    assert not [w for w in warned if "older than" in str(w.message)]
    assert "test after iteration 4" in caplog.text


def test_last_ckpt_holds_the_end_when_max_steps_is_not_a_validation_step(
    synthetic_root: Path, tmp_path: Path
) -> None:
    main(fit_args(synthetic_root, tmp_path, "--trainer.max_steps=3", "--trainer.val_check_interval=2"))
    assert load(run_folder(tmp_path, 0) / "last.ckpt")["global_step"] == 3


# --------------------------------------------------------------- 2, 5. Ctrl+C and SIGTERM mid-iteration
@pytest.mark.parametrize(
    ("number", "at_call", "said", "code"),
    [
        # between the micro-batches of iteration 2, the last of epoch 0: stops after iteration 3
        (signal.SIGINT, 3, "interrupted (Ctrl+C)", 130),
        # in the first micro-batch of iteration 3 (Lightning alone stops at the end of that batch)
        (signal.SIGTERM, 4, "terminated (SIGTERM)", 143),
    ],
)
def test_a_signal_between_micro_batches_resumes_as_if_uninterrupted(
    number: int,
    at_call: int,
    said: str,
    code: int,
    uninterrupted: dict,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    signal_in_micro_batch(monkeypatch, number, at_call)
    args = fit_args(synthetic_root, tmp_path, *ACCUMULATED)
    with pytest.raises(SystemExit) as caught:
        main(args)
    output = caplog.text
    command = shlex.split(re.search(r"resume with:\n  (.+)", output)[1])
    assert command[1:-1] == args
    main(command[1:])  # the printed command, run to the end
    assert_same_state(load(run_folder(tmp_path, 1) / "last.ckpt"), uninterrupted)
    assert caught.value.code == code  # 128 + the signal, as a shell reports it; a scheduler reads it
    saved = run_folder(tmp_path, 0) / "on_exception.ckpt"
    assert command[-1] == f"--ckpt_path={saved}"
    assert f"training {said} at iteration 3; saved {saved}" in output  # iteration 3 was completed
    assert "stopped by an error" not in output
    assert load(saved)["global_step"] == 3


def test_a_second_ctrl_c_stops_at_once_without_saving_a_half_step(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    signal_in_micro_batch(monkeypatch, signal.SIGINT, at_call=3, times=2)
    with pytest.raises(SystemExit) as caught:
        main(fit_args(synthetic_root, tmp_path, *ACCUMULATED))
    assert caught.value.code == 130
    assert (
        "training stopped at once (Ctrl+C again) in iteration 2: nothing saved for it (a checkpoint inside "
        "an iteration would not resume exactly); no checkpoint was written before: start again"
    ) in caplog.text
    assert not (run_folder(tmp_path, 0) / "on_exception.ckpt").exists()
    assert "resume with" not in caplog.text  # no checkpoint was written before (no validation yet)


# --------------------------------------------------------------------------- 4. disk full
def test_a_full_disk_prints_no_saved_path_and_no_resume_command(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    save = torch.save

    def full_after_the_best_file(checkpoint: dict, file: object) -> None:
        # the top-k file fits; last.ckpt and anything after it do not (torch.save writes into the
        # temporary file of io.atomic_write, ".<name>.<random>.tmp")
        if not Path(file.file.name).name.startswith(".iter"):
            raise OSError(errno.ENOSPC, "No space left on device")
        save(checkpoint, file)

    monkeypatch.setattr(torch, "save", full_after_the_best_file)
    caplog.set_level("INFO")
    with pytest.raises(SystemExit):
        main(fit_args(synthetic_root, tmp_path, "--trainer.max_steps=2", "--trainer.val_check_interval=2"))
    monkeypatch.undo()
    (best,) = run_folder(tmp_path, 0).glob("iter000002-*.ckpt")
    assert f"saved {best}" in caplog.text  # the file of iteration 2 that was written
    named = re.findall(r"(?:saved|--ckpt_path=)(\S+\.ckpt)", caplog.text)
    assert all(Path(path).is_file() for path in named), named
    assert not (run_folder(tmp_path, 0) / "last.ckpt").exists()
    assert f"saved {run_folder(tmp_path, 0) / 'last.ckpt'}" not in caplog.text


# ---------------------------------------------------------------- 3, 6, 7. checkpoints given to the CLI
@pytest.fixture(scope="module")
def short_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last.ckpt of a 1-iteration run."""
    root = tmp_path_factory.mktemp("short")
    main(fit_args(synthetic_root, root, "--trainer.max_steps=1", "--trainer.val_check_interval=100"))
    return run_folder(root, 0) / "last.ckpt"


def evaluate_args(command: str, root: Path, tmp_path: Path, checkpoint: Path) -> list[str]:
    args = [command, "-c", str(DEMO), *small_run_args(root, tmp_path), f"--ckpt_path={checkpoint}"]
    if command == "predict":
        images = tmp_path / "images"
        images.mkdir(exist_ok=True)
        source = next((root / "fmb" / "test" / "Infrared").glob("*.png"))
        (images / source.name).write_bytes(source.read_bytes())
        args += [
            f"--data.init_args.predict_root={images}",
            f"--prediction_writer.output_dir={tmp_path / 'out'}",
        ]
    if command == "fit":
        args += ["--trainer.max_steps=2"]
    return args


def last_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("command", ["fit", "test", "predict"])
def test_a_checkpoint_that_runs_a_command_is_refused(
    command: str,
    short_run: Path,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "ran"
    crafted = load(short_run)
    crafted["callbacks"] = {"x": RunsACommand(marker)}
    evil = tmp_path / "evil.ckpt"
    torch.save(crafted, evil)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # set for another tool
    with pytest.raises(SystemExit) as caught:
        main(evaluate_args(command, synthetic_root, tmp_path, evil))
    assert caught.value.code == 1
    assert not marker.exists()
    last = last_error_line(capsys)
    assert last.startswith(
        f"madm-pl: error: cannot read the checkpoint '{evil}': torch.load(weights_only=True)"
    )
    with pytest.raises(SystemExit):
        main([*evaluate_args(command, synthetic_root, tmp_path, evil), "--weights_only=false"])
    assert not marker.exists()
    # the Trainer's load (fit/test/predict's --weights_only) refuses to unpickle objects too
    with pytest.raises(SystemExit):
        main([*evaluate_args(command, synthetic_root, tmp_path, short_run), "--weights_only=false"])
    assert last_error_line(capsys).startswith(
        f"madm-pl: error: --weights_only=false is refused for '{short_run}': madm-pl loads checkpoints"
    )


def test_a_flipped_weight_byte_stops_test_in_one_line(
    short_run: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(short_run.read_bytes())
    # a byte of the head's classifier weight (the last weights written are the teacher's: any is fine)
    weight = load(short_run)["state_dict"]["student.head.classifier.weight"]
    at = bytes(data).find(weight.numpy().tobytes())
    assert at > 0
    data[at + 5] ^= 0x10
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(SystemExit):
        main(evaluate_args("test", synthetic_root, tmp_path, damaged))
    last = last_error_line(capsys)
    assert last.startswith(
        f"madm-pl: error: the checkpoint '{damaged}' is damaged: 1 of its weight tensors "
        "('student.head.classifier.weight') differ"
    )


def test_random_bytes_given_to_predict_are_one_line(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(10_000))
    with pytest.raises(SystemExit) as caught:
        main(evaluate_args("predict", synthetic_root, tmp_path, noise))
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"madm-pl: error: cannot read the checkpoint '{noise}' (10000 bytes): it is not a complete torch"
        )
    )


# -------------------------------------------------------------------------- 8. stale temporaries
def test_fit_removes_the_temporaries_of_a_killed_checkpoint_write(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = folder / ".last.ckpt.a1b2c3d4.tmp"  # kill -9 while last.ckpt was written: empty
    stale.write_bytes(b"")
    other = tmp_path / ".last.ckpt.a1b2c3d4.tmp"  # not in the run's checkpoint folder: left alone
    other.write_bytes(b"")
    caplog.set_level("INFO")
    main(fit_args(synthetic_root, tmp_path, "--trainer.fast_dev_run=true", f"--checkpoint.dirpath={folder}"))
    assert not stale.exists() and other.exists()
    assert f"removed 1 temporary file(s) of a checkpoint write that was killed: {stale}" in caplog.text


# ------------------------------------------------------------------------ 5. SLURM's requeue
def test_slurm_requeue_saves_at_an_iteration_boundary_and_the_requeued_job_resumes_exactly(
    uninterrupted: dict,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A batch job (sbatch --signal=USR1@90 ...; srun madm-pl fit ...): Lightning's SLURMEnvironment with
    # auto-requeue installs its SIGUSR1 handler, which saves <default_root_dir>/hpc_ckpt_<n>.ckpt and calls
    # `scontrol requeue <job>` (recorded here, there is no SLURM).
    for key, value in {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "madm",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }.items():
        monkeypatch.setenv(key, value)
    requeued: list[list[str]] = []
    monkeypatch.setattr(signal_connector, "call", lambda command, **kwargs: requeued.append(command) or 0)
    signal_in_micro_batch(monkeypatch, signal.SIGUSR1, at_call=4)  # in the first micro-batch of iteration 3
    caplog.set_level("INFO")
    args = fit_args(synthetic_root, tmp_path, *ACCUMULATED)
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 128 + signal.SIGUSR1
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    assert requeued == [["scontrol", "requeue", "4242"]]
    assert load(hpc)["global_step"] == 3  # iteration 3 was completed first
    assert f"training stopped for SLURM's requeue (SIGUSR1) at iteration 3; saved {hpc}" in caplog.text
    assert not (run_folder(tmp_path, 0) / "on_exception.ckpt").exists()  # one save is enough
    # the requeued job runs the same command: Lightning resumes from the hpc checkpoint by itself
    main(args)
    assert f"Restoring states from the checkpoint path at {hpc}" in caplog.text
    assert_same_state(load(run_folder(tmp_path, 1) / "last.ckpt"), uninterrupted)

"""Checkpoints: atomic writes on a full disk, the newest run's last checkpoint, the resume command."""

from __future__ import annotations

import errno
import io
import os
import shlex
from pathlib import Path

import pytest
import torch

from madm_pl.callbacks.checkpoint import AtomicCheckpointIO, newest_last_checkpoint, resume_command


def test_enospc_during_a_checkpoint_write_keeps_the_previous_last_ckpt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = AtomicCheckpointIO()
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    previous = {"state_dict": {"weight": torch.arange(4.0)}, "global_step": 3}
    plugin.save_checkpoint(previous, last)

    real_save = torch.save
    written_to: list[Path] = []

    def disk_full_half_way(obj: object, file: io.BufferedWriter, *args: object, **kwargs: object) -> None:
        # Lightning's TorchCheckpointIO serialises into memory and moves a file from the system's
        # temporary directory: a copy over last.ckpt when that is another file system.
        written_to.append(Path(file.name).parent)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # half the checkpoint reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full_half_way)
    newer = {"state_dict": {"weight": torch.ones(10_000)}, "global_step": 5}
    with pytest.raises(
        OSError, match=r"could not write the checkpoint '.*last\.ckpt' \(No space left"
    ) as caught:
        plugin.save_checkpoint(newer, last)
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert written_to == [last.parent]  # the temporary file is on the checkpoint's own file system
    loaded = torch.load(last, weights_only=True)
    assert loaded["global_step"] == 3
    assert torch.equal(loaded["state_dict"]["weight"], torch.arange(4.0))
    assert os.listdir(last.parent) == ["last.ckpt"]  # no temporary file left
    plugin.save_checkpoint(newer, last)  # space again: replaced
    assert torch.load(last, weights_only=True)["global_step"] == 5


def test_newest_run_is_the_highest_version_with_a_last_checkpoint(tmp_path: Path) -> None:
    assert newest_last_checkpoint(tmp_path / "missing") is None
    for version, has_last in ((0, True), (2, True), (9, True), (10, True), (11, False)):
        folder = tmp_path / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        if has_last:
            (folder / "last.ckpt").write_bytes(b"x")
    (tmp_path / "version_x").mkdir()  # not a run
    assert newest_last_checkpoint(tmp_path) == tmp_path / "version_10" / "checkpoints" / "last.ckpt"


def test_resume_command_replaces_the_checkpoint_and_quotes(tmp_path: Path) -> None:
    args = [
        "fit",
        "-c",
        "configs/demo/rgb2infrared.yaml",
        "--ckpt_path",
        "old.ckpt",
        "--data.init_args.crop_size=[64, 64]",
    ]
    command = resume_command(args, tmp_path / "on exception.ckpt", program="madm-pl")
    assert shlex.split(command) == [
        "madm-pl",
        "fit",
        "-c",
        "configs/demo/rgb2infrared.yaml",
        "--data.init_args.crop_size=[64, 64]",
        f"--ckpt_path={tmp_path / 'on exception.ckpt'}",
    ]

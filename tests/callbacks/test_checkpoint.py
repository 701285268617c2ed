"""Checkpoints: atomic writes on a full disk, the newest run's last checkpoint, the resume command."""

from __future__ import annotations

import errno
import os
import shlex
from pathlib import Path

import pytest
import torch

import madm_pl.data.io as io_module
from madm_pl.callbacks.checkpoint import AtomicCheckpointIO, newest_last_checkpoint, resume_command
from madm_pl.callbacks.checkpoint_file import read_run_state


class FullDisk:
    """A file on a file system with ``free`` bytes left: a write beyond them stores what fits and
    raises ENOSPC, as a full disk does."""

    def __init__(self, path: str, mode: str, free: int) -> None:
        self.path = Path(path)
        self.file = open(path, mode)  # noqa: SIM115 (closed by __exit__)
        self.free = free

    def write(self, data: bytes) -> int:
        if len(data) > self.free:
            self.file.write(bytes(data[: self.free]))
            self.free = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.free -= len(data)
        return self.file.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def test_enospc_during_a_checkpoint_write_keeps_the_previous_last_ckpt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = AtomicCheckpointIO()
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    previous = {"state_dict": {"weight": torch.arange(4.0)}, "global_step": 3}
    plugin.save_checkpoint(previous, last)

    newer = {"state_dict": {"weight": torch.ones(100_000)}, "global_step": 5}
    opened: list[FullDisk] = []

    def full_disk_open(path: str, mode: str = "r") -> FullDisk:
        # half of the new checkpoint fits (Lightning's TorchCheckpointIO would write it in the system's
        # temporary directory and copy it over last.ckpt, truncating it, when that is another disk)
        opened.append(FullDisk(path, mode, free=200_000))
        return opened[-1]

    monkeypatch.setattr(io_module, "open", full_disk_open, raising=False)
    with pytest.raises(
        OSError, match=r"could not write the checkpoint '.*last\.ckpt' \(No space left"
    ) as caught:
        plugin.save_checkpoint(newer, last)
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC  # not torch's "unexpected pos" RuntimeError
    assert [f.path.parent for f in opened] == [last.parent]  # written on the checkpoint's own file system
    assert opened[0].free == 0  # the disk did fill up
    loaded = torch.load(last, weights_only=True)
    assert loaded["global_step"] == 3
    assert torch.equal(loaded["state_dict"]["weight"], torch.arange(4.0))
    assert sorted(os.listdir(last.parent)) == ["last.ckpt", "run_state.json"]  # no temporary file left
    assert read_run_state(last.parent) == {"iteration": 3, "checkpoint": "last.ckpt"}  # the failed write not
    plugin.save_checkpoint(newer, last)  # space again: replaced
    assert torch.load(last, weights_only=True)["global_step"] == 5
    assert read_run_state(last.parent) == {"iteration": 5, "checkpoint": "last.ckpt"}


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

"""Checkpoint files: the weights' SHA-256 at save and load, weights_only loading, one line per bad
file, the run state, stale temporaries (callbacks/checkpoint_file.py and the CLI's checkpoint plugin)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import zipfile
from pathlib import Path

import pytest
import torch

from madm_pl.callbacks.checkpoint import AtomicCheckpointIO
from madm_pl.callbacks.checkpoint_file import (
    WEIGHTS_DIGEST_KEY,
    load_checkpoint_file,
    read_run_state,
    remove_stale_temporaries,
)
from madm_pl.data.io import atomic_write
from tests.malicious import RunsACommand

#: A weight whose bytes are easy to find in the file: 256 float32 of 1.2345.
MARKED = torch.full((256,), 1.2345)


def save(path: Path, **extra: object) -> Path:
    """A small Lightning-like checkpoint written by the CLI's plugin."""
    checkpoint = {
        "state_dict": {"head.weight": MARKED.clone(), "head.bias": torch.arange(3.0)},
        "global_step": 7,
        **extra,
    }
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    return path


def test_the_digest_is_the_sha256_of_each_tensor(tmp_path: Path) -> None:
    path = save(tmp_path / "a.ckpt")
    recorded = torch.load(path, weights_only=True)[WEIGHTS_DIGEST_KEY]
    bias = torch.arange(3.0)
    expected = hashlib.sha256(b"torch.float32(3,)" + bias.numpy().tobytes()).hexdigest()
    assert recorded == {"head.bias": expected, "head.weight": recorded["head.weight"]}
    assert load_checkpoint_file(path)["global_step"] == 7


def test_a_flipped_byte_inside_a_weight_is_named(tmp_path: Path) -> None:
    path = save(tmp_path / "a.ckpt")
    data = bytearray(path.read_bytes())
    at = bytes(data).find(MARKED.numpy().tobytes())
    assert at > 0
    data[at + 100] ^= 0x01  # one bit of one float: torch's zip reader does not notice
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["state_dict"]["head.weight"][25] != 1.2345
    plugin = AtomicCheckpointIO()
    with pytest.raises(ValueError) as caught:
        plugin.load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"the checkpoint '{path}' is damaged: 1 of its weight tensors ('head.weight')")
    assert "use another checkpoint" in message


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pickle_flipped(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for offset in range(start + 10, start + 30):  # inside the pickle of the checkpoint dict
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _random(path: Path) -> None:
    path.write_bytes(os.urandom(5000))


def _not_a_checkpoint(path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, path)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncated, r"it is not a complete torch checkpoint \(truncated"),
        (_pickle_flipped, r"(refused it \(Unsupported .*its contents are damaged|the file is damaged)"),
        (_random, r"it is not a complete torch checkpoint"),
        (_not_a_checkpoint, r"is not a madm-pl checkpoint \(no state_dict; found \['weights'\]\)"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(damage: object, expected: str, tmp_path: Path) -> None:
    path = save(tmp_path / "bad.ckpt")
    damage(path)
    with pytest.raises(ValueError, match=expected) as caught:
        AtomicCheckpointIO().load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and f"'{path}'" in message and len(message) < 500


@pytest.mark.parametrize("how", ["environment", "weights_only=False"])
def test_a_pickled_command_never_runs(how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "global_step": 1, "x": RunsACommand(marker)}, path)
    plugin = AtomicCheckpointIO()
    if how == "environment":
        # torch.load's default turns to weights_only=False with this variable (set for another tool)
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        with pytest.raises(ValueError, match=r"refused it \(Trying to load unsupported GLOBAL posix\.system"):
            plugin.load_checkpoint(path)
    else:  # fit/test/predict --weights_only=false
        with pytest.raises(ValueError, match=r"--weights_only=false is refused for '.*evil\.ckpt'"):
            plugin.load_checkpoint(path, weights_only=False)
    assert not marker.exists()


def test_a_checkpoint_without_digest_loads_with_a_warning(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "global_step": 1}, tmp_path / "old.ckpt")
    with pytest.warns(UserWarning, match=r"records no weights digest .* not verified"):
        assert load_checkpoint_file(tmp_path / "old.ckpt")["global_step"] == 1


def test_every_write_records_the_newest_checkpoint_of_its_folder(tmp_path: Path) -> None:
    assert read_run_state(tmp_path) is None
    save(tmp_path / "iter000007.ckpt")
    assert read_run_state(tmp_path) == {"iteration": 7, "checkpoint": "iter000007.ckpt"}
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}, "global_step": 9}, tmp_path / "last.ckpt")
    assert read_run_state(tmp_path) == {"iteration": 9, "checkpoint": "last.ckpt"}


def test_stale_temporaries_of_checkpoints_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    stale = [tmp_path / ".last.ckpt.k2j4_x9a.tmp", tmp_path / ".iter000400-miou20.61.ckpt.ab12cd34.tmp"]
    for path in stale:
        path.write_bytes(b"")  # a kill -9 during the write
    (tmp_path / ".run_state.json.zz99yy88.tmp").write_bytes(b"")
    kept = [
        tmp_path / "last.ckpt",
        tmp_path / ".config.yaml.ab12cd34.tmp",  # not a file of the checkpoint folder's own
        tmp_path / "notes.ckpt.ab12cd34.tmp",  # not hidden: not atomic_write's
        tmp_path / ".last.ckpt.tmp",
    ]
    for path in kept:
        path.write_bytes(b"x")
    live = tmp_path / ".on_exception.ckpt.qq11ww22.tmp"
    with open(live, "wb") as writing:
        fcntl.flock(writing, fcntl.LOCK_EX)  # another process saving right now
        removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([*stale, tmp_path / ".run_state.json.zz99yy88.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [*kept, live])


def test_atomic_write_locks_its_temporary_file(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "last.ckpt") as file:
        file.write(b"partial")
        (temporary,) = [p for p in tmp_path.iterdir() if p.name.startswith(".last.ckpt.")]
        assert remove_stale_temporaries(tmp_path) == []  # a write in progress is not stale
        assert temporary.exists()
    assert (tmp_path / "last.ckpt").read_bytes() == b"partial"

"""run_folders: the newer runs that stopped before their first last.ckpt are named, newest first."""

from pathlib import Path

from madm_pl.run_folders import interrupted_newer_runs, passed_over_note


def make(root: Path, version: int, *files: str) -> Path:
    folder = root / f"version_{version}" / "checkpoints"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"x")
    return folder


def test_only_newer_runs_with_on_exception_and_no_last_are_named(tmp_path: Path) -> None:
    chosen = make(tmp_path, 3, "last.ckpt") / "last.ckpt"
    make(tmp_path, 2, "on_exception.ckpt")  # older: not passed over
    make(tmp_path, 4, "last.ckpt", "on_exception.ckpt")  # has a last.ckpt (it would have been chosen)
    five = make(tmp_path, 5, "on_exception.ckpt") / "on_exception.ckpt"
    make(tmp_path, 6)  # stopped before any checkpoint: nothing to use
    twelve = make(tmp_path, 12, "on_exception.ckpt") / "on_exception.ckpt"  # 12 > 5, not "12" < "5"
    assert interrupted_newer_runs(chosen) == [twelve, five]
    note = passed_over_note("predict", chosen)
    assert note is not None and note.startswith(
        "madm-pl predict: passed over the newer version_12, version_5:"
    )
    assert f"--ckpt_path={twelve} uses it" in note
    assert passed_over_note("test", make(tmp_path, 20, "last.ckpt") / "last.ckpt") is None
    assert interrupted_newer_runs(tmp_path / "elsewhere" / "last.ckpt") == []

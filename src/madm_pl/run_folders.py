"""The run folders ``validate``/``test``/``predict`` pass over when they pick the newest run's checkpoint.

``callbacks.checkpoint.newest_last_checkpoint`` takes the newest ``version_<n>/`` with a
``checkpoints/last.ckpt``. A newer folder without one was stopped before its first checkpoint; when it
holds ``on_exception.ckpt`` (an error or Ctrl+C during ``fit``), a user who just interrupted a run expects
that one, so the command says which folder it passed over and how to use it.
"""

from __future__ import annotations

import re
from pathlib import Path

_VERSION = re.compile(r"^version_(\d+)$")


def interrupted_newer_runs(checkpoint: str | Path) -> list[Path]:
    """The ``on_exception.ckpt`` of each run newer than the one of ``checkpoint`` that has no ``last.ckpt``.

    Args:
        checkpoint: the chosen ``<runs>/version_<n>/checkpoints/last.ckpt``.

    Returns:
        Those checkpoints, newest first; empty when ``checkpoint`` is not in a ``version_<n>`` folder.
    """
    run = Path(checkpoint).parent.parent
    match = _VERSION.match(run.name)
    if match is None or not run.parent.is_dir():
        return []
    newer = []
    for folder in run.parent.iterdir():
        other = _VERSION.match(folder.name)
        if other is None or int(other.group(1)) <= int(match.group(1)) or not folder.is_dir():
            continue
        on_exception = folder / "checkpoints" / "on_exception.ckpt"
        if on_exception.is_file() and not (folder / "checkpoints" / "last.ckpt").is_file():
            newer.append((int(other.group(1)), on_exception))
    return [path for _, path in sorted(newer, reverse=True)]


def passed_over_note(subcommand: str, checkpoint: str | Path) -> str | None:
    """One line naming the interrupted newer runs ``subcommand`` passed over, or None."""
    skipped = interrupted_newer_runs(checkpoint)
    if not skipped:
        return None
    folders = ", ".join(path.parent.parent.name for path in skipped)
    return (
        f"madm-pl {subcommand}: passed over the newer {folders}: it holds only "
        f"checkpoints/on_exception.ckpt (a fit stopped by an error or Ctrl+C); --ckpt_path={skipped[0]} "
        "uses it, and the resume command that fit printed continues it"
    )

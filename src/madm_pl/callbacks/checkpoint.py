"""Checkpoints that are never lost: atomic writes, a save on an error or Ctrl+C with the command that
resumes, writable folders checked before the first step, guards against non-finite weights, and the
newest run's last checkpoint for ``test``, ``predict`` and the figure.

Where things go: with a logger, each run (``<save_dir>/<name>/version_<n>/``) keeps its checkpoints in
its own ``checkpoints/`` folder (Lightning's default when ``checkpoint.dirpath`` is unset), so a second
``fit`` never mixes its files with the first one's.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from madm_pl.data.io import atomic_write

#: The checkpoint the exception hook writes, in the run's checkpoint folder.
EXCEPTION_CHECKPOINT = "on_exception"


class _WriteErrors:
    """A binary file as ``torch.save`` writes to it, keeping the first ``OSError`` of a write.

    torch's zip writer reports a failed write as a ``RuntimeError`` ("unexpected pos ..."); the kept
    error says what happened (``ENOSPC``: the disk is full), and is what ``save_checkpoint`` raises.
    """

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.file.flush()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a local checkpoint atomically on the checkpoint's own file system (``io.atomic_write``).

    Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lies in
    the system's temporary directory; when that is another file system, moving it into place is a
    copy over the old file, and a full disk leaves a truncated ``last.ckpt``. Here the temporary file is
    a sibling of the checkpoint, so a failed write leaves the previous file as it was. Remote paths
    (``s3://``...) keep Lightning's write. The CLI passes this plugin to every Trainer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Save ``checkpoint`` to ``path``.

        Raises:
            TypeError: ``storage_options`` given (as Lightning's plugin).
            OSError: the write failed (the message names the file); the previous file is unchanged.
        """
        if "://" in str(path) and not str(path).startswith("file://"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"storage_options are not supported by {type(self).__name__}")
        path = Path(str(path).removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_write(path) as file:
                writer = _WriteErrors(file)
                try:
                    torch.save(checkpoint, writer)  # streamed: no second copy of the checkpoint in memory
                except RuntimeError:
                    if writer.error is not None:
                        raise writer.error from None
                    raise
        except OSError as error:
            raise OSError(
                error.errno,
                f"could not write the checkpoint '{path}' ({error.strerror or error}); "
                f"'{path.name}' is left as it was: free space there or set checkpoint.dirpath elsewhere",
            ) from error


class FiniteWeightsGuard(Callback):
    """Raises before a checkpoint with NaN/Inf weights is written.

    Non-finite steps are already skipped by the module; this is the last line of defence, so a bad
    checkpoint never replaces a good one (the write itself is atomic too: the CLI's
    ``AtomicCheckpointIO`` writes a temporary file next to the checkpoint and moves it into place).
    """

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        bad = [
            name
            for name, value in checkpoint["state_dict"].items()
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()
        ]
        if bad:
            raise RuntimeError(
                f"refusing to save a checkpoint at iteration {trainer.global_step}: non-finite weights in "
                f"{bad[:5]}{' ...' if len(bad) > 5 else ''}; the previous checkpoints are left untouched"
            )


def checkpoint_dir(trainer: Trainer) -> Path:
    """The folder ``ModelCheckpoint`` writes to, before its own ``setup`` has resolved it.

    ``checkpoint.dirpath`` when set; else Lightning's rule: ``<save_dir>/<name>/version_<n>/checkpoints``
    of the first logger, or ``<default_root_dir>/checkpoints`` without a logger.
    """
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    if trainer.loggers:
        logger = trainer.loggers[0]
        save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        return Path(save_dir, str(logger.name), version, "checkpoints")
    return Path(trainer.default_root_dir, "checkpoints")


def _unwritable(directory: Path) -> str | None:
    """Why ``directory`` cannot take a new file, or None (it is created when missing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".madm-write-check-", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return error.strerror or str(error)
    return None


class WritableRunFolders(Callback):
    """Checks, before ``fit`` reads any data, that the checkpoint and log folders take new files.

    Without it a read-only or full folder is found at the first checkpoint, after the iterations
    before it. Runs before the config is saved into the log folder (the CLI adds this callback first).
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        problem = None
        if trainer.is_global_zero:
            run_folder = "trainer.logger.init_args.save_dir or trainer.default_root_dir"
            folders = []
            if trainer.loggers and trainer.loggers[0].log_dir is not None:
                folders.append(("log folder", Path(trainer.loggers[0].log_dir), run_folder))
            explicit = trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath
            option = "checkpoint.dirpath" if explicit else f"{run_folder} (or set checkpoint.dirpath)"
            folders.append(("checkpoint folder", checkpoint_dir(trainer), option))
            for what, folder, option in folders:
                reason = _unwritable(folder)
                if reason is not None:
                    problem = f"the {what} '{folder}' is not writable ({reason}): fix {option}"
                    break
        # Every process learns rank 0's verdict, so all stop together instead of waiting for rank 0.
        problem = trainer.strategy.broadcast(problem)
        if problem is not None:
            raise PermissionError(errno.EACCES, problem)


def resume_command(args: Sequence[str], checkpoint: str | Path, program: str | None = None) -> str:
    """The command line that continues a run from ``checkpoint``: the same arguments, ``--ckpt_path``
    replaced.

    Args:
        args: the arguments the run was started with (after the program name).
        checkpoint: the checkpoint to resume from.
        program: the program as typed; None = from ``sys.argv[0]`` (``madm-pl`` when unknown).
    """
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    if program is None:
        started = Path(sys.argv[0])
        if started.name == "__main__.py" and started.parent.name == "madm_pl":
            program = f"{shlex.quote(sys.executable)} -m madm_pl"
        else:
            program = shlex.quote(sys.argv[0]) if started.name in ("madm-pl", "lightning") else "madm-pl"
    return f"{program} {shlex.join([*kept, f'--ckpt_path={checkpoint}'])}"


class CheckpointOnException(Callback):
    """On an error or Ctrl+C during ``fit``, saves ``<checkpoint folder>/on_exception.ckpt`` and prints
    the exact command that resumes from it.

    Nothing is saved before the first optimiser step, nor when the last regular checkpoint is of the
    same iteration (that one is named instead), nor on an error with several processes (saving is
    collective, and an error stops one of them; Ctrl+C stops all and is saved). A checkpoint taken
    in the middle of a step (Ctrl+C can come anywhere) holds the weights of that moment; an
    unreadable file is found while the next batch is read, between steps, and resuming then
    continues the same sample sequence.

    This does what Lightning's ``OnExceptionCheckpoint`` does, without two of its side effects:
    with one present, every ``fit`` without ``--ckpt_path`` silently resumes from the newest
    ``last.ckpt`` or on-exception file (Lightning's fault-tolerant default), and its ``teardown``
    deletes the file after a clean run.

    Args:
        dirpath: where to save; None = the run's checkpoint folder (that of ``checkpoint``).
        filename: file name without ``.ckpt``.

    Attributes:
        args: the command-line arguments of the run, set by the CLI (for the resume command); None
            prints the checkpoint only.
    """

    def __init__(self, dirpath: str | None = None, filename: str = EXCEPTION_CHECKPOINT) -> None:
        if not filename:
            raise ValueError("on_exception.filename must not be empty")
        self.dirpath = dirpath
        self.filename = filename
        self.args: list[str] | None = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.global_step == 0 or trainer.sanity_checking:
            return
        interrupted = isinstance(exception, KeyboardInterrupt)
        what = "interrupted (Ctrl+C)" if interrupted else "stopped by an error"
        if trainer.world_size > 1 and not interrupted:
            # Saving is collective (a barrier), and an error stops one process only: waiting for the
            # others would hang instead of failing.
            rank_zero_warn(
                f"training {what} at iteration {trainer.global_step} in one of {trainer.world_size} "
                "processes: no checkpoint is saved on an error with several processes; resume from the "
                "last regular checkpoint"
            )
            return
        regular = trainer.checkpoint_callback
        if (
            regular is not None
            and getattr(regular, "_last_global_step_saved", None) == trainer.global_step
            and getattr(regular, "last_model_path", "")
        ):
            path = Path(regular.last_model_path)  # already saved at this iteration
        else:
            folder = Path(self.dirpath) if self.dirpath is not None else checkpoint_dir(trainer)
            path = folder / f"{self.filename}.ckpt"
            try:
                trainer.save_checkpoint(path, weights_only=False)  # a full checkpoint, to resume
            except Exception as error:  # a full disk, non-finite weights: report, keep the first error
                rank_zero_warn(
                    f"training {what} at iteration {trainer.global_step}; saving '{path}' failed too "
                    f"({error}); resume from the last regular checkpoint"
                )
                return
        lines = [f"training {what} at iteration {trainer.global_step}; saved {path}"]
        if self.args is not None:
            lines.append(f"resume with:\n  {resume_command(self.args, path)}")
        rank_zero_info("\n".join(lines))


# ----------------------------------------------------------------------------- finding runs
_VERSION = re.compile(r"version_(\d+)$")


def newest_last_checkpoint(run_root: str | Path) -> Path | None:
    """The ``last.ckpt`` of the newest run under ``run_root`` (``<save_dir>/<name>``).

    Runs are ``version_<n>/`` folders; the newest is the highest ``n`` whose ``checkpoints/last.ckpt``
    exists (a run stopped before its first checkpoint is passed over).

    Returns:
        The checkpoint, or None when no run has one.
    """
    root = Path(run_root)
    if not root.is_dir():
        return None
    runs = sorted(
        (int(match.group(1)), path)
        for path in root.iterdir()
        if path.is_dir() and (match := _VERSION.match(path.name))
    )
    for _, run in reversed(runs):
        last = run / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
    return None

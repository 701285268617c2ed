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
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from madm_pl.callbacks.checkpoint_file import (
    RUN_STATE,
    check_weights,
    load_checkpoint_file,
    read_run_state,
    record_run_state,
    remove_stale_temporaries,
    with_weights_digest,
)
from madm_pl.callbacks.interrupts import StopAtIterationBoundary, StoppedAtOnce
from madm_pl.data.io import atomic_write
from madm_pl.lightning_private import overrides_private, save_last_now

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
        """Save ``checkpoint`` to ``path``, with the SHA-256 of its weights (``checkpoint_file``), then
        record it as the newest of its folder (``run_state.json``).

        Raises:
            TypeError: ``storage_options`` given (as Lightning's plugin).
            OSError: the write failed (the message names the file); the previous file is unchanged.
        """
        checkpoint = with_weights_digest(checkpoint)
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
        try:
            record_run_state(path.parent, checkpoint.get("global_step", 0), path)
        except OSError as error:  # the checkpoint itself is safe; only test's staleness check is lost
            rank_zero_warn(f"could not record '{path.name}' in {path.parent / RUN_STATE} ({error})")

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Load a checkpoint with ``torch.load(weights_only=True)`` and verify its weights' SHA-256
        (``checkpoint_file.load_checkpoint_file``).

        Lightning passes ``weights_only`` from ``fit``/``test``/``predict``'s ``--weights_only``, None by
        default, which ``torch.load`` turns into True unless ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set;
        here it is always True.

        Raises:
            ValueError: ``weights_only=False`` asked for, or the file cannot be used (one line naming it).
            FileNotFoundError: no such file.
        """
        if weights_only is False:
            raise ValueError(
                f"--weights_only=false is refused for '{path}': madm-pl loads checkpoints with "
                "torch.load(weights_only=True) only (unpickling objects could run code) and its own "
                "checkpoints need nothing else; drop the option (a reference .pth goes through madm-pl "
                "convert, which has --trust_pickle)"
            )
        if map_location is None:
            map_location = "cpu"  # Lightning's default keeps the storages on the CPU as well
        if "://" in str(path) and not str(path).startswith("file://"):
            checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=True)
            check_weights(checkpoint, path)
            return checkpoint
        return load_checkpoint_file(str(path).removeprefix("file://"), map_location=map_location)


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (the best-mIoU files and ``last.ckpt``, options ``checkpoint.*``)
    whose ``last.ckpt`` always holds the newest state of the run.

    Lightning 2.6 writes ``last`` only together with a top-k file (and at the end only when it never
    wrote one): when a validation does not improve the monitored mIoU, the final one included,
    ``last.ckpt`` stays at an older iteration and the iterations after it are saved nowhere. Here
    ``last.ckpt`` is also written after every validation that wrote no top-k file and at the end of
    training when the last iteration is not saved yet. (With ``save_last: link``, Lightning's link to
    the newest top-k file is kept as it is.)

    Checkpoints keep ``ModelCheckpoint``'s state key, so a run started before this class resumes its
    best-score bookkeeping.
    """

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_if_behind(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_last_if_behind(trainer)

    def _save_last_if_behind(self, trainer: Trainer) -> None:
        # Skipped: no last wanted, not fitting, sanity check, fast_dev_run, or this iteration saved.
        if self.save_last is True:
            save_last_now(self, trainer)

    @overrides_private(Callback)
    def _generate_state_key(self, **kwargs: Any) -> str:
        return f"ModelCheckpoint{kwargs!r}"


class StaleCheckpointWarning(Callback):
    """``validate``/``test``/``predict``: one warning line when the checkpoint they use is older than
    its run's last iteration.

    The run's last iteration is the one of the newest checkpoint written into the checkpoint's folder,
    which ``AtomicCheckpointIO`` records in ``run_state.json`` after every write (hence also at the end
    of ``fit``, which always writes ``last.ckpt``, and after the save of a Ctrl+C or SIGTERM). Iterations
    saved nowhere (a ``kill -9``) are not known to it; they cannot be tested either.
    """

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING or not trainer.ckpt_path:
            return
        path = Path(trainer.ckpt_path)
        state = read_run_state(path.parent)
        iteration = int(checkpoint.get("global_step", 0))
        if state is not None and state["iteration"] > iteration:
            newest = path.parent / state["checkpoint"]
            rank_zero_warn(
                f"'{path}' holds iteration {iteration}, older than its run's last iteration "
                f"{state['iteration']} ({newest}, as recorded in {RUN_STATE}): pass --ckpt_path={newest} "
                "to use that one"
            )


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


def check_given_checkpoint(ckpt_path: str | None) -> None:
    """Check a ``--ckpt_path`` before anything reads it: LightningCLI loads the whole file for its
    hyper-parameters right after parsing, where a truncated, damaged or crafted file would end in a
    traceback. Here it is read with ``weights_only=True``, tensors memory-mapped (cheap); the weights'
    SHA-256 is checked when the Trainer loads it (``AtomicCheckpointIO.load_checkpoint``).

    Raises:
        ValueError: the file cannot be used (one line naming it). A missing file is left to the
            command, which names it with its own fix.
    """
    if ckpt_path and "://" not in str(ckpt_path) and Path(ckpt_path).is_file():
        load_checkpoint_file(ckpt_path, verify=False, mmap=True)


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
    """Checks, before ``fit`` reads any data, that the checkpoint and log folders take new files, and
    removes the temporary files a killed checkpoint write left in the checkpoint folder
    (``checkpoint_file.remove_stale_temporaries``: only ``.<name>.ckpt.<random>.tmp`` and the run
    state's, only there, never one being written).

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
            removed = remove_stale_temporaries(checkpoint_dir(trainer)) if problem is None else []
            if removed:
                rank_zero_info(
                    f"removed {len(removed)} temporary file(s) of a checkpoint write that was killed: "
                    + ", ".join(str(path) for path in removed)
                )
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


class CheckpointOnException(StopAtIterationBoundary):
    """On an error, Ctrl+C or SIGTERM during ``fit``, saves ``<checkpoint folder>/on_exception.ckpt``
    and prints the exact command that resumes from it.

    Ctrl+C and SIGTERM stop at the end of the iteration in progress (``StopAtIterationBoundary``, the
    base class), so the saved state resumes exactly; the process exits with 130 or 143. A second Ctrl+C
    stops at once, inside an iteration: nothing is saved for it (such a state would not resume exactly)
    and the newest checkpoint written is named instead. An unreadable file is found while the next
    batch is read, between steps, and resuming then continues the same sample sequence.

    Nothing is saved before the first optimiser step, nor when a regular checkpoint of the same
    iteration was written (that one is named instead: the file its folder's ``run_state.json`` records,
    so a write that failed on a full disk is never named), nor on an error with several processes
    (saving is collective, and an error stops one of them; a signal stops all and is saved). A path is
    printed only once the file exists.

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
        super().__init__()
        if not filename:
            raise ValueError("on_exception.filename must not be empty")
        self.dirpath = dirpath
        self.filename = filename
        self.args: list[str] | None = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)  # exit code; SLURM's requeue saves its file
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        reason = self.stop_reason(exception)
        what = reason or "stopped by an error"
        if isinstance(exception, KeyboardInterrupt | StoppedAtOnce):
            # Inside an iteration: its half-advanced counters and lost micro-batch gradients would not
            # resume exactly.
            self._report(
                trainer,
                f"training {what} in iteration {trainer.global_step + 1}: nothing saved for it (a "
                "checkpoint inside an iteration would not resume exactly)",
                self._newest_written(trainer),
                "the newest checkpoint",
            )
            return
        if trainer.global_step == 0:
            return
        if trainer.world_size > 1 and reason is None:
            # Saving is collective (a barrier), and an error stops one process only: waiting for the
            # others would hang instead of failing.
            rank_zero_warn(
                f"training {what} at iteration {trainer.global_step} in one of {trainer.world_size} "
                "processes: no checkpoint is saved on an error with several processes; resume from the "
                "last regular checkpoint"
            )
            return
        regular = trainer.checkpoint_callback
        # The same decision on every process (saving is collective): did a regular save run here?
        saved_here = regular is not None and getattr(regular, "_last_global_step_saved", None) == (
            trainer.global_step
        )
        if self.pending == signal.SIGUSR1 or saved_here:
            newest = self._newest_written(trainer)
            path = newest[0] if newest is not None and newest[1] == trainer.global_step else None
        else:
            path = Path(self.dirpath) if self.dirpath is not None else checkpoint_dir(trainer)
            path = path / f"{self.filename}.ckpt"
            try:
                trainer.save_checkpoint(path, weights_only=False)  # a full checkpoint, to resume
            except Exception as error:  # a full disk, non-finite weights: report, keep the first error
                path = None
                what = f"{what}; saving '{self._exception_path(trainer)}' failed too ({error})"
        if path is None or (trainer.is_global_zero and not path.is_file()):
            self._report(
                trainer,
                f"training {what} at iteration {trainer.global_step}; no checkpoint of this iteration was "
                "written",
                self._newest_written(trainer),
                "the newest checkpoint",
                warn=True,
            )
            return
        self._report(
            trainer, f"training {what} at iteration {trainer.global_step}; saved {path}", (path, None)
        )

    def _exception_path(self, trainer: Trainer) -> Path:
        folder = Path(self.dirpath) if self.dirpath is not None else checkpoint_dir(trainer)
        return folder / f"{self.filename}.ckpt"

    def _newest_written(self, trainer: Trainer) -> tuple[Path, int] | None:
        """The newest checkpoint written (and still there) in the checkpoint folder or, after SLURM's
        requeue, in ``default_root_dir`` (Lightning's ``hpc_ckpt_<n>.ckpt``), with its iteration."""
        folders = [checkpoint_dir(trainer)]
        if self.pending == signal.SIGUSR1:
            folders.insert(0, Path(trainer.default_root_dir))
        for folder in folders:
            state = read_run_state(folder)
            if state is not None and (folder / state["checkpoint"]).is_file():
                return folder / state["checkpoint"], state["iteration"]
        return None

    def _report(
        self,
        trainer: Trainer,
        line: str,
        checkpoint: tuple[Path, int | None] | None,
        named: str = "",
        warn: bool = False,
    ) -> None:
        """Print ``line``, then ``named`` checkpoint (when given) and the command resuming from it."""
        lines = [line]
        if checkpoint is not None:
            path, iteration = checkpoint
            if named:
                lines[0] += f"; {named} is {path} (iteration {iteration})"
            if self.args is not None:
                lines.append(f"resume with:\n  {resume_command(self.args, path)}")
        elif named:
            lines[0] += "; no checkpoint was written before: start again"
        (rank_zero_warn if warn else rank_zero_info)("\n".join(lines))


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

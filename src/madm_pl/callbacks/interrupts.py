"""Ctrl+C, SIGTERM and SLURM's requeue signal take effect between two iterations, never inside one.

A checkpoint taken in the middle of an iteration cannot be resumed exactly: the loop's counters are
half advanced and, with accumulated micro-batches, the gradients of the first micro-batch (which no
checkpoint holds) are lost. Lightning stops at a batch boundary on SIGTERM (its loops raise
``SIGTERMException`` at the end of the batch, after the batch-end hooks, the progress counters,
validation and its checkpoints), but a batch is a micro-batch, and Ctrl+C raises ``KeyboardInterrupt``
wherever it lands. ``StopAtIterationBoundary`` takes over the three signals while ``fit`` trains:

- the first Ctrl+C, SIGTERM or SIGUSR1 is noted; when the iteration in progress is complete (the
  batch whose optimiser step ends it), Lightning's SIGTERM flag is set, so its loops stop at the end
  of that batch, after its validation and checkpoints if it has them. The state then saved
  (``CheckpointOnException``) is that of a completed iteration, and the resumed run equals an
  uninterrupted one. A signal that comes during a validation takes effect after the next iteration;
  one that comes in the last iteration of an epoch, after the first iteration of the next epoch (a
  checkpoint of an epoch whose batches are done but which is not closed yet resumes with a batch too
  many); one in the run's last iteration lets the run end normally;
- a second Ctrl+C stops at once (``StoppedAtOnce``) and nothing is saved for the iteration in
  progress; a second SIGTERM changes nothing (a scheduler's SIGKILL follows if it must);
- SIGUSR1, where Lightning's SLURM auto-requeue installed its handler (``SLURMEnvironment``,
  ``sbatch --signal=USR1@90``), runs that handler at the boundary: Lightning saves
  ``<default_root_dir>/hpc_ckpt_<n>.ckpt`` and calls ``scontrol requeue``; the requeued job's ``fit``
  (no ``--ckpt_path``) resumes from that file (Lightning's "hpc" resume).

The process ends with 128 + the signal's number (130 for Ctrl+C, 143 for SIGTERM, 138 for SIGUSR1), as
a shell reports a process killed by it, so that a scheduler reading the exit code sees it.

Single process, or several processes that each receive the signal (a terminal's Ctrl+C, ``scancel``):
Lightning's own logic spreads rank 0's stop to the others; it was not verified here with NCCL.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from madm_pl.lightning_private import stop_after_this_batch

#: The signals taken over during training, and what each asks for (in messages).
_SIGNALS: dict[int, str] = {
    signal.SIGINT: "interrupted (Ctrl+C)",
    signal.SIGTERM: "terminated (SIGTERM)",
    signal.SIGUSR1: "stopped for SLURM's requeue (SIGUSR1)",
}


class StoppedAtOnce(SystemExit):
    """A second Ctrl+C: training stopped in the middle of an iteration, which is not saved.

    A ``SystemExit`` (exit code 130), so that Lightning runs its error path (``on_exception``, teardown)
    and re-raises it, where a ``KeyboardInterrupt`` would end in Lightning's ``sys.exit(1)``.
    """

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGINT)


def exit_code(number: int) -> int:
    """The exit status of a process stopped by signal ``number`` (as a shell reports it)."""
    return 128 + int(number)


class StopAtIterationBoundary(Callback):
    """Makes Ctrl+C, SIGTERM and SLURM's SIGUSR1 stop ``fit`` between two iterations (module docstring).

    Attributes:
        pending: the signal that asked to stop, None while none has.
        stopped_at_once: a second Ctrl+C stopped training in the middle of an iteration.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self.stopped_at_once = False
        self._trainer: Trainer | None = None
        self._replaced: dict[int, Any] = {}  # signal -> the handler before ours (restored at the end)
        self._step_at_batch_start = 0

    # ------------------------------------------------------------------------ the signal handlers
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.pending, self.stopped_at_once, self._trainer = None, False, trainer
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for number in _SIGNALS:
            previous = signal.getsignal(number)
            if number == signal.SIGUSR1 and not callable(previous):
                continue  # no requeue handler (not on SLURM): SIGUSR1 keeps its default
            self._replaced[number] = previous
            signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, frame: FrameType | None) -> None:
        if self.pending is None:
            self.pending = number
            trainer = self._trainer
            if trainer is not None and trainer.is_global_zero:
                # print, not logging: a signal handler may run while the logging lock is held
                again = "; Ctrl+C again stops at once, without saving it" if number == signal.SIGINT else ""
                print(
                    f"{signal.Signals(number).name}: stopping when iteration {trainer.global_step + 1} is "
                    f"complete{again}",
                    file=sys.stderr,
                    flush=True,
                )
            return
        if number == signal.SIGINT and self.pending == signal.SIGINT:
            self.stopped_at_once = True
            raise StoppedAtOnce

    def _restore_handlers(self) -> None:
        for number, previous in self._replaced.items():
            signal.signal(number, previous)
        self._replaced = {}

    # ------------------------------------------------------------------------ the iteration boundary
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # The iteration is complete when its optimiser step ran in this batch, or (a step skipped for a
        # non-finite loss) when this batch is the last micro-batch of the accumulation.
        stepped = trainer.global_step != self._step_at_batch_start
        if self.pending is None or not (stepped or (batch_idx + 1) % trainer.accumulate_grad_batches == 0):
            return
        if 0 < trainer.max_steps <= trainer.global_step:
            return  # the last iteration: training ends normally, last.ckpt holds it
        if trainer.num_training_batches > batch_idx + 1 or trainer.num_training_batches <= (
            trainer.accumulate_grad_batches
        ):
            self._stop(trainer)
            return
        # The epoch's last iteration: a checkpoint of an epoch whose batches are all done but which is
        # not closed yet resumes with one batch too many (Lightning's loops), so the next iteration,
        # inside the next epoch, is the one to stop after.
        if trainer.is_global_zero:
            print(
                f"iteration {trainer.global_step} ended an epoch, whose end a checkpoint does not resume "
                f"exactly: stopping when iteration {trainer.global_step + 1} is complete",
                file=sys.stderr,
                flush=True,
            )

    @staticmethod
    def _stop(trainer: Trainer) -> None:
        stop_after_this_batch(trainer)  # Lightning's SIGTERM flag: SIGTERMException after this batch

    # ------------------------------------------------------------------------ the end
    def stop_reason(self, exception: BaseException) -> str | None:
        """What stopped training, for messages: ``"interrupted (Ctrl+C)"``, ``"terminated (SIGTERM)"``,
        ``"stopped for SLURM's requeue (SIGUSR1)"``, ``"stopped at once (Ctrl+C again)"``, or None for an
        error (any other exception)."""
        if isinstance(exception, StoppedAtOnce | KeyboardInterrupt):
            return "stopped at once (Ctrl+C again)" if self.stopped_at_once else "interrupted (Ctrl+C)"
        if isinstance(exception, SIGTERMException):
            return _SIGNALS[self.pending if self.pending is not None else signal.SIGTERM]
        return None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        requeue = self._replaced.get(signal.SIGUSR1)
        self._restore_handlers()
        if isinstance(exception, SIGTERMException):
            number = self.pending if self.pending is not None else signal.SIGTERM
            exception.code = exit_code(number)  # Lightning re-raises it: the process's exit status
            if number == signal.SIGUSR1 and callable(requeue):
                requeue(signal.SIGUSR1, None)  # Lightning's: hpc checkpoint now, then scontrol requeue

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_handlers()

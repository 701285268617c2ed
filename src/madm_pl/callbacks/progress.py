"""What a run prints: progress in iterations of ``max_steps`` (a bar on a terminal, a line every N
iterations in a log file), a model summary without the FLOPs Lightning cannot count here, and narrow
filters of the libraries' known noise (``quiet_known_noise``).
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_summary import get_human_readable_count

from madm_pl.lightning_private import open_bar, should_redraw


def _format_duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"


def _format_value(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class IterationProgressBar(TQDMProgressBar):
    """Training progress in optimiser steps: ``iteration 180/400``, it/s, time left, the loss.

    On a terminal, one bar spans the whole run (not one per epoch: an epoch is a bookkeeping unit of
    this sampler) and starts at the resumed iteration. When standard output is not a terminal (a log
    file, CI, a cluster job), no bar is drawn; instead a line every ``every_n_steps`` iterations::

        iteration 100/400 | train/loss 1.234 | 2.31 it/s | ETA 0:02:10

    (speed over the iterations since the previous line, including validation time). Validation,
    test and predict keep Lightning's bars on a terminal.

    Args:
        every_n_steps: iterations between two lines when output is not a terminal.
        refresh_rate: iterations between two redraws of the bar.
    """

    def __init__(self, every_n_steps: int = 50, refresh_rate: int = 1) -> None:
        if every_n_steps < 1:
            raise ValueError(f"progress_bar.every_n_steps must be >= 1, got {every_n_steps}")
        super().__init__(refresh_rate=refresh_rate)
        self.every_n_steps = every_n_steps
        self.lines = False
        self._line_step = 0
        self._line_time = 0.0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.lines = not sys.stdout.isatty()
        if self.lines:
            self.disable()  # every tqdm bar; the lines below replace the training one

    def _total(self, trainer: Trainer) -> int | None:
        total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        return int(total) if math.isfinite(total) else None

    def init_train_tqdm(self) -> Any:
        bar = super().init_train_tqdm()
        bar.unit = "it"
        return bar

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=self._total(trainer))
        bar.initial = trainer.global_step  # so that it/s and time left count this run's steps only
        bar.n = trainer.global_step
        bar.set_description("iteration")
        self._line_step, self._line_time = trainer.global_step, time.monotonic()

    def on_train_epoch_start(self, trainer: Trainer, *_: Any) -> None:
        return  # one bar over the run

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        bar = self.train_progress_bar
        if should_redraw(self, step, bar.total) and not bar.disable:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()
        due = step % self.every_n_steps == 0 and step > self._line_step
        if self.lines and due and trainer.is_global_zero:
            print(self.line(trainer, pl_module), flush=True)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def line(self, trainer: Trainer, pl_module: LightningModule) -> str:
        """The progress line of the current iteration (and restart the speed window)."""
        now, step = time.monotonic(), trainer.global_step
        rate = (step - self._line_step) / max(now - self._line_time, 1e-9)
        self._line_step, self._line_time = step, now
        total = self._total(trainer)
        parts = [f"iteration {step}/{total if total is not None else '?'}"]
        metrics = self.get_metrics(trainer, pl_module)
        parts += [f"{key} {_format_value(value)}" for key, value in metrics.items()]
        eta = (total - step) / rate if total is not None and rate > 0 else math.inf
        parts += [f"{rate:.2f} it/s", f"ETA {_format_duration(eta)}"]
        return " | ".join(parts)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Closed here, before IoUTable prints the scores (on_validation_end): a bar left on screen would
        # sit on the table's first line. Closing it again later is a no-op.
        bar = open_bar(self, "val")
        if bar is not None and not trainer.sanity_checking:
            bar.close()
        super().on_validation_epoch_end(trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        bar = open_bar(self, "test")
        if bar is not None:
            bar.close()  # as for validation: before the IoU table
        super().on_test_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the version folder is in the log path; a number here says nothing
        for key, value in metrics.items():
            if key.split("/")[-1].startswith("miou"):
                # the IoU table's two decimals (Lightning's bar would print three of the float32 value)
                metrics[key] = f"{float(value.item() if hasattr(value, 'item') else value):.2f}"
        return metrics


class CompactModelSummary(ModelSummary):
    """Lightning's model summary without the FLOPs column (0 without ``example_input_array``, which
    would cost a full forward pass of the diffusion backbone), and one word on the modules in eval
    mode.

    Frozen parts (the VAE) sit in eval mode on purpose, and Lightning's warning about them is
    filtered (``quiet_known_noise``). What that warning is for is kept: a module in eval mode that
    holds trainable parameters is warned about here, by name.
    """

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainable_in_eval = [
            name
            for name, module in pl_module.named_modules()
            if not module.training and any(p.requires_grad for p in module.parameters(recurse=False))
        ]
        if trainable_in_eval:
            rank_zero_warn(
                f"{len(trainable_in_eval)} modules with trainable parameters are in eval mode at the start "
                f"of training (dropout and normalisation act as in testing): {trainable_in_eval[:5]}"
            )
        super().on_fit_start(trainer, pl_module)

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        widths = [max(len(name), *(len(str(v)) for v in values)) for name, values in columns]
        rows = [" | ".join(f"{name:<{w}}" for (name, _), w in zip(columns, widths, strict=True))]
        rows.append("-" * len(rows[0]))
        for index in range(len(columns[0][1]) if columns else 0):
            rows.append(
                " | ".join(f"{values[index]!s:<{w}}" for (_, values), w in zip(columns, widths, strict=True))
            )
        rows.append("-" * len(rows[0]))
        frozen = total_parameters - trainable_parameters
        rows += [
            f"{get_human_readable_count(trainable_parameters):<10}Trainable params",
            f"{get_human_readable_count(frozen):<10}Non-trainable params",
            f"{get_human_readable_count(total_parameters):<10}Total params",
            f"{model_size:<10,.3f}Total estimated model params size (MB)",
            f"{total_training_modes['train']:<10}Modules in train mode",
            f"{total_training_modes['eval']:<10}Modules in eval mode (frozen parts without trainable "
            "parameters: expected)",
        ]
        logging.getLogger("lightning.pytorch.callbacks.model_summary").info("\n" + "\n".join(rows))


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of the given texts."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


_LIGHTNING_INFO = _DropMessages(
    # Advertisements for cloud services, printed by every Trainer.
    "💡 Tip: For seamless cloud",  # logging (litlogger) and uploads (litmodels)
    # The CLI always adds CompactModelSummary, on purpose.
    "Trainer already configured with model summary callbacks",
    # The normal end of an iteration-based run; printed on the bar's line, it made the bar print twice.
    "`Trainer.fit` stopped: `max_steps=",
)


_PACKAGE = Path(__file__).resolve().parents[1]


def _format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    if Path(filename).resolve().is_relative_to(_PACKAGE):
        return f"madm-pl: warning: {message}\n"  # the message names the file or option; no source line
    return _format_warning.default(message, category, filename, lineno, line)  # type: ignore[attr-defined]


def quiet_known_noise() -> None:
    """Filter the known, uninformative messages of a madm-pl run, each by its exact text.

    - LightningCLI's warning about both ``args`` and ``sys.argv``: ``cli.main`` passes the command
      line as ``args`` on purpose (it strips ``--debug`` and dispatches ``prepare`` first).
    - Lightning's "Found N module(s) in eval mode": the frozen VAE; ``CompactModelSummary`` says so
      and warns about the case the warning exists for (trainable modules in eval mode).
    - The deprecation of ``LeafSpec`` that Lightning 2.6's own ``_pytree`` triggers in torch 2.13.
    - Lightning's litlogger advertisement and its note that a model summary callback is configured.
    - Lightning's "`Trainer.fit` stopped: `max_steps=N` reached.", the normal end of every run here
      (written on the progress bar's line, it made the final bar print twice).
    - ``ModelCheckpoint``'s note, on a resume, that the checkpoint folder changed from one run's
      ``version_<n>/checkpoints`` to another's: a resumed run is a new run folder by design (its
      TensorBoard curves do not overlap the first run's), and the top-k bookkeeping starting afresh
      there is what should happen. A change of any other folder is still reported.

    Other messages are left alone; the causes of the rest are fixed where they arise (``accelerate``
    in ``models.presets``, the resumable loader in ``data.datamodule``, the progress bar and summary
    here). madm-pl's own warnings print as ``madm-pl: warning: <message>``, without a source line.
    """
    if warnings.formatwarning is not _format_warning:
        _format_warning.default = warnings.formatwarning  # type: ignore[attr-defined]
        warnings.formatwarning = _format_warning
    warnings.filterwarnings("ignore", message=re.escape("LightningCLI's args parameter is intended to run"))
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings(
        "ignore",
        message=re.escape("`isinstance(treespec, LeafSpec)` is deprecated"),
        category=FutureWarning,
    )
    warnings.filterwarnings(
        "ignore",
        message=r"The dirpath has changed from '[^']*/version_\d+/checkpoints' to "
        r"'[^']*/version_\d+/checkpoints'",
    )
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _LIGHTNING_INFO not in rank_zero_logger.filters:
        rank_zero_logger.addFilter(_LIGHTNING_INFO)

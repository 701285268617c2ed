"""The TensorBoard logger of the recipes: no epoch curve, hyper-parameters against the target mIoU, a
Custom Scalars layout that puts the numbers that say whether adaptation works side by side, and the
learning rate as one curve.

What a user checks first comes first. TensorBoard's Time Series sorts the cards by tag and opens the
first two groups: ``train/`` (the losses, the pseudo-label weight q, the learning rate) and ``val/``
(``val/miou`` first, with source-only, self-training and oracle drawn in the same card by
``comparison.RecipeComparison``). Per-class IoU (``val_iou/``) and the pictures (``visual_train/``,
``visual_val/``) follow, closed.
"""

from __future__ import annotations

import math
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from madm_pl.callbacks.images import logger_step
from madm_pl.lightning_private import overrides_private, summary_file_writer

#: The metric the HParams tab shows next to each run's hyper-parameters (read from its scalars).
HPARAMS_METRICS = ("val/miou",)

#: TensorBoard's Custom Scalars tab: category -> chart -> ["Multiline", [tag regexes]]. Each chart
#: draws every matching tag in one plot (tags a run did not log are simply absent). The layout holds
#: no colours, legend or axis settings (the proto has titles and regexes only): TensorBoard colours a
#: chart's lines by run and marks the tags of one run with different symbols, listed in the chart's
#: "Matches" list. The mIoU chart comes first and its levels are runs of their own
#: (comparison.RecipeComparison), so they have colours of their own.
SCALAR_LAYOUT = {
    "is adaptation working?": {
        "target mIoU (%): this run and the recipe's source-only, self-training, oracle": [
            "Multiline",
            [r"val/miou$"],
        ],
        "pseudo-label weight q and pseudo-label accuracy": [
            "Multiline",
            ["train/pseudo_label_weight", "train/pseudo_label_accuracy"],
        ],
        "every loss term and the total": ["Multiline", [r"train/loss.*"]],
    },
    "details": {
        "mIoU (%) of the whole split and of the reference protocol": ["Multiline", [r"val/miou.*"]],
        "per-class IoU (%)": ["Multiline", [r"val_iou/.*"]],
        "DPLG timestep of the teacher": ["Multiline", ["train/dplg_timestep"]],
        "learning rate": ["Multiline", [r"train/lr.*"]],
    },
}


def flat_hyperparameters(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyper-parameters as the flat ``{"a/b": value}`` the HParams tab takes.

    Keys starting with ``_`` (LightningCLI's bookkeeping) are dropped; values other than bool, int,
    float and str (None, lists, paths) become their ``str``.
    """
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, dict):
            flat.update(flat_hyperparameters(value, f"{name}/"))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif isinstance(value, torch.Tensor) and value.numel() == 1:
            flat[name] = value.item()
        else:
            flat[name] = str(value)
    return flat


class MADMTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, made quiet for runs measured in iterations.

    * No ``epoch`` curve: Lightning adds the epoch to every ``self.log`` call; the recipes train one
      long epoch (or a fixed number of iterations), so the card would be a flat line.
    * No ``hp_metric`` placeholder (its -1): the hyper-parameters are written with ``val/miou`` as
      their metric, whose values the HParams tab reads from the run's own ``val/miou`` scalars.
    * A Custom Scalars layout (``SCALAR_LAYOUT``) that draws related curves in one chart.
    * The run folder taken atomically: ``version_<n>`` is created with ``mkdir`` (no ``exist_ok``) by
      the process that picks ``n``, the next number tried when another run took it first, so two runs
      started at once never share a folder (Lightning picks the next free number and creates the folder
      later, with ``exist_ok``). An explicit ``version`` is used as given.
    * A log folder that cannot be created (read-only file system, no permission) is one line naming it
      and the option to fix, before anything is written.

    Args:
        save_dir: folder of the runs (``<save_dir>/<name>/version_<n>/``).
        name: experiment name (a sub-folder of ``save_dir``).
        version: run version (default: the next free ``version_<n>``).
        sub_dir: an extra folder under the version folder.
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        sub_dir: str | Path | None = None,
    ) -> None:
        super().__init__(save_dir, name=name, version=version, sub_dir=sub_dir, default_hp_metric=False)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        _ = self.version  # the run folder first: taken atomically, with a one-line error
        return super().experiment

    @overrides_private(TensorBoardLogger)
    def _get_next_version(self) -> int:
        """The next free ``version_<n>`` of ``root_dir``, created here on rank 0 (module docstring).

        Raises:
            OSError: the folder cannot be created (the message names it and the option to fix).
        """
        if rank_zero_only.rank != 0:
            return super()._get_next_version()  # rank 0's number reaches the others by broadcast
        root = Path(self.root_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
            version = super()._get_next_version()
            while True:
                try:
                    (root / f"version_{version}").mkdir()
                    return version
                except FileExistsError:
                    version += 1  # another run took it between the listing and the mkdir
        except OSError as error:
            raise OSError(
                error.errno,
                f"the log folder '{root}' cannot take a new run ({error.strerror or error}): fix "
                "trainer.logger.init_args.save_dir (or trainer.default_root_dir)",
            ) from error

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics({key: value for key, value in metrics.items() if key != "epoch"}, step)

    @rank_zero_only
    def log_hyperparams(
        self,
        params: dict[str, Any] | Namespace,
        metrics: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> None:
        # Stores the parameters for hparams.yaml; writes no summary (default_hp_metric is off).
        super().log_hyperparams(params, metrics, step)
        # torch.utils.tensorboard imports tensorboard (a second of start-up): only when logging.
        from torch.utils.tensorboard.summary import hparams

        writer = summary_file_writer(self.experiment)
        if metrics is None:
            params = vars(params) if isinstance(params, Namespace) else dict(params)
            # The metric values are not written here: only their names, so no fake point at step 0.
            for summary in hparams(flat_hyperparameters(params), dict.fromkeys(HPARAMS_METRICS, 0.0)):
                writer.add_summary(summary)
        self.experiment.add_custom_scalars(SCALAR_LAYOUT)


class LearningRates(Callback):
    """The learning rate as one curve: ``train/lr``, the rate of the optimiser's first parameter group
    (``model.lr`` times the schedule), plus ``train/lr_<group>`` for each group whose rate is another
    multiple of it (the head at ``head_lr_multiplier`` != 1), logged every ``trainer.log_every_n_steps``.

    Every group follows the same schedule, so the distinct rates say everything; one curve per group
    (Lightning's LearningRateMonitor) put five identical cards first in TensorBoard.
    """

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.loggers or not trainer.optimizers or trainer.global_step % trainer.log_every_n_steps:
            return
        metrics = learning_rate_curves(trainer.optimizers[0].param_groups)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=logger_step(trainer))  # beside the iteration's losses


def learning_rate_curves(groups: list[dict[str, Any]]) -> dict[str, float]:
    """``{"train/lr": rate of group 0, "train/lr_<name>": rate of the first group of each other initial
    rate}``: groups are told apart by their rate before the schedule (``initial_lr``), so that the set of
    curves does not change when the schedule reaches 0."""
    curves: dict[str, float] = {}
    seen: list[float] = []
    for index, group in enumerate(groups):
        initial = float(group.get("initial_lr", group["lr"]))
        if any(math.isclose(initial, other, rel_tol=1e-9) for other in seen):
            continue
        seen.append(initial)
        name = "train/lr" if not curves else f"train/lr_{group.get('name', index)}"
        curves[name] = float(group["lr"])
    return curves

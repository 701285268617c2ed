"""The TensorBoard logger of the recipes: no epoch curve, hyper-parameters against the target mIoU, and
a Custom Scalars layout that puts the numbers that say whether adaptation works side by side."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

#: The metric the HParams tab shows next to each run's hyper-parameters (read from its scalars).
HPARAMS_METRICS = ("val/miou",)

#: TensorBoard's Custom Scalars tab: category -> chart -> ["Multiline", [tag regexes]]. Each chart
#: draws every matching tag in one plot (tags a run did not log are simply absent).
SCALAR_LAYOUT = {
    "adaptation": {
        "pseudo-label weight q and pseudo-label accuracy": [
            "Multiline",
            ["train/pseudo_label_weight", "train/pseudo_label_accuracy"],
        ],
        "DPLG timestep of the teacher": ["Multiline", ["train/dplg_timestep"]],
    },
    "losses": {"every loss term and the total": ["Multiline", [r"train/loss.*"]]},
    "learning rate": {"per parameter group": ["Multiline", [r"lr/.*"]]},
    "target (test split)": {
        "mIoU (%)": ["Multiline", [r"val/miou.*"]],  # with the reference protocol's when scored
        "per-class IoU (%)": ["Multiline", [r"val/iou_.*"]],
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

        writer = self.experiment._get_file_writer()
        if metrics is None:
            params = vars(params) if isinstance(params, Namespace) else dict(params)
            # The metric values are not written here: only their names, so no fake point at step 0.
            for summary in hparams(flat_hyperparameters(params), dict.fromkeys(HPARAMS_METRICS, 0.0)):
                writer.add_summary(summary)
        self.experiment.add_custom_scalars(SCALAR_LAYOUT)

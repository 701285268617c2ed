"""Command line: ``madm-pl``, ``python -m madm_pl`` and ``lightning`` (one LightningCLI).

``madm-pl fit -c configs/demo/rgb2infrared.yaml`` trains; ``validate``, ``test`` and ``predict`` take
the same config plus ``--ckpt_path``; ``madm-pl prepare`` checks a data tree and caches the RCS
statistics. lightning 2.6 installs only a ``fabric`` script, so this project
provides the ``lightning`` command users expect (``lightning fit -c ...``).
"""

from __future__ import annotations

import argparse
import sys

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from madm_pl.callbacks import (
    ConfusionMatrixImage,
    FiniteWeightsGuard,
    ImageLogger,
    IoUTable,
    PredictionWriter,
    ValidationImages,
)
from madm_pl.data import CrossModalityDataModule
from madm_pl.module import MADMModule

#: madm-pl's own commands (outside LightningCLI), one line each at the end of ``madm-pl --help``.
OWN_COMMANDS: dict[str, str] = {
    "convert": "turn a released MADM model_RGB2*.pth into a madm-pl checkpoint (madm-pl convert --help)",
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """Lightning's help, with the epilog (the command list) printed as written."""


class MADMCLI(LightningCLI):
    """LightningCLI with the task and class count linked from the data to the model, and the callbacks
    every run needs always present (each configurable under its own key)."""

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        # The top-level help only (the subcommands' parsers keep Lightning's).
        self.parser.formatter_class = _HelpFormatter
        self.parser.epilog = "other commands:\n" + "\n".join(f"  {n:<20}{t}" for n, t in OWN_COMMANDS.items())

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.init_args.task", "model.init_args.task")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/miou",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "iter{step:06d}-miou{val/miou:.2f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(ImageLogger, "image_logger")
        parser.add_lightning_class_args(ValidationImages, "validation_images")
        parser.add_lightning_class_args(ConfusionMatrixImage, "confusion_matrix")
        parser.add_lightning_class_args(IoUTable, "iou_table")
        parser.add_lightning_class_args(FiniteWeightsGuard, "finite_weights_guard")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})


def main(args: list[str] | None = None) -> None:
    """Entry point of ``madm-pl`` and ``python -m madm_pl``.

    Args:
        args: command-line arguments without the program name (``sys.argv[1:]`` when None).
    """
    args = sys.argv[1:] if args is None else args
    if args[:1] == ["prepare"]:
        from madm_pl.prepare import main as prepare_main  # checks real data trees; no model needed

        prepare_main(args[1:])
        return
    if args[:1] == ["convert"]:
        from madm_pl.convert import main as convert_main  # reads a reference checkpoint; no Trainer

        convert_main(args[1:])
        return
    MADMCLI(
        MADMModule,
        CrossModalityDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def lightning_main() -> None:
    """Entry point of the ``lightning`` script: the same CLI (``lightning fit -c configs/...``)."""
    main()

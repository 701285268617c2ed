"""Command line: ``madm-pl``, ``python -m madm_pl`` and ``lightning`` (one LightningCLI).

``madm-pl fit -c configs/demo/rgb2infrared.yaml`` trains; ``validate``, ``test`` and ``predict`` take
the same config and use the newest run's ``last.ckpt`` unless given ``--ckpt_path``; ``madm-pl
prepare`` checks a data tree and caches the RCS statistics. lightning 2.6 installs only a ``fabric``
script, so this project provides the ``lightning`` command users expect (``lightning fit -c ...``).

``madm-pl prepare`` and the benchmarks read a config with the same parser (``ConfigOnlyCLI``,
``parse_config``), so a config and its ``--data.*`` options mean the same everywhere; a task config
includes its profile's base (``config: base.yaml``, its first key).

Options are never abbreviated (``--trainer.max_step`` is an error, not ``max_steps``). The
project's own errors end with one line naming the file or option and the fix (``madm_pl.errors``);
``--debug`` or ``MADM_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from madm_pl.callbacks import (
    ConfusionMatrixImage,
    FiniteWeightsGuard,
    ImageLogger,
    IoUTable,
    PredictionWriter,
    ValidationImages,
)
from madm_pl.callbacks.checkpoint import (
    AtomicCheckpointIO,
    CheckpointOnException,
    RunCheckpoint,
    StaleCheckpointWarning,
    WritableRunFolders,
    check_given_checkpoint,
    newest_last_checkpoint,
)
from madm_pl.callbacks.comparison import RecipeComparison
from madm_pl.callbacks.progress import CompactModelSummary, IterationProgressBar, quiet_known_noise
from madm_pl.callbacks.tensorboard import LearningRates
from madm_pl.cli_errors import FULL_PARSER_MESSAGES, OptionParser, trainer_option_error
from madm_pl.data import CrossModalityDataModule
from madm_pl.errors import OptionError, run_reporting_errors, split_debug
from madm_pl.lightning_private import (
    add_listed_subcommand,
    build_trainer,
    cli_value,
    overrides_private,
    subcommand_parser,
)
from madm_pl.module import MADMModule
from madm_pl.run_folders import passed_over_note

#: Commands with their own options, run before LightningCLI: name -> (module with ``main(args)``, help).
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": (
        "madm_pl.prepare",
        "Check every file training reads (one list of the bad ones), cache the RCS statistics, print "
        "label histograms: madm-pl prepare -c CONFIG.",
    ),
    "convert": (
        "madm_pl.convert",
        "Turn a released MADM model_RGB2*.pth into a madm-pl checkpoint: madm-pl convert --help.",
    ),
}

DESCRIPTION = (
    "MADM modality adaptation for semantic segmentation: fit, then validate/test/predict (the newest "
    "run's last checkpoint unless --ckpt_path); prepare checks the data first. Errors end in one line; "
    "--debug (or MADM_DEBUG=1) shows the traceback."
)

#: Subcommands that evaluate a trained model: the newest run's last checkpoint by default, no log run.
_EVALUATING = ("validate", "test", "predict")


class MADMCLI(LightningCLI):
    """LightningCLI with the task and class count linked from the data to the model, the callbacks
    every run needs always present (each configurable under its own key), and:

    - checkpoints written atomically (``AtomicCheckpointIO``) inside the run's version folder, a
      checkpoint and the resume command on an error or Ctrl+C (``on_exception``), the checkpoint and
      log folders checked before the first step;
    - ``validate``/``test``/``predict``: the newest run's ``last.ckpt`` unless ``--ckpt_path`` is
      given (the one used is printed), and no TensorBoard run or saved config of their own;
    - progress in iterations of ``max_steps`` (``progress_bar``), a summary without FLOPs.

    Args:
        *args, **kwargs: as ``LightningCLI``; ``args`` are kept for the resume command.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.command_args = [str(a) for a in kwargs.get("args") or []]
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.init_args.task", "model.init_args.task")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/miou",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "iter{step:06d}-miou{val/miou:.2f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(CheckpointOnException, "on_exception")
        parser.add_lightning_class_args(ImageLogger, "image_logger")
        parser.add_lightning_class_args(ValidationImages, "validation_images")
        parser.add_lightning_class_args(ConfusionMatrixImage, "confusion_matrix")
        parser.add_lightning_class_args(IoUTable, "iou_table")
        parser.add_lightning_class_args(RecipeComparison, "comparison")  # after the table: its last line
        parser.add_lightning_class_args(FiniteWeightsGuard, "finite_weights_guard")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(LearningRates, "lr_monitor")  # one curve, not one per group
        parser.add_lightning_class_args(IterationProgressBar, "progress_bar")
        parser.add_argument(
            "--threads",
            type=int | None,
            default=None,
            help="torch's intra-op CPU threads (torch.set_num_threads) for this command; null: torch's "
            "default, every core. A config setting, so that fit, validate, test, predict and the printed "
            "resume command all run with it (the demo configs: 1, BENCHMARKS.md 'Threads').",
        )

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if not add_subcommands:
            return
        for subcommand in ("validate", "test"):
            # IoUTable prints the scores as a table of classes; Lightning's metric table would repeat them.
            subcommand_parser(self, subcommand).set_defaults({"verbose": False})
        # Listed so that `madm-pl --help` names them; `main` runs them before this parser is built.
        for name, (_, help_text) in EXTRA_COMMANDS.items():
            add_listed_subcommand(self.parser, name, ArgumentParser(description=help_text), help_text)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand in EXTRA_COMMANDS:
            raise ValueError(
                f"'{subcommand}' takes its own options after it: madm-pl {subcommand} -c CONFIG ..."
            )
        if subcommand in _EVALUATING and self.config[subcommand].get("ckpt_path") is None:
            checkpoint = default_checkpoint(self.config[subcommand])
            rank_zero_info(
                f"madm-pl {subcommand}: {checkpoint} (the newest run's last checkpoint; "
                "--ckpt_path=<file> picks another)"
            )
            self.config[subcommand]["ckpt_path"] = str(checkpoint)
            note = passed_over_note(subcommand, checkpoint)  # a newer run that stopped before last.ckpt
            if note is not None:
                rank_zero_info(note)
        if subcommand in (*_EVALUATING, "fit"):
            check_given_checkpoint(self.config[subcommand].get("ckpt_path"))
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand in _EVALUATING else None
        if ckpt_path and Path(ckpt_path).is_file() and self.config[subcommand].checkpoint.dirpath is None:
            # The checkpoint restores ModelCheckpoint's state, which warns when its folder differs (as
            # it would without a logger): point it at the folder the checkpoint came from.
            self.config[subcommand].checkpoint.dirpath = str(Path(ckpt_path).parent)

    def before_instantiate_classes(self) -> None:
        set_threads(cli_value(self, self.config, "threads"))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = {**cli_value(self, self.config_init, "trainer", default={}), **kwargs}
        callback_keys = subcommand_parser(self, self.subcommand).callback_keys
        callbacks = [cli_value(self, self.config_init, key) for key in callback_keys]
        # Lightning refuses a progress bar or summary callback next to the flag that turns it off.
        if config.get("enable_progress_bar") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        if config.get("enable_model_summary") is not False:
            callbacks.append(CompactModelSummary())
        # Before SaveConfigCallback (appended last), which writes into the log folder.
        callbacks.insert(0, WritableRunFolders())
        callbacks.append(StaleCheckpointWarning())
        for callback in callbacks:
            if isinstance(callback, CheckpointOnException):
                callback.args = self.command_args
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        config["plugins"] = plugins
        if self.subcommand in _EVALUATING:
            config["logger"] = False  # evaluating adds no empty version folder to the runs
            self.save_config_callback = None  # nor a config.yaml next to the training one
        # The Trainer checks some values itself (max_steps=-5): one line naming the option (cli_errors).
        try:
            return build_trainer(self, config, callbacks)
        except MisconfigurationException as error:
            subcommand_args = self.command_args[self.command_args.index(self.subcommand) + 1 :]
            raise trainer_option_error(error, config, subcommand_args) from error


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)``; None leaves torch's default (every core).

    Raises:
        OptionError: ``threads`` < 1.
    """
    if threads is None:
        return
    if threads < 1:
        raise OptionError(f"threads={threads}: give a number of CPU threads >= 1, or null for every core")
    import torch

    torch.set_num_threads(threads)


def _first_logger(logger: Any) -> Any:
    return logger[0] if isinstance(logger, list) and logger else logger


def default_checkpoint(config: Namespace) -> Path:
    """The checkpoint ``validate``/``test``/``predict`` use without ``--ckpt_path``.

    With ``checkpoint.dirpath`` set: its newest ``last*.ckpt``. Otherwise the newest run's
    ``last.ckpt`` under the logger's ``<save_dir>/<name>`` (``version_<n>/checkpoints/``), or
    ``<default_root_dir>/checkpoints/last.ckpt`` without a logger.

    Raises:
        FileNotFoundError: no such checkpoint (train first or pass ``--ckpt_path``).
    """
    root_dir = Path(config.trainer.get("default_root_dir") or ".")
    dirpath = config.get("checkpoint", {}).get("dirpath")
    logger = _first_logger(config.trainer.get("logger"))
    if dirpath:
        candidates = sorted(Path(dirpath).glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
        found, where = (candidates[-1] if candidates else None), f"{dirpath}/last*.ckpt"
    elif logger is False:
        last = root_dir / "checkpoints" / "last.ckpt"
        found, where = (last if last.is_file() else None), str(last)
    else:
        init = logger.get("init_args", Namespace()) if isinstance(logger, Namespace) else Namespace()
        run_root = Path(init.get("save_dir") or root_dir, str(init.get("name") or "lightning_logs"))
        version = init.get("version")
        if version is not None:
            folder = version if isinstance(version, str) else f"version_{version}"
            last = run_root / folder / "checkpoints" / "last.ckpt"
            found, where = (last if last.is_file() else None), str(last)
        else:
            found, where = newest_last_checkpoint(run_root), f"{run_root}/version_*/checkpoints/last.ckpt"
    if found is None:
        raise FileNotFoundError(
            f"no checkpoint to use: nothing matches {where}; train first (madm-pl fit -c <config>) or "
            "pass --ckpt_path=<checkpoint>"
        )
    return found


class ConfigOnlyCLI(MADMCLI):
    """``MADMCLI`` without a command (``run=False``) that parses and stops: ``config`` is what ``madm-pl
    fit`` would instantiate (the same options, composed ``-c`` files, links and checks), and nothing is
    instantiated or seeded. For code that builds only some of the parts: ``madm-pl prepare`` (the
    datamodule) and the benchmarks (their own Trainer).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Nothing is instantiated, so no hyperparameters need the instantiators of checkpoint loading.
        kwargs.setdefault("load_from_checkpoint_support", False)
        kwargs.setdefault("run", False)
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        with warnings.catch_warnings():
            # Lightning warns when args are given and sys.argv has any: here they always are given.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().parse_arguments(parser, args)

    @overrides_private(LightningCLI)
    def _set_seed(self) -> None:
        pass  # seeding is for whoever instantiates the parts

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def cli_options(prog: str = "madm-pl", description: str = DESCRIPTION) -> dict[str, Any]:
    """The keyword arguments every ``MADMCLI`` of this project takes (after the classes)."""
    return {
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "save_config_kwargs": {"overwrite": True},
        "auto_configure_optimizers": False,
        "parser_kwargs": {"allow_abbrev": False, "prog": prog, "description": description},
        "parser_class": OptionParser,  # a bad option: one line with the nearest valid name (cli_errors)
    }


def parse_config(args: list[str]) -> Namespace:
    """The configuration ``madm-pl fit <args>`` runs with, parsed and checked but not instantiated.

    Args:
        args: ``fit``'s options, e.g. ``["-c", "configs/demo/rgb2infrared.yaml", "--data.init_args.seed=1"]``.

    Returns:
        ``trainer``, ``model`` and ``data`` (``class_path`` + ``init_args``), the callbacks' sections, ...

    Raises:
        SystemExit: a bad option or config (jsonargparse's message).
    """
    return ConfigOnlyCLI(MADMModule, CrossModalityDataModule, args=args, **cli_options()).config


def instantiate(section: Namespace, class_: type | None = None, **kwargs: Any) -> Any:
    """The object of a parsed ``class_path`` + ``init_args`` section (``parse_config(...).model``).

    Args:
        section: the parsed section.
        class_: instantiate this class instead of ``class_path`` (a subclass taking the same arguments).
        **kwargs: arguments added to (or replacing) ``init_args``.
    """
    if class_ is None:
        module, _, name = section.class_path.rpartition(".")
        class_ = getattr(importlib.import_module(module), name)
    return class_(**{**section.get("init_args", Namespace()).as_dict(), **kwargs})


def _run(args: list[str], prog: str = "madm-pl") -> None:
    if args[:1] and args[0] in EXTRA_COMMANDS:
        module, _ = EXTRA_COMMANDS[args[0]]
        # No Trainer: prepare checks the data, convert maps a reference checkpoint's weights.
        importlib.import_module(module).main(args[1:])
        return
    MADMCLI(MADMModule, CrossModalityDataModule, args=args, **cli_options(prog))


def main(args: list[str] | None = None, prog: str = "madm-pl") -> None:
    """Entry point of ``madm-pl`` and ``python -m madm_pl``.

    Args:
        args: command-line arguments without the program name (``sys.argv[1:]`` when None);
            ``--debug`` anywhere shows tracebacks (as ``MADM_DEBUG=1``).
        prog: the command's name in usage and error lines.

    Raises:
        SystemExit: a bad command line, or the project's own error (printed as one line).
    """
    args, debug = split_debug(sys.argv[1:] if args is None else args)
    quiet_known_noise()
    FULL_PARSER_MESSAGES.set(debug)  # --debug: jsonargparse's own message and usage
    run_reporting_errors(prog, debug, lambda: _run(args, prog))


def lightning_main() -> None:
    """Entry point of the ``lightning`` script: the same CLI (``lightning fit -c configs/...``)."""
    main(prog="lightning")

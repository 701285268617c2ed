"""One test per private Lightning (and parser) member that ``madm_pl.lightning_private`` wraps: each
fails when a Lightning upgrade drops, renames or changes the member, naming it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from madm_pl.callbacks.checkpoint import RunCheckpoint
from madm_pl.lightning_private import (
    LightningPrivateError,
    add_listed_subcommand,
    batches_that_stepped,
    build_trainer,
    cli_value,
    named_subcommand_parser,
    open_bar,
    overrides_private,
    parser_actions,
    save_last_now,
    should_redraw,
    stop_after_this_batch,
    subcommand_parser,
    summary_file_writer,
)

BARE = {
    "accelerator": "cpu",
    "devices": 1,
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
}


class _ParsedError(Exception):
    def __init__(self, cli: LightningCLI) -> None:
        super().__init__("parsed")
        self.cli = cli


class _ParseOnly(LightningCLI):
    """A real LightningCLI with subcommands, stopped once parsed (nothing instantiated)."""

    def before_instantiate_classes(self) -> None:
        raise _ParsedError(self)


def parsed_cli(args: list[str], cli_class: type[LightningCLI] = _ParseOnly) -> LightningCLI:
    with pytest.raises(_ParsedError) as stopped, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # pytest's own argv
        cli_class(BoringModel, BoringDataModule, args=args)
    return stopped.value.cli


def fit_boring(callbacks: list[Callback], max_steps: int = 3, **trainer: Any) -> Trainer:
    fitted = Trainer(max_steps=max_steps, callbacks=callbacks, **{**BARE, **trainer})
    fitted.fit(BoringModel(), BoringDataModule())
    return fitted


# ------------------------------------------------------------------------------ overridden hooks
def test_an_override_of_a_gone_or_changed_hook_fails_at_import() -> None:
    with pytest.raises(LightningPrivateError, match=r"LightningCLI\._no_such_hook is not in lightning"):

        class Gone(LightningCLI):
            @overrides_private(LightningCLI)
            def _no_such_hook(self) -> None: ...

    with pytest.raises(LightningPrivateError, match=r"_set_seed\(self, seed\).*takes \(self\)"):

        class Changed(LightningCLI):
            @overrides_private(LightningCLI)
            def _set_seed(self, seed: int) -> None: ...


def test_the_set_seed_hook_is_what_lightningcli_seeds_with() -> None:
    # ConfigOnlyCLI overrides it so that parsing a config does not seed the global generators
    calls = []

    class NoSeed(_ParseOnly):
        @overrides_private(LightningCLI)
        def _set_seed(self) -> None:
            calls.append(True)

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    parsed_cli(["fit", "--seed_everything=7"], NoSeed)
    assert calls == [True]
    assert torch.equal(torch.rand(3), expected)  # not reseeded


def test_the_next_version_hook_numbers_the_logger_runs(tmp_path: Path) -> None:
    # MADMTensorBoardLogger overrides it to take its version folder atomically
    class Seven(TensorBoardLogger):
        @overrides_private(TensorBoardLogger)
        def _get_next_version(self) -> int:
            return 7

    assert Seven(tmp_path).version == 7
    assert TensorBoardLogger(tmp_path).version == 0


def test_the_state_key_hook_keeps_model_checkpoints_key() -> None:
    # RunCheckpoint overrides it so that checkpoints of ModelCheckpoint runs resume its bookkeeping
    options = {"monitor": "val/miou", "mode": "max"}
    assert RunCheckpoint(**options).state_key == ModelCheckpoint(**options).state_key
    assert RunCheckpoint(**options).state_key.startswith("ModelCheckpoint{'monitor': 'val/miou'")


# ------------------------------------------------------------------------------ LightningCLI
def test_cli_value_reads_the_subcommands_section() -> None:
    cli = parsed_cli(["fit", "--trainer.max_steps=3"])
    assert cli_value(cli, cli.config, "trainer")["max_steps"] == 3
    assert cli_value(cli, cli.config, "no_such_key", default=5) == 5
    cli.subcommand = None  # as ConfigOnlyCLI (run=False): the top level
    assert cli_value(cli, Namespace(threads=2), "threads") == 2


def test_subcommand_parser_is_the_parser_of_each_subcommand() -> None:
    cli = parsed_cli(["fit"])
    assert subcommand_parser(cli, None) is cli.parser
    fit, validate = subcommand_parser(cli, "fit"), subcommand_parser(cli, "validate")
    assert fit is not cli.parser and fit is not validate
    assert fit.callback_keys == []
    assert "verbose" in validate.get_defaults() and "verbose" not in fit.get_defaults()


def test_build_trainer_adds_the_given_callbacks() -> None:
    cli = parsed_cli(["fit"])
    cli.save_config_callback = None
    extra = Callback()
    trainer = build_trainer(cli, {**BARE, "max_steps": 4, "callbacks": None}, [extra])
    assert isinstance(trainer, Trainer) and trainer.max_steps == 4
    assert extra in trainer.callbacks


# ------------------------------------------------------------------------------ the parser
def test_a_listed_subcommand_shows_in_help_and_is_found_by_name() -> None:
    cli = parsed_cli(["fit"])
    extra = ArgumentParser(description="an extra command")
    add_listed_subcommand(cli.parser, "prepare", extra, "checks the data")
    assert "checks the data" in cli.parser.format_help()
    assert named_subcommand_parser(cli.parser, "prepare") is extra
    assert named_subcommand_parser(cli.parser, "fit") is subcommand_parser(cli, "fit")
    assert named_subcommand_parser(cli.parser, "nope") is None
    assert named_subcommand_parser(ArgumentParser(), "fit") is None  # a parser without subcommands


def test_parser_actions_hold_every_option() -> None:
    cli = parsed_cli(["fit"])
    options = {s for action in parser_actions(subcommand_parser(cli, "fit")) for s in action.option_strings}
    assert {"--trainer.max_steps", "--seed_everything", "--ckpt_path", "--config"} <= options


# ------------------------------------------------------------------------------ the Trainer
def test_stop_after_this_batch_raises_sigterm_at_the_batch_end() -> None:
    class StopAtSecond(Callback):
        def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
            if trainer.global_step == 1:
                stop_after_this_batch(trainer)

    trainer = Trainer(max_steps=5, callbacks=[StopAtSecond()], **BARE)
    with pytest.raises((SIGTERMException, SystemExit)):
        trainer.fit(BoringModel(), BoringDataModule())
    assert trainer.received_sigterm
    assert trainer.global_step == 2  # the batch in flight finished, no later one started


def test_batches_that_stepped_counts_the_optimizer_steps_the_loggers_use() -> None:
    seen = []

    class Record(Callback):
        def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
            seen.append(batches_that_stepped(trainer))

    trainer = fit_boring([Record()], max_steps=3)
    assert seen == [0, 1, 2]
    assert batches_that_stepped(trainer) == 3


# ------------------------------------------------------------------------------ callbacks
def test_should_redraw_follows_the_refresh_rate() -> None:
    bar = TQDMProgressBar(refresh_rate=5)
    assert should_redraw(bar, 10, 100)
    assert not should_redraw(bar, 3, 100)
    assert should_redraw(bar, 3, 3)  # the last one
    bar.disable()
    assert not should_redraw(bar, 10, 100)


def test_open_bar_is_none_before_the_bar_exists() -> None:
    bar = TQDMProgressBar()
    assert open_bar(bar, "val") is None and open_bar(bar, "test") is None
    marker = object()
    bar.val_progress_bar = marker  # the public setter stores what open_bar reads
    bar.test_progress_bar = marker
    assert open_bar(bar, "val") is marker and open_bar(bar, "test") is marker


def test_save_last_now_writes_last_once_per_iteration(tmp_path: Path) -> None:
    written = []
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    last = tmp_path / "last.ckpt"

    class SaveAtSecond(Callback):
        def on_train_batch_end(self, trainer: Trainer, *_: Any) -> None:
            if trainer.global_step == 2:
                save_last_now(checkpoint, trainer)
                written.append(torch.load(last, weights_only=False)["global_step"])
                last.unlink()
                save_last_now(checkpoint, trainer)  # this iteration is saved: skipped
                written.append(last.exists())

    fit_boring([checkpoint, SaveAtSecond()], max_steps=3, enable_checkpointing=True)
    assert written == [2, False]


def test_summary_file_writer_takes_raw_summaries(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import scalar

    experiment = SummaryWriter(tmp_path)
    writer = summary_file_writer(experiment)
    assert writer is experiment.file_writer
    writer.add_summary(scalar("x", 1.0), 0)
    experiment.close()
    assert any(path.name.startswith("events.out.tfevents") for path in tmp_path.iterdir())

"""Every private member of Lightning (and of its parser, jsonargparse/argparse) the project uses, in one
place, so that an upgrade that renames or drops one fails here, loudly, and in its test
(``tests/test_lightning_private.py``, one test per member), not as a silent change of behaviour.

Each function reads or calls one private member and says why no public one does the job. Methods of
Lightning's classes that the project overrides (hooks with a leading underscore) carry
``@overrides_private(Base)``, which checks at import that ``Base`` still has the method with the same
parameters. Nothing of the package is imported here (a leaf below every layer that uses it).

Pinned against lightning 2.6 and jsonargparse 4.x (pyproject.toml).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI

Method = TypeVar("Method", bound=Callable[..., Any])


class LightningPrivateError(RuntimeError):
    """A private member of Lightning the project relies on is gone or changed (a Lightning upgrade)."""


def _missing(owner: str, name: str, why: str) -> LightningPrivateError:
    import lightning

    return LightningPrivateError(
        f"{owner}.{name} is not in lightning {lightning.__version__} ({why}): adapt "
        "src/madm_pl/lightning_private.py to this version, or install the pinned one (pyproject.toml)"
    )


# ------------------------------------------------------------------------------ overridden hooks
def overrides_private(base: type) -> Callable[[Method], Method]:
    """Mark a method that overrides a private hook of ``base``: at import (class creation), fail with
    ``LightningPrivateError`` unless ``base`` has a method of that name with the same parameters, so that
    an override Lightning no longer calls cannot go unnoticed.

    Args:
        base: the Lightning class whose private method is overridden (e.g. ``TensorBoardLogger``).
    """

    def check(method: Method) -> Method:
        inherited = getattr(base, method.__name__, None)
        if not callable(inherited):
            raise _missing(base.__qualname__, method.__name__, "a hook madm-pl overrides")
        ours = list(inspect.signature(method).parameters)
        theirs = list(inspect.signature(inherited).parameters)
        if ours != theirs:
            raise _missing(
                base.__qualname__, f"{method.__name__}({', '.join(ours)})", f"it takes ({', '.join(theirs)})"
            )
        return method

    return check


# ------------------------------------------------------------------------------ LightningCLI
def cli_value(cli: LightningCLI, config: Any, key: str, default: Any = None) -> Any:
    """``config[key]``, inside the running subcommand's section when there is one (``fit.trainer`` or
    ``trainer``): LightningCLI's ``_get``, the one reader of its nested config layout (no public one)."""
    return cli._get(config, key, default)


def subcommand_parser(cli: LightningCLI, subcommand: str | None) -> Any:
    """The parser of ``subcommand`` (the main parser for None): LightningCLI's ``_parser``. Needed for the
    callback sections it holds (``callback_keys``) and to change a subcommand's defaults after
    LightningCLI built it (it has no public accessor)."""
    return cli._parser(subcommand)


def build_trainer(cli: LightningCLI, config: dict[str, Any], callbacks: list[Any]) -> Trainer:
    """LightningCLI's ``_instantiate_trainer``: the Trainer from the ``trainer`` section ``config`` with
    ``callbacks`` and the config-saving callback added as LightningCLI adds them. The public
    ``instantiate_trainer`` reads the callbacks from the config itself, so a CLI that filters or adds
    callbacks (``MADMCLI``) needs the step below it."""
    return cli._instantiate_trainer(config, callbacks)


# ------------------------------------------------------------------------------ the parser
def add_listed_subcommand(parser: Any, name: str, subparser: Any, help_text: str) -> None:
    """Add ``subparser`` as one more subcommand of the parser's subcommands, so that ``--help`` lists it:
    jsonargparse's ``_subcommands_action`` (``add_subcommands`` may be called only once, and LightningCLI
    has called it)."""
    parser._subcommands_action.add_subcommand(name, subparser, help=help_text)


def named_subcommand_parser(parser: Any, name: str) -> Any:
    """The parser of subcommand ``name``, or None (no subcommands, or no such one): the subcommands
    action's ``_name_parser_map`` (argparse), for messages that look up a subcommand's options."""
    action = getattr(parser, "_subcommands_action", None)
    return None if action is None else action._name_parser_map.get(name)


def parser_actions(parser: Any) -> list[Any]:
    """The parser's argument actions, each with its ``option_strings``: argparse's ``_actions`` (it has no
    public list of its options), for the nearest valid option name in a message."""
    return list(parser._actions)


# ------------------------------------------------------------------------------ the Trainer
def stop_after_this_batch(trainer: Trainer) -> None:
    """Set Lightning's SIGTERM flag, what its own SIGTERM handler sets: the loops raise
    ``SIGTERMException`` at the end of the current batch. The Trainer exposes the flag read-only
    (``received_sigterm``); ``trainer.should_stop`` would end the run without the exception the
    checkpoint-on-signal path reacts to."""
    trainer._signal_connector.received_sigterm = True


def batches_that_stepped(trainer: Trainer) -> int:
    """The step Lightning's loggers put on the scalars logged now (``logger_connector.log_metrics`` reads
    the same counter): the fit loop's ``_batches_that_stepped``, which has no public name."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


# ------------------------------------------------------------------------------ callbacks
def should_redraw(bar: TQDMProgressBar, current: int, total: int | None) -> bool:
    """Whether the tqdm bar redraws at ``current`` (every ``refresh_rate``, and at the total):
    ``TQDMProgressBar._should_update``, so that a bar drawn by hand follows Lightning's own rule."""
    return bar._should_update(current, total)


def open_bar(bar: TQDMProgressBar, stage: str) -> Any:
    """The ``"val"`` or ``"test"`` tqdm bar, or None before it exists: ``_val_progress_bar`` /
    ``_test_progress_bar`` (the public properties raise instead of returning None)."""
    return getattr(bar, f"_{stage}_progress_bar")


def save_last_now(checkpoint: ModelCheckpoint, trainer: Trainer) -> None:
    """Write ``last.ckpt`` now, unless ``ModelCheckpoint`` would skip saving at this moment (not fitting,
    sanity check, fast_dev_run, this iteration saved): its ``_should_skip_saving_checkpoint``,
    ``_monitor_candidates`` and ``_save_last_checkpoint``, the path it takes itself (no public one
    writes ``last`` alone)."""
    if not checkpoint._should_skip_saving_checkpoint(trainer):
        checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))


def summary_file_writer(experiment: Any) -> Any:
    """The ``FileWriter`` of a ``torch.utils.tensorboard.SummaryWriter`` (created on first use): its
    ``_get_file_writer``, the way to add a raw summary protobuf (the hparams session summary) that
    ``SummaryWriter`` has no public method for without writing metric values."""
    return experiment._get_file_writer()

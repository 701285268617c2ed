"""What a run prints: iterations of max_steps (bar or lines), the summary, the filtered noise."""

from __future__ import annotations

import logging
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger

from madm_pl.callbacks.progress import CompactModelSummary, IterationProgressBar, quiet_known_noise


class LoggingModel(BoringModel):
    """BoringModel logging its loss to the progress bar, as MADMModule logs train/loss."""

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> dict:
        output = super().training_step(batch, batch_idx)
        self.log("train/loss", output["loss"], prog_bar=True)
        return output


def _fit(
    tmp_path: Path, bar: IterationProgressBar, max_steps: int = 6, ckpt_path: str | None = None
) -> Trainer:
    trainer = Trainer(
        max_steps=max_steps,
        limit_train_batches=4,  # epochs of 4 batches: the bar must not restart with each
        limit_val_batches=0,
        accelerator="cpu",
        logger=CSVLogger(tmp_path),  # a logger gives Lightning's bar its v_num
        callbacks=[bar],
        enable_model_summary=False,
        enable_checkpointing=ckpt_path is None,
        default_root_dir=tmp_path,
    )
    trainer.fit(LoggingModel(), ckpt_path=ckpt_path)
    return trainer


def test_lines_every_n_iterations_when_output_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fit(tmp_path, IterationProgressBar(every_n_steps=3))
    out = capsys.readouterr().out
    lines = re.findall(
        r"^iteration (\d+)/6 \| train/loss (\S+) \| ([\d.]+) it/s \| ETA (\d+:\d\d:\d\d)$", out, re.M
    )
    assert [int(step) for step, *_ in lines] == [3, 6]
    assert all(float(loss) > 0 and float(rate) > 0 for _, loss, rate, _ in lines)
    assert lines[-1][3] == "0:00:00"  # nothing left at the last iteration
    assert "v_num" not in out and "Epoch" not in out  # no bar drawn


def test_one_bar_of_max_steps_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    bar = IterationProgressBar(every_n_steps=3)
    trainer = _fit(tmp_path, bar)
    assert not bar.lines
    tqdm = bar.train_progress_bar
    assert (tqdm.total, tqdm.n) == (6, 6)  # one bar over 2 epochs of 4 batches
    assert tqdm.desc.startswith("iteration")
    assert "train/loss" in tqdm.postfix and "v_num" not in tqdm.postfix
    assert trainer.current_epoch >= 1  # an epoch boundary was crossed
    # a resumed run's bar starts at its iteration, so that it/s and time left count this run only
    resumed = IterationProgressBar()
    _fit(tmp_path / "resumed", resumed, max_steps=8, ckpt_path=str(next(tmp_path.rglob("*.ckpt"))))
    assert (resumed.train_progress_bar.initial, resumed.train_progress_bar.n) == (6, 8)


def test_summary_has_no_flops_and_warns_about_trainable_modules_in_eval_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = LoggingModel()
    model.frozen = torch.nn.Linear(2, 2).requires_grad_(False).eval()  # as the VAE: fine
    caplog.set_level(logging.INFO)
    trainer = Trainer(
        max_steps=1, callbacks=[CompactModelSummary()], logger=False, enable_checkpointing=False
    )
    trainer.fit(model)
    assert "FLOPs" not in caplog.text and "Flops" not in caplog.text
    assert re.search(
        r"^1\s+Modules in eval mode \(frozen parts without trainable parameters", caplog.text, re.M
    )
    model.layer.eval()  # trainable and in eval mode: what Lightning's warning is for
    with pytest.warns(
        UserWarning, match=r"1 modules with trainable parameters are in eval mode.*\['layer'\]"
    ):
        Trainer(max_steps=1, callbacks=[CompactModelSummary()], logger=False, enable_checkpointing=False).fit(
            model
        )


def test_quiet_known_noise_drops_exactly_the_known_messages() -> None:
    quiet_known_noise()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_noise()  # within catch_warnings, which resets the filters on exit
        warnings.warn("Found 651 module(s) in eval mode at the start of training. This may ...", stacklevel=1)
        warnings.warn("LightningCLI's args parameter is intended to run from within Python ...", stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn(
            "The dirpath has changed from '/r/version_0/checkpoints' to '/r/version_1/checkpoints', ...",
            stacklevel=1,
        )
        warnings.warn("The dirpath has changed from '/a/checkpoints' to '/b/checkpoints', ...", stacklevel=1)
        warnings.warn("Found 3 other things", stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "The dirpath has changed from '/a/checkpoints' to '/b/checkpoints', ...",
        "Found 3 other things",
    ]
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    records = [
        logging.LogRecord(logger.name, logging.INFO, __file__, 1, message, None, None)
        for message in ("💡 Tip: For seamless cloud logging, try ...", "GPU available: False, used: False")
    ]
    assert [record.getMessage() for record in records if logger.filter(record)] == [
        "GPU available: False, used: False"
    ]


def test_bar_shows_miou_with_the_tables_two_decimals(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks import TQDMProgressBar

    logged = {"val/miou": torch.tensor(19.69), "train/loss": 1.5, "v_num": 3}  # float32 19.6900005
    monkeypatch.setattr(TQDMProgressBar, "get_metrics", lambda self, trainer, module: dict(logged))
    metrics = IterationProgressBar().get_metrics(None, None)  # type: ignore[arg-type]
    assert metrics == {"val/miou": "19.69", "train/loss": 1.5}  # was 19.690 next to the table's 19.69


def test_validation_and_test_bars_close_before_the_table_is_printed() -> None:
    class Bar:
        closed = False

        def close(self) -> None:
            self.closed = True

    class State:
        sanity_checking = False

    progress = IterationProgressBar()
    progress._val_progress_bar, progress._test_progress_bar = Bar(), Bar()
    progress.on_validation_epoch_end(State(), None)  # type: ignore[arg-type]  (IoUTable prints later)
    progress.on_test_epoch_end(State(), None)  # type: ignore[arg-type]
    assert progress._val_progress_bar.closed and progress._test_progress_bar.closed


def test_the_normal_end_of_a_run_is_not_printed_on_the_bars_line() -> None:
    quiet_known_noise()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    ended = logging.LogRecord(
        logger.name, logging.INFO, "", 0, "`Trainer.fit` stopped: `max_steps=4` reached.", (), None
    )
    other = logging.LogRecord(
        logger.name, logging.INFO, "", 0, "`Trainer.fit` stopped: `max_epochs=1` reached.", (), None
    )
    assert [all(f.filter(r) for f in logger.filters) for r in (ended, other)] == [False, True]

"""``madm_pl.errors``: which errors end in one line, found behind wrappers; --debug and MADM_DEBUG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from madm_pl.data.io import read_label
from madm_pl.errors import own_error_message, run_reporting_errors, split_debug


def _raised(make: object) -> BaseException:
    try:
        make()
    except BaseException as error:  # the test inspects whatever was raised
        return error
    raise AssertionError("nothing raised")


def test_own_errors_are_found_behind_wrappers(tmp_path: Path) -> None:
    own = _raised(lambda: read_label(tmp_path / "missing.png"))
    assert (
        own_error_message(own)
        == f"label file not found: '{tmp_path / 'missing.png'}'; check the data root and file list"
    )

    def wrapped() -> None:  # as jsonargparse wraps an error of a class it instantiates
        try:
            read_label(tmp_path / "missing.png")
        except FileNotFoundError as error:
            raise ValueError("Does not validate against any of the Union subtypes") from error

    assert own_error_message(_raised(wrapped)).startswith("label file not found")


def test_library_errors_and_bugs_keep_their_traceback() -> None:
    assert own_error_message(_raised(lambda: np.zeros(2) + np.zeros(3))) is None  # numpy's ValueError
    assert own_error_message(_raised(lambda: {}["key"])) is None


def test_an_error_from_a_dataloader_worker_is_found_in_its_text() -> None:
    import madm_pl.data.io as io_module

    text = (
        "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "/venv/torch/utils/data/_utils/worker.py", line 349, in _worker_loop\n'
        "    data = fetcher.fetch(index)\n"
        f'  File "{io_module.__file__}", line 170, in _open\n'
        "    raise ValueError(\n"
        "ValueError: cannot read image '/d/x.png' (truncated); the file is corrupt: replace it\n"
    )
    message = own_error_message(ValueError(text))
    assert message == "cannot read image '/d/x.png' (truncated); the file is corrupt: replace it"
    foreign = text.replace(io_module.__file__, "/venv/numpy/core/numeric.py")
    assert own_error_message(ValueError(foreign)) is None


def test_one_line_unless_debug(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    def fail() -> None:
        read_label(tmp_path / "x.png")

    with pytest.raises(SystemExit) as caught:
        run_reporting_errors("madm-pl", debug=False, run=fail)
    assert caught.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1]
        == f"madm-pl: error: label file not found: '{tmp_path / 'x.png'}'; check the data root and file list"
    )
    assert "--debug or MADM_DEBUG=1" in err[0]
    with pytest.raises(FileNotFoundError):
        run_reporting_errors("madm-pl", debug=True, run=fail)
    monkeypatch.delenv("MADM_DEBUG", raising=False)
    assert split_debug(["fit", "--debug", "-c", "x.yaml"]) == (["fit", "-c", "x.yaml"], True)
    assert split_debug(["fit"]) == (["fit"], False)
    monkeypatch.setenv("MADM_DEBUG", "1")
    assert split_debug(["fit"]) == (["fit"], True)
    monkeypatch.setenv("MADM_DEBUG", "0")
    assert split_debug(["fit"]) == (["fit"], False)

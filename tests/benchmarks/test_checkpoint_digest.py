"""The digest benchmark runs and its figures are consistent (a small size)."""

import pytest

from benchmarks import checkpoint_digest


def test_figures(capsys: pytest.CaptureFixture[str]) -> None:
    figures = checkpoint_digest.main(["--gib", "0.01", "--repeats", "1"])
    assert all(value > 0 for value in figures.values())
    assert figures["sd14_s"] == pytest.approx(3.4 / figures["rate_gb_s"])
    assert "SD v1-4's 3.4 GB at that rate" in capsys.readouterr().out

"""benchmarks/tensorboard_screenshot.sh refuses to start a training it could not photograph."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tensorboard_screenshot.sh"


def test_screenshot_script_names_the_missing_browser(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PATH": "/usr/bin:/bin", "CHROMIUM": "no-such-browser", "OUT": str(tmp_path / "x.png")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no 'no-such-browser': apt-get install -y chromium" in result.stdout
    assert not (tmp_path / "x.png").exists()

"""A pickled object that runs a command when unpickled, for the tests of every checkpoint load path."""

from __future__ import annotations

import os
from pathlib import Path


class RunsACommand:
    """Unpickling it creates ``marker`` (as a crafted checkpoint would run any command): ``torch.save``
    stores it as a call of ``os.system``, which only ``torch.load(weights_only=False)`` makes."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch '{self.marker}'",))

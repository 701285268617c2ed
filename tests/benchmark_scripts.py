"""Loading a script of benchmarks/ in a test, with the imports it has when run as a script."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> dict:
    """The globals of ``benchmarks/<name>`` (its ``main`` not run).

    ``python benchmarks/<name>`` puts ``benchmarks/`` first on ``sys.path``, where the scripts find
    ``common``; ``runpy.run_path`` does not, so it is added for the load.
    """
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return runpy.run_path(str(BENCHMARKS / name))
    finally:
        sys.path.remove(str(BENCHMARKS))

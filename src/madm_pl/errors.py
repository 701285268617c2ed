"""One clear last line for the project's own errors; the traceback only when asked for.

The project's own errors are the ``ValueError``s and ``OSError``s (``FileNotFoundError``,
``PermissionError``...) that madm-pl raises itself, by the house rule naming the file or option and
the fix: a config value, a data layout, a bad file, a backbone folder without ``unet/``. LightningCLI
and jsonargparse wrap such an error raised while building the model or data in their own (``Does not
validate against any of the Union subtypes ... Given value: Namespace(...)``), and a DataLoader
worker re-raises it with the worker's traceback in the text; the original is found in either case.
Any other exception (a bug, a library's own failure) keeps its full traceback.

``--debug`` on the command line or ``MADM_DEBUG=1`` in the environment shows the traceback of every
error.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

#: The environment variable that asks for tracebacks.
DEBUG_ENV = "MADM_DEBUG"
DEBUG_FLAG = "--debug"

_PACKAGE = Path(__file__).resolve().parent
_OWN_TYPES = (ValueError, OSError)
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+', re.M)
_ERROR_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*): (?P<message>.*)", re.M | re.S)

T = TypeVar("T")


class OptionError(ValueError):
    """A bad option value, named with where it was given and the fix (``cli_errors``): printed as one line,
    without the traceback hint (there is nothing in it for the user), exit code 2 as argparse's errors."""


def split_debug(args: Sequence[str]) -> tuple[list[str], bool]:
    """``args`` without ``--debug``, and whether tracebacks were asked for (flag or environment)."""
    args = list(args)
    flag = DEBUG_FLAG in args
    wanted = flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return [arg for arg in args if arg != DEBUG_FLAG], wanted


def _raised_here(error: BaseException) -> bool:
    """Whether ``error`` was raised by a frame of madm-pl itself (the innermost frame)."""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return Path(traceback.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def _worker_message(error: BaseException) -> str | None:
    """The original message of a madm-pl error re-raised from a DataLoader worker, or None.

    torch re-raises it in the main process as ``"Caught <type> in DataLoader worker process <n>.
    Original Traceback ...: <frames> <type>: <message>"``; the error is ours when the last frame is.
    """
    text = str(error)
    marker = "Original Traceback (most recent call last):"
    if "DataLoader worker process" not in text or marker not in text:
        return None
    tail = text.split(marker, 1)[1]
    frames = list(_FRAME.finditer(tail))
    if not frames or not Path(frames[-1]["file"]).resolve().is_relative_to(_PACKAGE):
        return None
    line = _ERROR_LINE.search(tail, frames[-1].end())
    return None if line is None else line["message"].strip()


def own_error_message(error: BaseException) -> str | None:
    """The message of the project's own error behind ``error`` (itself or one it wraps), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _OWN_TYPES):
            if _raised_here(current):
                # An OSError built with (errno, text) prints "[Errno n] text"; the text is the message.
                return current.strerror if isinstance(current, OSError) and current.strerror else str(current)
            message = _worker_message(current)
            if message is not None:
                return message
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def run_reporting_errors(program: str, debug: bool, run: Callable[[], T]) -> T:
    """Run ``run()``; the project's own errors end the process with one line on standard error.

    Args:
        program: the command's name, the start of the line (``madm-pl``).
        debug: re-raise every error with its traceback.
        run: the command.

    Raises:
        SystemExit: code 1 after the project's own error (printed as ``<program>: error: <message>``), code
            2 after an ``OptionError``.
    """
    try:
        return run()
    except Exception as error:
        message = None if debug else own_error_message(error)
        if message is None:
            raise
        sys.stdout.flush()
        if isinstance(error, OptionError):
            print(f"{program}: error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        print(f"({program}: {DEBUG_FLAG} or {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        print(f"{program}: error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None

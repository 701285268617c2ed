"""Checkpoint files that say what they hold: the weights' SHA-256 written at save and checked at every
load, ``torch.load(weights_only=True)`` only, one line naming the file for any file that cannot be used,
the run's state beside its checkpoints, and stale temporary files of a killed write removed.

- **Weights digest.** Every checkpoint madm-pl writes (``AtomicCheckpointIO``, ``madm-pl convert``)
  holds ``madm_pl_weights_sha256``: per ``state_dict`` tensor, the SHA-256 of its dtype, shape and
  bytes. ``load_checkpoint_file`` recomputes them and names the tensors that differ, so a bit flipped
  inside a weight (which torch's zip reader does not notice) stops the run instead of scoring a
  damaged model. The tensors are hashed in threads (``hashlib`` releases the GIL), one tensor each.
- **No code from a file.** Loading always passes ``weights_only=True`` explicitly, which
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` does not override; a pickled object is refused with one line.
- **Run state.** ``run_state.json`` in a checkpoint folder records the newest checkpoint written there
  and its iteration (``record_run_state``, after every completed write), so ``test``/``predict`` can
  say that the checkpoint they use is older than its run's last one without opening every file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from madm_pl.data.io import atomic_write

try:
    import fcntl
except ImportError:  # Windows: no way to tell a live write, no cleanup
    fcntl = None  # type: ignore[assignment]

#: The checkpoint entry holding ``{tensor name: SHA-256 hex}`` of its ``state_dict``.
WEIGHTS_DIGEST_KEY = "madm_pl_weights_sha256"

#: The file, in a checkpoint folder, that names the newest checkpoint written there.
RUN_STATE = "run_state.json"

#: The temporary files ``io.atomic_write`` leaves when its process is killed while writing a file of a
#: checkpoint folder: ``.<name>.<8 random characters>.tmp`` with ``<name>`` a ``.ckpt`` or the run state.
_TEMPORARY = re.compile(rf"^\.(?:.+\.ckpt|{re.escape(RUN_STATE)})\.[a-z0-9_]{{8}}\.tmp$")

_THREADS = min(8, os.cpu_count() or 1)
_USE_ANOTHER = "use another checkpoint (the run's other .ckpt files) or train again"


# ------------------------------------------------------------------------------------ the digest
def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 hex of a tensor's dtype, shape and bytes (any device, layout or dtype, bf16 included)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    if flat.numel():
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


def weights_digests(state_dict: Mapping[str, Any]) -> dict[str, str]:
    """``{name: tensor_digest}`` of every tensor of ``state_dict`` (other entries are left out)."""
    names = [name for name, value in state_dict.items() if isinstance(value, torch.Tensor)]
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        return dict(zip(names, pool.map(lambda name: tensor_digest(state_dict[name]), names), strict=True))


def with_weights_digest(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` with ``WEIGHTS_DIGEST_KEY`` of its ``state_dict`` added (a shallow copy; a dict
    without ``state_dict`` is returned as it is)."""
    if not isinstance(checkpoint.get("state_dict"), Mapping):
        return checkpoint
    return {**checkpoint, WEIGHTS_DIGEST_KEY: weights_digests(checkpoint["state_dict"])}


def _changed_weights(checkpoint: Mapping[str, Any]) -> list[str] | None:
    """Names of the tensors whose digest differs from the recorded one (missing and added tensors
    too), or None when the checkpoint records no digest."""
    recorded = checkpoint.get(WEIGHTS_DIGEST_KEY)
    if not isinstance(recorded, Mapping):
        return None
    now = weights_digests(checkpoint.get("state_dict") or {})
    return sorted(name for name in set(recorded) | set(now) if recorded.get(name) != now.get(name))


# ----------------------------------------------------------------------------------- loading
def weights_only_refusal(error: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only refusal that says what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line.rstrip(".")
    return lines[0] if lines else type(error).__name__


def load_checkpoint_file(
    path: str | os.PathLike, map_location: Any = "cpu", verify: bool = True, mmap: bool = False
) -> dict[str, Any]:
    """Load a madm-pl (Lightning) checkpoint safely and check its weights.

    ``torch.load(weights_only=True)``: tensors, dicts, lists, numbers and strings only, never a pickled
    object (whose unpickling could run code). The weights are checked against the SHA-256 recorded at
    save (``WEIGHTS_DIGEST_KEY``); a checkpoint without one (written before madm-pl recorded it, or by
    another tool) loads with a warning.

    Args:
        path: the checkpoint file.
        map_location: as ``torch.load`` (Lightning passes a function keeping the CPU storages).
        verify: check the weights against the recorded SHA-256 (False: only read the file).
        mmap: map the tensors instead of reading them (cheap: for the entries other than the weights).

    Returns:
        The checkpoint dict (``state_dict``, ``global_step``, ...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, damaged or not a checkpoint, holds pickled objects, or its
            weights differ from those saved; one line naming the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint '{path}' does not exist: pass --ckpt_path=<an existing .ckpt file> (madm-pl fit "
            "writes them to <run>/checkpoints/)"
        )
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        # torch.save has written zip files since torch 1.6: anything else is cut short or not a checkpoint.
        raise ValueError(
            f"cannot read the checkpoint '{path}' ({size} bytes): it is not a complete torch checkpoint "
            f"(truncated, e.g. by a copy or a full disk, or another kind of file); {_USE_ANOTHER}"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        reason = weights_only_refusal(error)
        what = (
            "it holds pickled Python objects, which madm-pl never loads (unpickling them could run code)"
            if "GLOBAL" in reason
            else "its contents are damaged"
        )
        raise ValueError(
            f"cannot read the checkpoint '{path}': torch.load(weights_only=True) refused it ({reason}): "
            f"{what}; {_USE_ANOTHER} (a released reference .pth goes through madm-pl convert)"
        ) from None
    except Exception as error:  # torch's zip reader and unpickler fail in many ways on a damaged file
        first = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(
            f"cannot read the checkpoint '{path}' ({type(error).__name__}: {first[:160]}): the file is "
            f"damaged; {_USE_ANOTHER}"
        ) from None
    if verify:
        check_weights(checkpoint, path)
    elif not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        check_weights(checkpoint, path)  # raises: not a checkpoint
    return checkpoint


def check_weights(checkpoint: Any, path: str | os.PathLike) -> None:
    """Check that a loaded ``checkpoint`` is a checkpoint whose weights are those saved (the SHA-256
    recorded at save); without a recorded digest, warn that they are not verified.

    Raises:
        ValueError: not a checkpoint, or weights that differ (one line naming ``path``).
    """
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        found = (
            sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        )
        raise ValueError(
            f"'{path}' is not a madm-pl checkpoint (no state_dict; found {found}): pass a checkpoint written "
            "by madm-pl fit, or turn a reference .pth into one with madm-pl convert"
        )
    changed = _changed_weights(checkpoint)
    if changed is None:
        rank_zero_warn(
            f"checkpoint '{path}' records no weights digest (written before madm-pl recorded one, or by "
            "another tool): its weights are not verified"
        )
    elif changed:
        shown = ", ".join(repr(name) for name in changed[:3]) + (" ..." if len(changed) > 3 else "")
        raise ValueError(
            f"the checkpoint '{path}' is damaged: {len(changed)} of its weight tensors ({shown}) differ from "
            f"the SHA-256 recorded when it was saved; {_USE_ANOTHER}"
        )


# ------------------------------------------------------------------------------- the run state
def record_run_state(folder: str | os.PathLike, iteration: int, checkpoint: str | os.PathLike) -> None:
    """Write ``<folder>/run_state.json``: the newest checkpoint written in ``folder`` and its iteration
    (atomically; called after every completed checkpoint write, so also at the end of ``fit``, which
    always writes ``last.ckpt``, and after a save on Ctrl+C or SIGTERM)."""
    state = {"iteration": int(iteration), "checkpoint": Path(checkpoint).name}
    with atomic_write(Path(folder) / RUN_STATE) as file:
        file.write((json.dumps(state) + "\n").encode())


def read_run_state(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The run state of a checkpoint folder (``{"iteration": int, "checkpoint": file name}``), or None
    when there is none or it cannot be read (the check it serves is advisory)."""
    try:
        state = json.loads((Path(folder) / RUN_STATE).read_text())
        return {"iteration": int(state["iteration"]), "checkpoint": str(state["checkpoint"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------ stale temporaries
def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed checkpoint write left in ``folder`` (only there, only
    ``.<name>.ckpt.<random>.tmp`` and ``.run_state.json.<random>.tmp``).

    A write in progress (another process saving into the same folder) holds an exclusive ``flock`` on
    its temporary file (``io.atomic_write``); such a file is left alone. The lock goes with the process,
    so a file of a killed writer is free and removed.

    Returns:
        The files removed.
    """
    removed: list[Path] = []
    if fcntl is None:
        return removed
    with contextlib.suppress(OSError):
        candidates = [entry for entry in Path(folder).iterdir() if _TEMPORARY.match(entry.name)]
        for candidate in candidates:
            try:
                with open(candidate, "rb") as file:
                    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live write
                    candidate.unlink()
                removed.append(candidate)
            except OSError:
                continue
    return removed

"""Reading images and label maps from disk with errors that name the file (METHOD.md §1), and the
project's one atomic file writer and one atomic folder writer.

Both readers use Pillow, as the reference does, so that palette ("P" mode) label PNGs give their
indices and not their colours.

Images with more than 8 bits per pixel (a thermal or depth camera's 16-bit PNG, a 32-bit integer or
float TIFF) are mapped to [0,1] by an ``ImageScaling`` rule, a fixed raw range or per-image
percentiles (``data.image_range`` / ``data.image_percentiles`` of the datamodule), then stored at
8 bits like every other image: the pipeline after the reader is one for all images.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Pillow modes of single-channel images with more than 8 bits per pixel.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


# ----------------------------------------------------------------------------------------- writing
def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once at import: setting the umask to read it is process-wide, and a thread creating a file in
# that instant (TensorBoard's writer) would get the wrong permissions.
_UMASK = _read_umask()
_NEW_FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file; mkstemp alone gives 0600
_NEW_FOLDER_MODE = 0o777 & ~_UMASK  # what mkdir gives a new folder; mkdtemp alone gives 0700


def _lock(handle: int) -> None:
    """An exclusive ``flock`` on an open file (none where ``fcntl`` does not exist)."""
    if fcntl is not None:
        with contextlib.suppress(OSError):  # a file system without locks: nothing to tell a cleanup
            fcntl.flock(handle, fcntl.LOCK_EX)


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """Open ``path`` for writing (binary) so that it is replaced only by a complete file.

    The data go to a temporary file in the same directory, hence on the same file system, which is
    flushed and fsynced, then moved onto ``path`` with ``os.replace`` (atomic on POSIX and Windows).
    Should the write fail (a full disk, an interrupt), the temporary file is removed and a previous
    ``path`` is left exactly as it was. A move from another file system (the system's temporary
    directory) would be a copy over the old file, which a full disk truncates. The temporary file
    (``.<name>.<random>.tmp``) is ``flock``-ed while it is written, so a cleanup can tell a live write
    from the leftover of a killed one.

    Args:
        path: the file to write; its directory must exist.

    Yields:
        The open temporary file.

    Raises:
        OSError: the directory is not writable or the write failed; ``path`` is unchanged then.
    """
    path = Path(path)
    mode = path.stat().st_mode & 0o7777 if path.exists() else _NEW_FILE_MODE
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # Held until the file is in place: it tells a cleanup of stale temporaries (left by a killed
        # writer, whose lock went with it) that this one is being written.
        _lock(handle)
        try:
            with open(temporary, "wb") as file:  # reopened by name, so that the open file names it
                yield file
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    finally:
        os.close(handle)
    # Persist the rename itself; some file systems refuse fsync on a directory, and the rename is
    # atomic either way.
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Write a folder so that ``path`` is only ever absent, the previous folder, or the complete new one.

    The block writes into a temporary sibling folder (same parent, hence the same file system), which
    is renamed to ``path`` once the block ends without error; a previous folder at ``path`` is moved
    aside at that moment only and then removed. Should the block raise (an error, an interrupt), the
    temporary folder is removed and a previous ``path`` is left exactly as it was.

    Args:
        path: the folder to write; its parent is created if missing.

    Yields:
        The empty temporary folder to write into, with the permissions of a new folder (umask applied,
        or those of the previous folder).

    Raises:
        OSError: the parent is not writable or the rename failed; ``path`` is unchanged then.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.is_dir() else _NEW_FOLDER_MODE
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    aside = None  # a temporary sibling holding the previous folder while the new one moves in
    try:
        yield staging
        staging.chmod(mode)
        if path.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            path.rename(aside / path.name)
        try:
            staging.rename(path)
        except BaseException:
            if aside is not None:
                (aside / path.name).rename(path)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None:
            with contextlib.suppress(OSError):  # empty once the previous folder is back; never its data
                aside.rmdir()
        raise
    if aside is not None:
        shutil.rmtree(aside)


# ----------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class ImageScaling:
    """How an image with more than 8 bits per pixel becomes [0,1]; 8-bit images are divided by 255.

    Exactly one rule applies:

    - ``fixed=(low, high)``: raw value ``low`` maps to 0 and ``high`` to 1, linearly, clipped (e.g.
      ``(7000, 9000)`` for a thermal camera's useful band). Without either option a 16-bit image
      takes its full range ``(0, 65535)``; 32-bit integer and float images have no full range and
      need a rule.
    - ``percentiles=(p_low, p_high)``: per image, its ``p_low``-th percentile maps to 0 and its
      ``p_high``-th to 1, clipped (e.g. ``(1, 99)``); a constant image maps to 0.

    The result is rounded to 8 bits, as every image is stored after reading.

    Args:
        fixed: ``(low, high)`` raw values, ``low < high`` (``data.image_range``).
        percentiles: ``(p_low, p_high)`` with ``0 <= p_low < p_high <= 100``
            (``data.image_percentiles``).

    Raises:
        ValueError: both given, or a range that is not increasing.
    """

    fixed: tuple[float, float] | None = None
    percentiles: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.fixed is not None and self.percentiles is not None:
            raise ValueError(
                f"data.image_range={list(self.fixed)} and data.image_percentiles={list(self.percentiles)} "
                "are two rules for the same images: set one of them"
            )
        if self.fixed is not None and (len(self.fixed) != 2 or not self.fixed[0] < self.fixed[1]):
            raise ValueError(f"data.image_range must be [low, high] with low < high, got {self.fixed!r}")
        if self.percentiles is not None and (
            len(self.percentiles) != 2 or not 0 <= self.percentiles[0] < self.percentiles[1] <= 100
        ):
            raise ValueError(
                "data.image_percentiles must be [p_low, p_high] with 0 <= p_low < p_high <= 100, "
                f"got {self.percentiles!r}"
            )

    def to_unit(self, values: np.ndarray, bits: int | None, path: str | Path) -> np.ndarray:
        """Map raw values to [0,1].

        Args:
            values: (H,W) or (H,W,C) raw values of one image.
            bits: 16 for a 16-bit image, None for 32-bit integer or float pixels (no full range).
            path: the file, named in errors.

        Returns:
            float32 in [0,1], the shape of ``values``.
        """
        values = values.astype(np.float32)
        if self.percentiles is not None:
            low, high = (float(v) for v in np.percentile(values, self.percentiles))
            if high <= low:
                return np.zeros_like(values)
        elif self.fixed is not None:
            low, high = self.fixed
        elif bits is not None:
            low, high = 0.0, float(2**bits - 1)
        else:
            raise ValueError(
                f"image '{path}' has 32-bit pixels, which have no full range to map to [0,1]: set "
                "data.image_range=[low, high] (raw values) or data.image_percentiles=[1, 99] (per image)"
            )
        return np.clip((values - low) / (high - low), 0.0, 1.0)


def _open(path: str | Path, what: str) -> tuple[Image.Image, bool]:
    """The decoded image, and whether it is a 16-bit-per-channel colour PNG or TIFF, which Pillow
    decodes at 8 bits (its raw mode says so before ``load``, which forgets it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: '{path}'; check the data root and file list")
    try:
        with Image.open(path) as image:
            sixteen = image.format in ("PNG", "TIFF") and any(
                str(tile.args).startswith(("RGB;16", "RGBA;16", "RGBX;16")) for tile in image.tile
            )
            image.load()  # decodes now, so that a broken file fails here; the data outlive the handle
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(
            f"cannot read {what} '{path}' ({error}); the file is corrupt or not an image: "
            "replace or remove it"
        ) from error
    return image, sixteen


def _to_8_bit(unit: np.ndarray) -> np.ndarray:
    return np.round(unit * 255.0).astype(np.uint8)


def read_image(path: str | Path, scaling: ImageScaling | None = None) -> np.ndarray:
    """Read an image as 8-bit RGB.

    Single-channel images are repeated to 3 channels; an alpha channel is dropped; palette, CMYK and
    other 8-bit modes are converted to RGB (METHOD.md §1). Images with more than 8 bits per pixel
    (16-bit grey or colour PNGs, 32-bit integer or float TIFFs) are mapped to [0,1] by ``scaling``
    (see ``ImageScaling``) and rounded to 8 bits.

    Args:
        path: image file.
        scaling: the rule for more than 8 bits; None = ``ImageScaling()`` (16-bit: full range).

    Returns:
        (H,W,3) uint8 in [0,255].

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded, or has 32-bit pixels and no rule.
    """
    scaling = ImageScaling() if scaling is None else scaling
    image, sixteen = _open(path, "image")
    if image.mode in _WIDE_MODES:
        values = np.asarray(image)
        gray = _to_8_bit(scaling.to_unit(values, 16 if image.mode.startswith("I;16") else None, path))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if sixteen and image.mode in ("RGB", "RGBA"):
        # cv2 keeps the 16 bits Pillow drops; BGR(A) to RGB, alpha dropped. Imported here, for the
        # rare file that needs it: every command imports this module.
        import cv2

        values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if values is None or values.dtype != np.uint16:
            raise ValueError(f"cannot read the 16-bit colour image '{path}'; replace or remove it")
        rgb = np.ascontiguousarray(values[:, :, 2::-1])
        return _to_8_bit(scaling.to_unit(rgb, 16, path))
    if image.mode in ("L", "LA", "1"):
        gray = np.asarray(image.convert("L"))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")  # RGBA drops alpha; P, CMYK, YCbCr become RGB
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def read_label(path: str | Path) -> np.ndarray:
    """Read a label map: the stored ids, channel 0 of a multi-channel file.

    Args:
        path: label PNG.

    Returns:
        (H,W) uint8 raw ids as stored in the file (palette images give their indices).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded, is a 1-bit image, or holds ids above 255.
    """
    image, _ = _open(path, "label")
    if image.mode == "1":
        raise ValueError(
            f"label '{path}' is a 1-bit (black-and-white) image, i.e. a mask of 0 and 1, not a map of "
            "class ids: save it as an 8-bit PNG (mode L or P) whose pixel values are the dataset's ids"
        )
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[:, :, 0]
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer) or (
            array.size and (array.min() < 0 or array.max() > 255)
        ):
            raise ValueError(
                f"label '{path}' holds {array.dtype} values outside [0, 255]; labels must be 8-bit ids"
            )
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array)

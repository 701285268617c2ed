"""Reading images and label maps from disk, with errors that name the file (SPEC section 1).

Both readers use Pillow, as the reference does, so that palette ("P" mode) label PNGs give their
indices and not their colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _open(path: str | Path, what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: '{path}'; check the data root and file list")
    try:
        with Image.open(path) as image:
            image.load()  # decodes now, so that a broken file fails here; the data outlive the handle
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(
            f"cannot read {what} '{path}' ({error}); the file is corrupt or not an image: "
            "replace or remove it"
        ) from error
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read an 8-bit image as RGB.

    Single-channel images are repeated to 3 channels; an alpha channel is dropped; palette, CMYK and
    other 8-bit modes are converted to RGB (SPEC section 1).

    Args:
        path: image file.

    Returns:
        (H,W,3) uint8 in [0,255].

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded, or is not 8-bit (e.g. a 16-bit PNG).
    """
    image = _open(path, "image")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise ValueError(
            f"image '{path}' has {image.mode} pixels; madm-pl reads 8-bit images only: convert it to 8-bit"
        )
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
        ValueError: the file cannot be decoded or holds ids above 255.
    """
    image = _open(path, "label")
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

"""``data/io.py``: the readers (modes, palettes, bad files named), the atomic file and folder
writers, 16-bit images mapped to [0,1] by a rule, 1-bit labels named."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from madm_pl.data.io import ImageScaling, atomic_folder, atomic_write, read_image, read_label
from tests.fake_trees import write_png

# A 16-bit fixture with known values (2x3).
RAW = np.array([[0, 1000, 2000], [3000, 65535, 1500]], dtype=np.uint16)


def _expected(unit: np.ndarray) -> np.ndarray:
    """(2,3) values in [0,1] as read_image returns them: 8-bit, grey repeated to 3 channels."""
    return np.repeat(np.round(unit * 255).astype(np.uint8)[:, :, None], 3, axis=2)


@pytest.fixture
def sixteen_bit(tmp_path: Path) -> Path:
    path = tmp_path / "thermal.png"
    Image.fromarray(RAW).save(path)
    assert Image.open(path).mode == "I;16"
    return path


def test_16_bit_full_range_by_default(sixteen_bit: Path) -> None:
    np.testing.assert_array_equal(read_image(sixteen_bit), _expected(RAW / 65535))


def test_16_bit_fixed_range(sixteen_bit: Path) -> None:
    # 1000 -> 0, 3000 -> 1, clipped: [[0, 0, .5], [1, 1, .25]]
    unit = np.array([[0, 0, 0.5], [1, 1, 0.25]])
    np.testing.assert_array_equal(read_image(sixteen_bit, ImageScaling(fixed=(1000, 3000))), _expected(unit))


def test_16_bit_percentiles_per_image(sixteen_bit: Path) -> None:
    # sorted values 0, 1000, 1500, 2000, 3000, 65535: the 0th percentile is 0, the 80th 3000
    unit = np.clip(RAW / 3000, 0, 1)
    scaling = ImageScaling(percentiles=(0, 80))
    np.testing.assert_array_equal(read_image(sixteen_bit, scaling), _expected(unit))
    constant = sixteen_bit.with_name("constant.png")
    Image.fromarray(np.full((2, 3), 777, np.uint16)).save(constant)
    assert (read_image(constant, scaling) == 0).all()  # a constant image maps to 0


def test_16_bit_colour_png_keeps_its_16_bits(tmp_path: Path) -> None:
    rgb = np.stack([RAW, RAW // 2, np.full_like(RAW, 3000)], axis=2)
    cv2.imwrite(str(tmp_path / "colour.png"), rgb[:, :, ::-1])  # cv2 writes BGR
    out = read_image(tmp_path / "colour.png", ImageScaling(fixed=(1000, 3000)))
    expected = np.round(np.clip((rgb.astype(np.float32) - 1000) / 2000, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)  # Pillow alone would give the top 8 bits


def test_32_bit_images_need_a_rule(tmp_path: Path) -> None:
    path = tmp_path / "depth.tif"
    Image.fromarray(np.array([[0.5, 2.0], [4.0, 8.0]], dtype=np.float32)).save(path)
    with pytest.raises(ValueError, match=r"depth\.tif' has 32-bit pixels.*data\.image_range=\[low, high\]"):
        read_image(path)
    np.testing.assert_array_equal(
        read_image(path, ImageScaling(fixed=(0, 4))), _expected(np.array([[0.125, 0.5], [1, 1]]))
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fixed": (0, 10), "percentiles": (1, 99)}, r"two rules for the same images: set one of them"),
        ({"fixed": (10, 10)}, r"data\.image_range must be \[low, high\] with low < high"),
        ({"percentiles": (5, 101)}, r"data\.image_percentiles must be \[p_low, p_high\]"),
    ],
)
def test_scaling_rejects_bad_rules(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageScaling(**options)


def test_1_bit_label_is_named_for_what_it_is(tmp_path: Path) -> None:
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "mask.png")
    with pytest.raises(
        ValueError, match=r"mask\.png' is a 1-bit \(black-and-white\) image.*save it as an 8-bit"
    ):
        read_label(tmp_path / "mask.png")


# ------------------------------------------------------------------------------------ readers
def test_read_image_modes(tmp_path: Path) -> None:
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = read_image(write_png(tmp_path / "l.png", gray))
    assert out.shape == (2, 3, 3)
    assert out.dtype == np.uint8
    assert (out == gray[:, :, None]).all()  # repeated to 3 channels
    rgba = np.dstack([np.full((2, 3), v, np.uint8) for v in (10, 20, 30, 40)])
    assert read_image(write_png(tmp_path / "rgba.png", rgba))[0, 0].tolist() == [10, 20, 30]  # alpha dropped
    la = Image.fromarray(gray).convert("LA")
    la.save(tmp_path / "la.png")
    assert (read_image(tmp_path / "la.png") == gray[:, :, None]).all()
    Image.fromarray(np.full((2, 3), 1000, np.uint16)).save(tmp_path / "deep.png")
    assert (read_image(tmp_path / "deep.png") == 4).all()  # 16-bit, full range: round(1000 / 65535 * 255)


def test_read_label_palette_and_channels(tmp_path: Path) -> None:
    indices = np.array([[0, 3], [14, 255]], dtype=np.uint8)
    palette = Image.frombytes("P", (2, 2), indices.tobytes())
    palette.putpalette([v % 256 for v in range(768)])
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label(tmp_path / "p.png"), indices)  # indices, not colours
    rgb = np.dstack([indices, indices + 1, indices])
    np.testing.assert_array_equal(read_label(write_png(tmp_path / "rgb.png", rgb)), indices)  # channel 0


def test_readers_name_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"image file not found: '.*missing\.png'"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read label '.*broken\.png'.*corrupt"):
        read_label(tmp_path / "broken.png")


# ---------------------------------------------------------------------------------- atomic_write
def test_atomic_write_replaces_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"previous")
    target.chmod(0o640)
    with pytest.raises(OSError, match="No space left") as caught, atomic_write(target) as file:
        file.write(b"part of the new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["data.bin"]  # the temporary file is gone
    with atomic_write(target) as file:
        file.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a replaced file keeps its permissions
    with atomic_write(tmp_path / "fresh.bin") as file:
        file.write(b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "fresh.bin").stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


# --------------------------------------------------------------------------------- atomic_folder
def test_atomic_folder_keeps_the_previous_folder_on_error(tmp_path: Path) -> None:
    out = tmp_path / "world"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    with pytest.raises(KeyboardInterrupt), atomic_folder(out) as staging:
        assert staging.parent == tmp_path and staging != out and not any(staging.iterdir())
        (staging / "new.txt").write_text("half")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["world"]  # no temporary folder left
    assert os.listdir(out) == ["old.txt"] and (out / "old.txt").read_text() == "previous"


def test_atomic_folder_replaces_only_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "world"
    with atomic_folder(out) as staging:
        (staging / "a.txt").write_text("first")
        assert not out.exists()  # nothing at the destination while the block runs
    assert os.listdir(out) == ["a.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700
    out.chmod(0o750)
    with atomic_folder(out) as staging:
        (staging / "b.txt").write_text("second")
        assert (out / "a.txt").read_text() == "first"  # the previous folder stays until the block ends
    assert os.listdir(out) == ["b.txt"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # a replaced folder keeps its permissions
    assert os.listdir(out.parent) == ["world"]  # neither the temporary nor the previous folder is left

"""Rare class sampling (RCS) of the source images, as in DAFormer (METHOD.md §2).

Statistics: for every source label file, the pixel count of each Cityscapes train id 0..18 present
(ignore 255 not counted), in the 19-class space as stored (NOT remapped to the task's classes), on
the full-resolution label files. madm-pl computes them itself and caches them in
``<source_root>/madm_rcs_stats.json``.

Sampling one source crop: draw a class c with P = softmax((1 - freq) / T) over the classes present
in the source set (freq = class pixels / all counted pixels); draw uniformly one image among those
with more than ``min_pixels`` pixels of c; crop it; redraw the crop (up to 10 times) until it holds
more than ``min_crop_ratio * min_pixels`` pixels of c.

Pixel units, as in the reference: ``min_pixels`` (3000) is compared with counts on the stored,
full-resolution labels (1024x2048 for Cityscapes), while the crop test counts pixels of the crop of
the *resized* label (a 512x512 crop of the 512x1024 image), in the 19-class ids, against
``min_crop_ratio * min_pixels`` (1500). A threshold tuned for one resolution must be rescaled by
hand for another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from madm_pl.data.io import atomic_write, read_label
from madm_pl.labels import IGNORE_INDEX

log = logging.getLogger(__name__)

CACHE_NAME = "madm_rcs_stats.json"
CACHE_VERSION = 2  # 2: the ids of every label checked while counting (checked_source_label)
NUM_SOURCE_CLASSES = 19  # Cityscapes train ids 0..18
MAX_CROP_REDRAWS = 10

ClassCounts = dict[int, int]


def rcs_class_probabilities(counts: Mapping[int, int], temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of RCS: P = softmax((1 - freq) / T) over the classes present.

    Args:
        counts: pixel count per class over the whole source set; classes with count 0 are dropped.
        temperature: T > 0 (0.01 in the paper); smaller puts more mass on rare classes.

    Returns:
        classes: (K,) int64 class ids, sorted by ascending count (ties by id), as the reference.
        probs: (K,) float64 probabilities in [0,1] summing to 1, aligned with ``classes``.

    Raises:
        ValueError: no class has a positive count, or ``temperature <= 0``.
    """
    if temperature <= 0:
        raise ValueError(f"RCS temperature must be > 0, got {temperature}")
    present = sorted(((int(c), int(n)) for c, n in counts.items() if n > 0), key=lambda cn: (cn[1], cn[0]))
    if not present:
        raise ValueError("RCS found no labelled pixel in the source labels (all 255?)")
    classes = np.array([c for c, _ in present], dtype=np.int64)
    freq = np.array([n for _, n in present], dtype=np.float64)
    freq /= freq.sum()
    logits = (1.0 - freq) / temperature
    probs = np.exp(logits - logits.max())
    return classes, probs / probs.sum()


def checked_source_label(path: Path) -> np.ndarray:
    """Read one source label and check its ids: Cityscapes train ids ``0..18`` or ``255`` (ignored).

    The statistics pass reads every source label once, before training: an id outside the set (a
    ``*_labelIds.png`` with the 34 Cityscapes ids instead of ``*_labelTrainIds.png``, a damaged file)
    stops here, not when the image is drawn for a batch thousands of iterations later.

    Args:
        path: a label PNG of Cityscapes train ids.

    Returns:
        (H,W) uint8 ids.

    Raises:
        ValueError: an id outside ``0..18`` and ``255``; one line naming the file, the ids and the fix.
    """
    label = read_label(path)
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = [int(i) for i in present if NUM_SOURCE_CLASSES <= i < IGNORE_INDEX]
    if bad:
        raise ValueError(
            f"source label '{path}' holds id(s) {bad}, which are not Cityscapes train ids (0..18, 255 = "
            "ignore): fix or replace the file (gtFine/*_labelTrainIds.png holds train ids; *_labelIds.png "
            "holds the 34 original ids and cannot be used as it is)"
        )
    return label


def count_classes(label: np.ndarray, num_classes: int = NUM_SOURCE_CLASSES) -> ClassCounts:
    """Pixels of each class id in ``[0, num_classes)`` present in one label (others not counted).

    Args:
        label: (H,W) uint8 ids.
        num_classes: ids ``0..num_classes-1`` are counted.

    Returns:
        {class id: pixel count} for the classes with at least one pixel.
    """
    bins = np.bincount(label.ravel(), minlength=256)[:num_classes]
    return {int(c): int(bins[c]) for c in np.flatnonzero(bins)}


def _cache_key(root: Path, label_paths: Sequence[Path]) -> str:
    entries = sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in label_paths)
    payload = json.dumps({"version": CACHE_VERSION, "files": entries}, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def load_or_compute_class_counts(
    root: str | Path, label_paths: Sequence[Path], cache_name: str = CACHE_NAME
) -> list[ClassCounts]:
    """Per-image class pixel counts of the source labels, read from or written to a JSON cache.

    The cache ``<root>/<cache_name>`` holds the counts keyed by relative label path and a key, the
    SHA-256 of the sorted (relative path, file size) pairs: a different file list or a changed file
    size recomputes it. It is written atomically (``io.atomic_write``); when
    ``root`` is read-only the counts are computed in memory with a warning. Each label's ids are
    checked while it is counted (``checked_source_label``), so a cache holds only checked labels.

    Args:
        root: source data root; label paths are stored relative to it.
        label_paths: label files under ``root`` (stored 19-class train ids).
        cache_name: file name of the cache inside ``root``.

    Returns:
        One {class id: pixels} per entry of ``label_paths``, in that order.

    Raises:
        ValueError: a label holds an id that is not a Cityscapes train id (names the file).
    """
    root = Path(root)
    label_paths = [Path(p) for p in label_paths]
    key = _cache_key(root, label_paths)
    cache = root / cache_name
    relative = [p.relative_to(root).as_posix() for p in label_paths]
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())
        except (OSError, ValueError):
            stored = {}
        if stored.get("key") == key:
            counts = stored["counts"]
            return [{int(c): int(n) for c, n in counts[r].items()} for r in relative]
        log.info("RCS statistics in %s are for another file list; recomputing", cache)
    log.info("computing RCS class statistics of %d source labels", len(label_paths))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        per_image = list(pool.map(lambda p: count_classes(checked_source_label(p)), label_paths))
    content = {
        "version": CACHE_VERSION,
        "key": key,
        "note": "madm-pl rare class sampling: pixels per Cityscapes train id (0..18) per label file",
        "counts": {r: {str(c): n for c, n in counts.items()} for r, counts in zip(relative, per_image)},
    }
    try:
        with atomic_write(cache) as file:
            file.write(json.dumps(content).encode())
    except OSError as error:
        warnings.warn(
            f"could not write the RCS cache {cache} ({error}); statistics are recomputed at every run",
            stacklevel=2,
        )
    return per_image


class RareClassSampler:
    """Draws (class, source image) pairs for RCS (METHOD.md §2).

    Args:
        image_counts: per source image, {class id: pixels} on the full-resolution label.
        temperature: softmax temperature T (0.01).
        min_pixels: an image is a candidate for class c when it has more than this many pixels of c.

    Attributes:
        classes: (K,) class ids that can be drawn.
        probs: (K,) their probabilities.
        candidates: class id -> (N_c,) int64 indices of the candidate images, ascending.

    Classes present in the set but without any candidate image (the reference would stop with an
    assertion) are left out, with a warning, and the remaining probabilities renormalised.
    """

    def __init__(
        self, image_counts: Sequence[Mapping[int, int]], temperature: float, min_pixels: int
    ) -> None:
        totals: dict[int, int] = {}
        for counts in image_counts:
            for c, n in counts.items():
                totals[int(c)] = totals.get(int(c), 0) + int(n)
        classes, probs = rcs_class_probabilities(totals, temperature)
        candidates = {
            int(c): np.array(
                [i for i, counts in enumerate(image_counts) if counts.get(int(c), 0) > min_pixels]
            )
            for c in classes
        }
        empty = [int(c) for c in classes if len(candidates[int(c)]) == 0]
        if len(empty) == len(classes):
            raise ValueError(
                f"RCS: no source image has more than data.rcs_min_pixels={min_pixels} pixels of any class; "
                "lower data.rcs_min_pixels (it counts full-resolution label pixels) or set data.rcs=false"
            )
        if empty:
            warnings.warn(
                f"RCS: classes {empty} have no source image with more than rcs_min_pixels={min_pixels} "
                "pixels and are never drawn; lower data.rcs_min_pixels to include them",
                stacklevel=2,
            )
        keep = np.array([int(c) not in empty for c in classes])
        self.classes = classes[keep]
        self.probs = probs[keep] / probs[keep].sum()
        self.candidates = {int(c): candidates[int(c)].astype(np.int64) for c in self.classes}

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        """Draw a class, then one of its candidate images.

        Args:
            rng: the generator of this sample.

        Returns:
            (class id, source image index).
        """
        c = int(rng.choice(self.classes, p=self.probs))
        image = int(rng.choice(self.candidates[c]))
        return c, image


def crop_with_class(
    draw_crop: Callable[[], tuple[np.ndarray, np.ndarray]],
    class_id: int,
    min_pixels: int,
    min_crop_ratio: float,
    max_redraws: int = MAX_CROP_REDRAWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw crops until one holds more than ``min_crop_ratio * min_pixels`` pixels of ``class_id``.

    As the reference: the first crop is tested, then up to ``max_redraws`` new crops are drawn, each
    tested but the last, which is returned as it is. ``min_crop_ratio <= 0`` keeps the first crop.

    Args:
        draw_crop: returns a new random (image, label) crop; label (h,w) in the 19-class ids.
        class_id: the class drawn by RCS.
        min_pixels: the RCS threshold (full-resolution pixels).
        min_crop_ratio: fraction of ``min_pixels`` the crop must exceed.
        max_redraws: most new crops drawn.

    Returns:
        The accepted (or last) crop, as returned by ``draw_crop``.
    """
    image, label = draw_crop()
    if min_crop_ratio <= 0:
        return image, label
    threshold = min_pixels * min_crop_ratio
    for _ in range(max_redraws):
        if np.count_nonzero(label == class_id) > threshold:
            break
        image, label = draw_crop()
    return image, label

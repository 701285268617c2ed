"""Writing the synthetic world in the real datasets' layouts: ``generate`` and its command ``main``
(console script ``madm-pl-data``, also ``python -m madm_pl.synthetic``).

``generate`` / ``main`` write the scenes in the folder layouts and label id spaces of the real datasets
(METHOD.md §1), so the real loaders read them. Every scene is labelled, the target-train scenes too
(real FMB, DELIVER and DSEC ship train labels), so that an oracle can train on target labels; adaptation
ignores them:

- ``cityscapes/leftImg8bit/train/<city>/<city>_<seq>_000019_leftImg8bit.png`` and
  ``cityscapes/gtFine/train/<city>/<city>_<seq>_000019_gtFine_labelTrainIds.png`` (19 train ids);
- ``deliver/depth/<cond>/{train,test}/MAP_<k>_point<m>/<id>_depth_front.png`` and
  ``deliver/semantic/<cond>/{train,test}/MAP_<k>_point<m>/<id>_semantic_front.png`` (R = DELIVER id + 1,
  G = B = 0; void as "other"); the condition cycles over the five with the scene index and only names the
  folder: depth does not see weather;
- ``fmb/{train,test}/Infrared/<5 digits>.png`` and ``fmb/{train,test}/Label/<5 digits>.png`` (FMB ids
  0..14; wall, fence and void as 0 "unlabeled");
- ``dsec/69mask_train_edges/zurich_city_XX_a/<6 digits>.png``, ``dsec/69mask_test_edges/<seq>/...`` and
  ``dsec/{train,test}_semantic_labels/<seq>/11classes/<6 digits>.png`` (11-class task ids). **Unverified:**
  ``test_semantic_labels`` is the reference's test-label folder; the train-label folder name
  ``train_semantic_labels`` is our mirror of it, not checked against a real DSEC download.

The world ids map to those id spaces through the ``WORLD_TO_*`` tables of :mod:`madm_pl.labels`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from multiprocessing import Pool
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
from tqdm import tqdm

from madm_pl.data import DELIVER_CONDITIONS
from madm_pl.data.io import atomic_folder
from madm_pl.labels import (
    CITYSCAPES_CLASSES,
    UNMAPPED,
    WORLD_TO_CITYSCAPES,
    WORLD_TO_DELIVER_PNG,
    WORLD_TO_DSEC,
    WORLD_TO_FMB,
)
from madm_pl.synthetic.constants import (
    SPLIT_SOURCE,
    SPLIT_TARGET_TEST,
    SPLIT_TARGET_TRAIN,
    TARGET_MODALITIES,
    scene_seed_sequence,
)
from madm_pl.synthetic.sensors import render_modality, render_scene

# What the manifest ``synthetic.json`` and ``README.txt`` name as the generator: this package's name
# before it left ``madm_pl.data``, kept so that worlds written since stay byte-identical.
GENERATOR = "madm_pl.data.synthetic"
# Bump when the written files change, so old folders are not mistaken for current ones. 2: target-train
# labels are written too.
FORMAT_VERSION = 2

CITIES: tuple[str, ...] = ("synthetica", "rendertown", "pixelburg")
DELIVER_MAPS: tuple[int, ...] = (1, 3, 10)
DSEC_TRAIN_SEQUENCES: tuple[str, ...] = tuple(f"zurich_city_{n:02d}_a" for n in (0, 1, 2, 4, 5, 6, 7, 8))
DSEC_TEST_SEQUENCES: tuple[str, ...] = ("zurich_city_13_a", "zurich_city_14_c", "zurich_city_15_a")
PNG_COMPRESSION = 1  # fixed so that files are byte-identical run to run; 1 is fast and still compact


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # OpenCV stores colour images as BGR; no timestamps or text chunks are written.
    data = image[:, :, ::-1] if image.ndim == 3 else image
    if not cv2.imwrite(str(path), np.ascontiguousarray(data), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]):
        raise OSError(f"could not write {path}")


def _map_label(layout: np.ndarray, table: np.ndarray) -> np.ndarray:
    mapped = table[layout]
    if (mapped == UNMAPPED).any():  # a world class without a mapping: a bug in the tables above
        raise RuntimeError(f"world ids {sorted(set(layout[mapped == UNMAPPED].tolist()))} have no target id")
    return mapped.astype(np.uint8)


def _deliver_folder(index: int) -> tuple[str, str]:
    """(condition, MAP_<k>_point<m>) of a DELIVER scene: conditions cycle, 10 frames per folder."""
    condition = DELIVER_CONDITIONS[index % len(DELIVER_CONDITIONS)]
    folder = index // (10 * len(DELIVER_CONDITIONS))
    return condition, f"MAP_{DELIVER_MAPS[folder % len(DELIVER_MAPS)]}_point{100 + folder}"


def scene_paths(split_code: int, modality: str, index: int) -> dict[str, str]:
    """Relative output paths of one scene: ``{"image": ..., "label": ...}`` (every split is labelled)."""
    if split_code == SPLIT_SOURCE:
        city = CITIES[index % len(CITIES)]
        stem = f"{city}_{index // len(CITIES):06d}_000019"
        return {
            "image": f"cityscapes/leftImg8bit/train/{city}/{stem}_leftImg8bit.png",
            "label": f"cityscapes/gtFine/train/{city}/{stem}_gtFine_labelTrainIds.png",
        }
    test = split_code == SPLIT_TARGET_TEST
    split = "test" if test else "train"
    if modality == "depth":
        condition, folder = _deliver_folder(index)
        frame = f"{50 * (index + 1):06d}"
        return {
            "image": f"deliver/depth/{condition}/{split}/{folder}/{frame}_depth_front.png",
            "label": f"deliver/semantic/{condition}/{split}/{folder}/{frame}_semantic_front.png",
        }
    if modality == "infrared":
        name = f"{index + 1:05d}.png"
        return {"image": f"fmb/{split}/Infrared/{name}", "label": f"fmb/{split}/Label/{name}"}
    if modality == "event":
        sequences = DSEC_TEST_SEQUENCES if test else DSEC_TRAIN_SEQUENCES
        sequence = sequences[index % len(sequences)]
        name = f"{index // len(sequences) + 1:06d}.png"
        return {
            "image": f"dsec/69mask_{split}_edges/{sequence}/{name}",
            # The train-label folder mirrors the test one; unverified against real DSEC (module docstring).
            "label": f"dsec/{split}_semantic_labels/{sequence}/11classes/{name}",
        }
    raise ValueError(f"no files for split code {split_code} and modality {modality!r}")


def target_label(layout: np.ndarray, modality: str) -> np.ndarray:
    """A world layout written in the target dataset's label id space.

    Args:
        layout: (H,W) uint8 world ids (Cityscapes 19, 255 void).
        modality: ``"depth"`` (DELIVER), ``"infrared"`` (FMB) or ``"event"`` (DSEC).

    Returns:
        depth: (H,W,3) uint8 with channel 0 = DELIVER id + 1 (void → "other"), channels 1, 2 zero;
        infrared: (H,W) uint8 FMB ids 0..14; event: (H,W) uint8 11-class ids or 255.
    """
    if modality == "depth":
        label = np.zeros((*layout.shape, 3), np.uint8)
        label[:, :, 0] = _map_label(layout, WORLD_TO_DELIVER_PNG)
        return label
    if modality == "infrared":
        return _map_label(layout, WORLD_TO_FMB)
    if modality == "event":
        return _map_label(layout, WORLD_TO_DSEC)
    raise ValueError(f"unknown target modality {modality!r}: expected one of {list(TARGET_MODALITIES)}")


def _render_and_write(job: tuple[str, int, str, int, int, int, int]) -> np.ndarray:
    """Render one scene and write its files; returns its (256,) world-id pixel histogram."""
    root, split_code, modality, index, height, width, seed = job
    scene = render_scene(scene_seed_sequence(seed, split_code, modality, index), height, width)
    paths = scene_paths(split_code, modality, index)
    _write_png(Path(root, paths["image"]), render_modality(scene, modality))
    if split_code == SPLIT_SOURCE:
        label = _map_label(scene.layout, WORLD_TO_CITYSCAPES)
    else:
        label = target_label(scene.layout, modality)
    _write_png(Path(root, paths["label"]), label)
    return np.bincount(scene.layout.ravel(), minlength=256)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core; nested threads only add contention
    # The pool stops its workers with SIGTERM when it closes. A forked worker inherits the parent's
    # Python handlers: after a Lightning fit in the same process (a notebook, a test) that is Lightning's
    # SIGTERM handler, which only sets a flag, so a worker waiting on the job queue would never exit and
    # the pool's exit would hang. The workers take the default action again.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _validate(
    height: int,
    width: int,
    source_train: int,
    target_train: int,
    target_test: int,
    modalities: Sequence[str],
    workers: int,
) -> None:
    for option, value in (("--height", height), ("--width", width)):
        if value < 32 or value % 8:
            raise ValueError(
                f"{option}={value}: must be a multiple of 8 (the VAE downsamples by 8) and at least 32; "
                f"fix {option}, e.g. {max(32, value // 8 * 8)}"
            )
    for option, value in (
        ("--source-train", source_train),
        ("--target-train", target_train),
        ("--target-test", target_test),
    ):
        if value < 0:
            raise ValueError(f"{option}={value}: a scene count must be >= 0; fix {option}")
    unknown = [m for m in modalities if m not in TARGET_MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"--modalities {list(modalities)}: choose one or more of {list(TARGET_MODALITIES)}")
    if workers < 1:
        raise ValueError(f"--workers={workers}: must be >= 1; fix --workers")


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "synthetic.json").read_text())
    except (OSError, ValueError):
        return None


def _same_but_format(recorded: object, options: dict) -> bool:
    """Whether manifest options ``recorded`` equal ``options`` except for an older format version."""
    if not isinstance(recorded, dict):
        return False
    version = recorded.get("format_version")
    return (
        isinstance(version, int)
        and version < FORMAT_VERSION
        and {k: v for k, v in recorded.items() if k != "format_version"}
        == {k: v for k, v in options.items() if k != "format_version"}
    )


def generate(
    out: str | Path,
    *,
    height: int = 128,
    width: int = 256,
    source_train: int = 600,
    target_train: int = 600,
    target_test: int = 100,
    seed: int = 0,
    modalities: Sequence[str] = TARGET_MODALITIES,
    workers: int | None = None,
    force: bool = False,
) -> bool:
    """Write the synthetic data set under ``out`` (layouts in the module docstring).

    The tree is written into a temporary sibling folder and renamed to ``out`` once complete
    (``data.io.atomic_folder``), with the manifest ``synthetic.json`` written last. An ``out`` whose
    manifest matches these options is kept; one that differs only by an older ``format_version`` is
    rewritten without ``force``.

    Args:
        out: destination folder.
        height, width: image size; multiples of 8, at least 32.
        source_train: Cityscapes-style RGB scenes with labels.
        target_train: target training scenes per target modality, labelled too (for an oracle;
            adaptation does not read the labels).
        target_test: labelled test scenes per target modality.
        seed: base seed; results are byte-identical for equal options whatever ``workers`` is.
        modalities: target modalities to write, a subset of ``TARGET_MODALITIES``.
        workers: processes; default ``min(2, os.cpu_count())``.
        force: replace an existing synthetic data set (a folder holding ``synthetic.json``).

    Returns:
        True when written, False when ``out`` already held this data set.

    Raises:
        ValueError: on a bad option, or when ``out`` exists and is not a replaceable synthetic data set.
    """
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    _validate(height, width, source_train, target_train, target_test, modalities, workers)
    modalities = [m for m in TARGET_MODALITIES if m in modalities]  # canonical order for the manifest
    out = Path(out)
    options = {
        "format_version": FORMAT_VERSION,
        "height": height,
        "width": width,
        "source_train": source_train,
        "target_train": target_train,
        "target_test": target_test,
        "seed": seed,
        "modalities": modalities,
    }
    if out.exists():
        manifest = _read_manifest(out)
        if manifest is not None and manifest.get("options") == options and not force:
            print(
                f"{out} already holds this synthetic data set (synthetic.json matches): skipping; "
                "pass --force to rewrite it"
            )
            return False
        if manifest is None and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(
                f"--out={out} exists and is not a synthetic data set (no readable synthetic.json): "
                "refusing to replace it; choose another --out or remove it"
            )
        if manifest is not None and not force and _same_but_format(manifest.get("options"), options):
            # Our own tree, asked for with the same options, written by an older renderer: stale, so
            # rewritten rather than reused (format 1 had no target-train labels).
            old_version = manifest["options"]["format_version"]
            print(
                f"{out} holds this synthetic data set in an older format "
                f"(format_version {old_version}, now {FORMAT_VERSION}): rewriting it"
            )
        elif manifest is not None and not force:
            raise ValueError(
                f"--out={out} holds a synthetic data set made with other options "
                f"({manifest.get('options')}); "
                "pass --force to replace it or choose another --out"
            )

    jobs = [(SPLIT_SOURCE, "rgb", i) for i in range(source_train)]
    for modality in modalities:
        jobs += [(SPLIT_TARGET_TRAIN, modality, i) for i in range(target_train)]
        jobs += [(SPLIT_TARGET_TEST, modality, i) for i in range(target_test)]

    with atomic_folder(out) as staging:
        histogram = _render_all(staging, jobs, height, width, seed, workers)
        counts = {"cityscapes/train": source_train}
        dataset = {"depth": "deliver", "infrared": "fmb", "event": "dsec"}
        for modality in modalities:
            counts[f"{dataset[modality]}/train"] = target_train
            counts[f"{dataset[modality]}/test"] = target_test
        source_share = histogram[: len(CITYSCAPES_CLASSES)] / max(histogram.sum(), 1)
        _write_readme(staging, options, counts)
        manifest = {
            "generator": GENERATOR,
            "options": options,
            "counts": counts,
            "source_class_share": {
                name: round(float(p), 4) for name, p in zip(CITYSCAPES_CLASSES, source_share)
            },
        }
        (staging / "synthetic.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return True


def _render_all(
    root: Path, jobs: list[tuple[int, str, int]], height: int, width: int, seed: int, workers: int
) -> np.ndarray:
    """Render and write every job; returns the world-id histogram of the source scenes."""
    tasks = [(str(root), split, modality, index, height, width, seed) for split, modality, index in jobs]
    histogram = np.zeros(256, np.int64)
    progress = scene_progress(len(tasks))

    def collect(results: Iterable[np.ndarray]) -> None:
        for task, counts in zip(tasks, results):
            if task[1] == SPLIT_SOURCE:
                histogram[:] += counts
            progress.update()

    with progress:
        if workers == 1:
            collect(map(_render_and_write, tasks))
        else:
            # imap keeps results in job order, so the histogram does not depend on scheduling.
            with Pool(workers, initializer=_init_worker) as pool:
                collect(pool.imap(_render_and_write, tasks, chunksize=8))
    return histogram


class _ProgressLines:
    """tqdm's interface for a log file: a line every ``every`` scenes and at the end, no carriage returns."""

    def __init__(self, total: int, every: int, stream: TextIO) -> None:
        self.total, self.every, self.stream = total, every, stream
        self.done = 0
        self.start = time.monotonic()

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.done % self.every == 0 or self.done == self.total:
            elapsed = time.monotonic() - self.start
            rate = self.done / max(elapsed, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            print(
                f"madm-pl-data: {self.done}/{self.total} scenes | {rate:.1f} scenes/s | ETA {left:.0f} s",
                file=self.stream,
                flush=True,
            )

    def __enter__(self) -> _ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def scene_progress(total: int, stream: TextIO | None = None) -> Any:
    """The progress of writing ``total`` scenes on ``stream`` (standard error): a tqdm bar on a terminal;
    in a log file or CI a line every tenth of the work (a bar's carriage-return updates would pile up
    there, 2,700 on one line), as training prints its progress."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        return tqdm(total=total, desc="madm-pl-data", unit="scene", file=stream)
    return _ProgressLines(total, max(1, math.ceil(total / 10)), stream)


def _write_readme(root: Path, options: dict, counts: dict[str, int]) -> None:
    lines = [
        f"madm-pl synthetic four-modality street world ({GENERATOR}, console script madm-pl-data)",
        "",
        f"seed {options['seed']}, image size {options['height']}x{options['width']} (HxW), "
        f"target modalities: {', '.join(options['modalities'])}",
        "",
        "scenes per split (each scene its own layout; source, target-train and target-test never share one):",
        *(f"  {split}: {count}" for split, count in counts.items()),
        "",
        "layouts and label id spaces (as the real datasets):",
        "  cityscapes/leftImg8bit/train/<city>/*_leftImg8bit.png (RGB)",
        "  cityscapes/gtFine/train/<city>/*_gtFine_labelTrainIds.png (19 train ids, 255 void)",
        "  deliver/depth/<cond>/{train,test}/MAP_*/<id>_depth_front.png (CARLA 8-bit log depth, as assumed)",
        "  deliver/semantic/<cond>/{train,test}/MAP_*/<id>_semantic_front.png: channel 0 = DELIVER id + 1",
        "  fmb/{train,test}/Infrared/*.png, fmb/{train,test}/Label/*.png (FMB ids 0..14)",
        "  dsec/69mask_{train,test}_edges/<seq>/*.png (128 = no event)",
        "  dsec/{train,test}_semantic_labels/<seq>/11classes/*.png (11-class task ids; the train folder",
        "    name mirrors the test one and is unverified against real DSEC)",
        "",
        "synthetic.json is written last: a folder without it is incomplete.",
    ]
    (root / "README.txt").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``madm-pl-data``: write the synthetic data set (see ``generate``)."""
    parser = argparse.ArgumentParser(
        prog="madm-pl-data", description="Write madm-pl's synthetic four-modality street world."
    )
    parser.add_argument("--out", required=True, help="destination folder, e.g. data/synthetic")
    parser.add_argument("--height", type=int, default=128, help="image height, multiple of 8 (default 128)")
    parser.add_argument("--width", type=int, default=256, help="image width, multiple of 8 (default 256)")
    parser.add_argument("--source-train", type=int, default=600, help="labelled RGB source scenes")
    parser.add_argument(
        "--target-train", type=int, default=600, help="training scenes (with labels) per target modality"
    )
    parser.add_argument(
        "--target-test", type=int, default=100, help="labelled test scenes per target modality"
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: min(2, CPU count))")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing synthetic data set at --out"
    )
    parser.add_argument(
        "--modalities",
        nargs="+",
        default=list(TARGET_MODALITIES),
        metavar="MODALITY",
        help=f"target modalities, any of {' '.join(TARGET_MODALITIES)} (default: all)",
    )
    args = parser.parse_args(argv)
    try:
        written = generate(
            args.out,
            height=args.height,
            width=args.width,
            source_train=args.source_train,
            target_train=args.target_train,
            target_test=args.target_test,
            seed=args.seed,
            modalities=args.modalities,
            workers=args.workers,
            force=args.force,
        )
    except ValueError as error:
        parser.error(str(error))
    if written:
        print(f"wrote the synthetic data set to {args.out}")
    return 0

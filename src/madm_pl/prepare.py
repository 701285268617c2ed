"""``madm-pl prepare``: check a task's data trees, cache the RCS statistics, print label histograms.

Run it once per task before training on real data (docs/PAPER_RECIPES.md)::

    madm-pl prepare -c configs/rgb2infrared.yaml \\
        --data.source_root /datasets/Cityscapes --data.target_root /datasets/FMB

It takes the ``--data.*`` options of ``CrossModalityDataModule`` that describe the data (also spelt
``--data.init_args.*``, as ``madm-pl fit`` takes them); ``-c`` reads ``data.init_args`` of a config
and the command line overrides it. It then

1. opens the source (Cityscapes train) and target (train and test) splits exactly as training does
   (same datasets, same file lists, the target train labels too with ``target_train_labels``), so a
   missing folder or file fails here with its path; it
   prints the number of images of each split and warns (``DatasetSizeWarning``) when a count
   differs from the published one (SPEC section 1);
2. reads every file training will read, as training reads it: each image decodes (with the
   ``data.image_range`` / ``data.image_percentiles`` rule for more than 8 bits), each label decodes,
   holds only ids of the label map and has its image's size, and each image has its label. Every
   bad file goes into one list, and ``prepare`` exits non-zero with it and how to fix them (training
   would stop at the first one it draws, possibly hours in);
3. computes the rare class sampling statistics and caches them in
   ``<source_root>/madm_rcs_stats.json`` (``data/rcs.py``; training reads the same cache) and prints
   the RCS class probabilities and candidate images;
4. prints per-class pixel histograms of the source labels (in the task's classes, after the
   Cityscapes map) and of the target test labels.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from madm_pl.data.datamodule import CrossModalityDataModule
from madm_pl.data.datasets import CityscapesDataset, SegmentationDataset, build_target_dataset
from madm_pl.data.io import ImageScaling
from madm_pl.data.rcs import (
    CACHE_NAME,
    NUM_SOURCE_CLASSES,
    RareClassSampler,
    load_or_compute_class_counts,
)
from madm_pl.labels import CITYSCAPES_CLASSES, IGNORE_INDEX, Task, get_task

#: Published split sizes (SPEC section 1): (dataset kind, split) -> images.
PUBLISHED_SIZES: dict[tuple[str, str], int] = {
    ("cityscapes", "train"): 2975,
    ("deliver", "train"): 3983,
    ("deliver", "test"): 1897,
    ("fmb", "train"): 1220,
    ("fmb", "test"): 280,
    ("dsec", "train"): 4037,
    ("dsec", "test"): 2806,
}

#: Width of the longest histogram bar, in characters.
BAR_WIDTH = 30

#: The datamodule options ``prepare`` reads, with their types.
OPTIONS: dict[str, type] = {
    "task": str,
    "source_root": str,
    "target_root": str,
    "target_kind": str,
    "train_file_list": str,
    "test_file_list": str,
    "label_map": str,
    "dsec_frames": str,
    "target_train_labels": bool,
    "rcs_min_pixels": int,
    "rcs_temperature": float,
    "image_range": list,
    "image_percentiles": list,
}
_REQUIRED = ("task", "source_root", "target_root")


class DatasetSizeWarning(UserWarning):
    """A split holds another number of images than the published dataset."""


@dataclass
class SplitCount:
    """Images found in one split.

    Attributes:
        name: e.g. ``"FMB test (target)"``.
        root: the data root.
        images: images found (or listed).
        published: the published count, or None (your own images).
    """

    name: str
    root: str
    images: int
    published: int | None


@dataclass
class PrepareReport:
    """What ``prepare`` found.

    Attributes:
        counts: one entry per split.
        rcs_cache: the RCS statistics file.
        source_pixels: (C,) int64 labelled source pixels per task class (after the source map).
        target_pixels: (C,) int64 target test pixels per task class, or None without a test split.
    """

    counts: list[SplitCount] = field(default_factory=list)
    rcs_cache: Path | None = None
    source_pixels: np.ndarray | None = None
    target_pixels: np.ndarray | None = None


def _boolean(text: str) -> bool:
    """``true``/``false`` (any case, or 1/0, yes/no), as LightningCLI reads a bool."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(text)


def _pair(text: str) -> list[float]:
    """``[low, high]`` (YAML, as LightningCLI reads a list)."""
    value = yaml.safe_load(text)
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(text)
    return [float(v) for v in value]


def _optional(kind: type) -> Any:
    """An argparse type that also accepts ``null``/``none`` (as LightningCLI does) for None."""
    parse = _boolean if kind is bool else _pair if kind is list else kind

    def convert(text: str) -> Any:
        return None if text.lower() in ("null", "none") else parse(text)

    convert.__name__ = kind.__name__
    return convert


def build_parser() -> argparse.ArgumentParser:
    """The ``madm-pl prepare`` parser: ``-c/--config`` and ``--data[.init_args].<option>``."""
    parser = argparse.ArgumentParser(
        prog="madm-pl prepare",
        description="Check the data trees of a task (every file training reads), cache the RCS "
        "statistics, print label histograms.",
        allow_abbrev=False,  # as madm-pl fit: an abbreviated option is an error, not a guess
    )
    parser.add_argument("-c", "--config", help="a madm-pl config YAML; its data.init_args give the defaults")
    for name, kind in OPTIONS.items():
        parser.add_argument(
            f"--data.{name}",
            f"--data.init_args.{name}",
            dest=name,
            type=_optional(kind),
            default=argparse.SUPPRESS,
            help=f"as {name} of CrossModalityDataModule",
        )
    return parser


def _config_options(path: str) -> dict[str, Any]:
    """The data options of a config: ``data.init_args`` (or ``data`` without ``class_path``)."""
    config = Path(path)
    if not config.is_file():
        raise FileNotFoundError(f"config '{config}' not found; fix -c/--config")
    try:
        content = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"config '{config}' is not valid YAML ({error})") from None
    data = content.get("data") if isinstance(content, dict) else None
    if not isinstance(data, dict):
        raise ValueError(f"config '{config}' has no 'data' section; pass the --data.* options instead")
    data = data.get("init_args", data) if "class_path" in data else data
    return {name: data[name] for name in OPTIONS if name in data}


def parse_options(args: Sequence[str]) -> dict[str, Any]:
    """The options of ``prepare``: datamodule defaults < config < command line.

    Raises:
        SystemExit: bad command line (argparse), or a required option is missing.
    """
    parser = build_parser()
    namespace = vars(parser.parse_args(list(args)))
    config = namespace.pop("config")
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(CrossModalityDataModule).parameters.items()
        if name in OPTIONS and parameter.default is not inspect.Parameter.empty
    }
    try:
        from_config = _config_options(config) if config else {}
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    options = defaults | from_config | namespace
    missing = [f"--data.{name}" for name in _REQUIRED if options.get(name) is None]
    if missing:
        parser.error(f"missing {', '.join(missing)} (on the command line or in the -c config)")
    return options


# ------------------------------------------------------------------------------------------ checks
def _published(kind: str, split: str) -> int | None:
    return PUBLISHED_SIZES.get((kind, split))


def _count(name: str, dataset: SegmentationDataset, kind: str, split: str) -> SplitCount:
    count = SplitCount(name, str(dataset.root), len(dataset), _published(kind, split))
    if count.published is not None and count.images != count.published:
        warnings.warn(
            f"{name} under '{dataset.root}' has {count.images} images, the published dataset "
            f"{count.published}: results will not be comparable with the paper (a subset, another "
            "version or extra files; the reference's JSON lists via data.train_file_list / "
            "data.test_file_list select the published ones)",
            DatasetSizeWarning,
            stacklevel=3,
        )
    return count


def _has_test_split(kind: str, target_root: str, test_file_list: str | None) -> bool:
    """As the datamodule: a folder target may have no test split."""
    return kind != "folder" or test_file_list is not None or (Path(target_root) / "test" / "images").is_dir()


def _open_datasets(
    task: Task, options: dict[str, Any], kind: str, scaling: ImageScaling
) -> tuple[CityscapesDataset, SegmentationDataset, SegmentationDataset | None]:
    """Open the three splits; every failure is collected and reported at once.

    Images without their label do not stop the opening (``strict=False``): they are in each
    dataset's ``unmatched``, reported with the other bad files by ``check_files``.
    """
    errors: list[str] = []

    def attempt(make: Any) -> Any:
        try:
            return make()
        except (FileNotFoundError, ValueError) as error:
            errors.append(str(error))
            return None

    source = attempt(
        lambda: CityscapesDataset(
            options["source_root"],
            "train",
            task,
            options["train_file_list"],
            option="data.source_root",
            strict=False,
        )
    )

    def target(split: str) -> SegmentationDataset:
        file_list = options["train_file_list" if split == "train" else "test_file_list"]
        labelled = True if split == "train" and options["target_train_labels"] else None
        return build_target_dataset(
            task,
            options["target_root"],
            split,
            kind,
            file_list,
            options["label_map"],
            "data.target_root",
            labelled=labelled,
            dsec_frames=options["dsec_frames"],
            image_scaling=scaling,
            strict=False,
        )

    target_train = attempt(lambda: target("train"))
    target_test = None
    if _has_test_split(kind, options["target_root"], options["test_file_list"]):
        target_test = attempt(lambda: target("test"))
    if errors:
        raise SystemExit("madm-pl prepare: error:\n  " + "\n  ".join(errors))
    return source, target_train, target_test


def check_files(datasets: Sequence[SegmentationDataset]) -> list[str]:
    """Every problem of every file the datasets read: images without a label, then each item's
    ``SegmentationDataset.check`` (decoding, ids, sizes), in dataset and file order.

    Returns:
        One message per problem, naming the file.
    """
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for dataset in datasets:
            problems += dataset.unmatched
            for found in pool.map(dataset.check, range(len(dataset))):
                problems += found
    return problems


def format_problems(problems: Sequence[str]) -> str:
    """The error of ``prepare`` for bad files: all of them, one a line, and the fix."""
    return (
        f"madm-pl prepare: error: {len(problems)} bad file{'s' if len(problems) != 1 else ''} "
        "(training would stop at the first one it draws):\n  "
        + "\n  ".join(problems)
        + "\nfix: replace or remove each file named (and its entry in data.train_file_list / "
        "data.test_file_list if you use them), then run madm-pl prepare again"
    )


# -------------------------------------------------------------------------------------- histograms
def _bar(share: float, largest: float) -> str:
    return "#" * round(BAR_WIDTH * share / largest) if largest > 0 else ""


def format_histogram(classes: Sequence[str], pixels: np.ndarray, title: str) -> str:
    """A text table: pixels, percentage of the labelled pixels and a bar per class.

    Args:
        classes: class names, index = train id.
        pixels: (C,) int pixel counts.
        title: first line.

    Returns:
        The table; bars are scaled to the most frequent class.
    """
    total = int(pixels.sum())
    shares = pixels / total * 100 if total else np.zeros(len(classes))
    largest = float(shares.max()) if len(shares) else 0.0
    width = max(len(name) for name in (*classes, "class"))
    lines = [title, f"  {'class':<{width}}  {'pixels':>14}  {'%':>6}"]
    for name, count, share in zip(classes, pixels.tolist(), shares.tolist(), strict=True):
        lines.append(f"  {name:<{width}}  {count:>14,}  {share:6.2f}  {_bar(share, largest)}")
    lines.append(f"  {'total':<{width}}  {total:>14,}  {100.0 if total else 0.0:6.2f}")
    return "\n".join(lines)


def source_histogram(task: Task, image_counts: Sequence[dict[int, int]]) -> tuple[np.ndarray, int]:
    """Source pixels per task class from the RCS counts (Cityscapes train ids through ``source_map``).

    Args:
        task: gives the source map.
        image_counts: per image {Cityscapes train id: pixels} (RCS statistics).

    Returns:
        (C,) int64 pixels per task class, and the pixels of Cityscapes classes the task ignores.
    """
    totals = np.zeros(NUM_SOURCE_CLASSES, dtype=np.int64)
    for counts in image_counts:
        for class_id, pixels in counts.items():
            totals[class_id] += pixels
    mapped = task.source_map[:NUM_SOURCE_CLASSES]
    histogram = np.zeros(task.num_classes, dtype=np.int64)
    np.add.at(histogram, mapped[mapped != IGNORE_INDEX], totals[mapped != IGNORE_INDEX])
    return histogram, int(totals[mapped == IGNORE_INDEX].sum())


def target_histogram(task: Task, dataset: SegmentationDataset) -> tuple[np.ndarray, int]:
    """Target test pixels per task class (labels decoded by the dataset, at their stored size).

    Returns:
        (C,) int64 pixels per class, and the ignored (255) pixels.
    """

    def bins(index: int) -> np.ndarray:
        return np.bincount(dataset.load(index).label.ravel(), minlength=256)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        totals = np.sum(list(pool.map(bins, range(len(dataset)))), axis=0, dtype=np.int64)
    return totals[: task.num_classes].copy(), int(totals[IGNORE_INDEX])


def format_rcs(sampler: RareClassSampler, image_counts: Sequence[dict[int, int]], min_pixels: int) -> str:
    """RCS table in the Cityscapes classes: pixels, draw probability, candidate images."""
    probabilities = dict(zip(sampler.classes.tolist(), sampler.probs.tolist(), strict=True))
    width = max(len(name) for name in CITYSCAPES_CLASSES)
    lines = [f"  {'class':<{width}}  {'pixels':>14}  {'P(draw) %':>9}  images with > {min_pixels} px"]
    for class_id, name in enumerate(CITYSCAPES_CLASSES):
        pixels = sum(counts.get(class_id, 0) for counts in image_counts)
        candidates = len(sampler.candidates.get(class_id, ()))
        probability = probabilities.get(class_id, 0.0) * 100
        lines.append(f"  {name:<{width}}  {pixels:>14,}  {probability:9.2f}  {candidates}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- main
def prepare(options: dict[str, Any]) -> PrepareReport:
    """Check the trees, cache the RCS statistics and print the report (see the module docstring).

    Args:
        options: the ``OPTIONS`` (as ``parse_options`` returns them).

    Returns:
        What was found.

    Raises:
        SystemExit: a root, folder or listed file is missing, an option is invalid, or files are bad
            (the message names every path or the option, and the fix).
    """
    try:
        task = get_task(options["task"])
    except ValueError as error:
        raise SystemExit(f"madm-pl prepare: error: data.task: {error}") from None
    if options["rcs_temperature"] <= 0:
        raise SystemExit(
            f"madm-pl prepare: error: data.rcs_temperature must be > 0, got {options['rcs_temperature']}"
        )
    if options["rcs_min_pixels"] < 0:
        raise SystemExit(
            f"madm-pl prepare: error: data.rcs_min_pixels must be >= 0, got {options['rcs_min_pixels']}"
        )
    try:
        scaling = ImageScaling(
            fixed=None if options["image_range"] is None else tuple(options["image_range"]),
            percentiles=None if options["image_percentiles"] is None else tuple(options["image_percentiles"]),
        )
    except ValueError as error:
        raise SystemExit(f"madm-pl prepare: error: {error}") from None
    kind = options["target_kind"] or task.target_dataset
    source, target_train, target_test = _open_datasets(task, options, kind, scaling)
    target_name = target_train.dataset_name
    report = PrepareReport()
    report.counts = [
        _count("Cityscapes train (source)", source, "cityscapes", "train"),
        _count(f"{target_name} train (target)", target_train, kind, "train"),
    ]
    if target_test is not None:
        report.counts.append(_count(f"{target_name} test (target)", target_test, kind, "test"))

    print(f"madm-pl prepare: task {task.name} ({task.num_classes} classes), target kind {kind!r}")
    name_width = max(len(count.name) for count in report.counts)
    print(f"  {'split':<{name_width}}  {'images':>6}  {'published':>9}  root")
    for count in report.counts:
        published = "-" if count.published is None else str(count.published)
        print(f"  {count.name:<{name_width}}  {count.images:>6}  {published:>9}  {count.root}")
    if target_test is None:
        print(f"  no {target_name} test split (test/images/ and test/labels/): no validation or test")
    for dataset in (target_train, target_test):
        selection = getattr(dataset, "frame_selection", lambda: None)()
        if selection is not None:
            print(f"  {selection}")

    splits = [source, target_train] + ([target_test] if target_test is not None else [])
    files = sum(len(split) * (1 + (split.label_paths is not None)) for split in splits)
    print(f"\nreading every image and label ({files} files) as training does ...", flush=True)
    problems = check_files(splits)
    if problems:
        raise SystemExit(format_problems(problems))
    print("  all files read")

    image_counts = load_or_compute_class_counts(options["source_root"], source.label_paths)
    report.rcs_cache = Path(options["source_root"]) / CACHE_NAME
    try:
        sampler = RareClassSampler(image_counts, options["rcs_temperature"], options["rcs_min_pixels"])
    except ValueError as error:
        raise SystemExit(f"madm-pl prepare: error: {error}") from None
    settings = (
        f"data.rcs_temperature={options['rcs_temperature']}, data.rcs_min_pixels={options['rcs_min_pixels']}"
    )
    print(f"\nRCS statistics of {len(image_counts)} source labels: {report.rcs_cache} ({settings})")
    print(format_rcs(sampler, image_counts, options["rcs_min_pixels"]))

    report.source_pixels, ignored = source_histogram(task, image_counts)
    print()
    print(
        format_histogram(task.classes, report.source_pixels, f"source label histogram, {task.name} classes:")
    )
    print(f"  (Cityscapes classes the task ignores: {ignored:,} pixels; 255 pixels not counted)")
    if target_test is not None:
        report.target_pixels, ignored = target_histogram(task, target_test)
        title = f"target test label histogram ({target_name}), {task.name} classes:"
        print()
        print(format_histogram(task.classes, report.target_pixels, title))
        print(f"  (ignored, 255: {ignored:,} pixels)")
    return report


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``madm-pl prepare`` (``cli.main`` dispatches to it).

    Args:
        args: the arguments after ``prepare`` (``sys.argv[2:]`` when None).
    """
    options = parse_options(sys.argv[2:] if args is None else args)
    # A command's warnings read better without the source line Python's default format adds.
    default_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        prepare(options)
    finally:
        warnings.formatwarning = default_format


def _format_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"madm-pl prepare: warning ({category.__name__}): {message}\n"

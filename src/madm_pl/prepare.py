"""``madm-pl prepare``: check a task's data trees, cache the RCS statistics, print label histograms.

Run it once per task before training on real data (docs/PAPER_RECIPES.md)::

    madm-pl prepare -c configs/rgb2infrared.yaml \\
        --data.source_root /datasets/Cityscapes --data.target_root /datasets/FMB

It reads its options with the parser of ``madm-pl fit`` (``cli.ConfigOnlyCLI``): the same ``-c``
configs (composed ones too) and the same ``--data.*`` options (also spelt ``--data.init_args.*``), the
command line overriding the config; only the datamodule is built. Without a config, ``--data.task``,
``--data.source_root`` and ``--data.target_root`` are enough (the image sizes, which ``prepare`` does
not read, have placeholders). It then

1. opens the source (Cityscapes train) and target (train and test) splits exactly as training does
   (same datasets, same file lists, the target train labels too with ``target_train_labels``), so a
   missing folder or file fails here with its path; it
   prints the number of images of each split and warns (``DatasetSizeWarning``) when a count
   differs from the published one (METHOD.md §1);
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

import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.cli import LightningArgumentParser

from madm_pl.cli import ConfigOnlyCLI, cli_options, instantiate
from madm_pl.data.datamodule import CrossModalityDataModule
from madm_pl.data.datasets import CityscapesDataset, SegmentationDataset
from madm_pl.data.rcs import (
    CACHE_NAME,
    NUM_SOURCE_CLASSES,
    RareClassSampler,
    load_or_compute_class_counts,
)
from madm_pl.labels import CITYSCAPES_CLASSES, IGNORE_INDEX, Task, get_task
from madm_pl.module import MADMModule

#: Published split sizes (METHOD.md §1): (dataset kind, split) -> images.
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

#: The options ``prepare`` needs (on the command line or in the config).
REQUIRED = ("task", "source_root", "target_root")
#: Placeholders of the datamodule's required options, so that a command line without a config parses;
#: ``prepare`` reads no image size, and an empty task or root is reported as missing.
_PLACEHOLDERS = {
    "task": "",
    "source_root": "",
    "target_root": "",
    "source_resize": [1, 1],
    "crop_size": [1, 1],
    "target_resize": [1, 1],
    "test_size": [1, 1],
}
DESCRIPTION = (
    "Check the data trees of a task (every file training reads), cache the RCS statistics, print label "
    "histograms. Takes madm-pl fit's -c and --data.* options; reads only the data section."
)


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


class PrepareCLI(ConfigOnlyCLI):
    """The parser of ``madm-pl fit`` for ``prepare``: the model section is optional and the datamodule's
    required options have placeholders (``_PLACEHOLDERS``), so that the three ``REQUIRED`` options alone
    parse; a config's other sections are read and checked as ``fit`` reads them, but not used."""

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.add_lightning_class_args(self.model_class, "model", subclass_mode=True, required=False)
        parser.add_lightning_class_args(self.datamodule_class, "data", subclass_mode=True)
        class_path = f"{CrossModalityDataModule.__module__}.{CrossModalityDataModule.__name__}"
        parser.set_defaults({"data": {"class_path": class_path, "init_args": dict(_PLACEHOLDERS)}})


def _fail(message: str) -> None:
    """Exit as a bad command line does (status 2), the message on stderr."""
    print(f"madm-pl prepare: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _config_files(args: Sequence[str]) -> list[str]:
    """The ``-c``/``--config`` values of a command line."""
    files = []
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def parse_datamodule(args: Sequence[str]) -> CrossModalityDataModule:
    """The datamodule ``madm-pl fit`` would build from the same ``-c`` and ``--data.*`` options.

    Raises:
        SystemExit: a bad command line (jsonargparse's message, status 2), a config that is not a file,
            a missing ``REQUIRED`` option, or an invalid data option (the datamodule's message).
    """
    for config in _config_files(args):
        if not Path(config).is_file():
            _fail(f"config '{config}' not found; fix -c/--config")
    options = cli_options("madm-pl prepare", DESCRIPTION)
    config = PrepareCLI(MADMModule, CrossModalityDataModule, args=list(args), **options).config
    init_args = config.data.get("init_args")
    missing = [f"--data.{name}" for name in REQUIRED if not init_args.get(name)]
    if missing:
        _fail(f"missing {', '.join(missing)} (on the command line or in the -c config)")
    try:
        get_task(init_args.task)
    except ValueError as error:
        raise SystemExit(f"madm-pl prepare: error: data.task: {error}") from None
    try:
        return instantiate(config.data)
    except ValueError as error:
        raise SystemExit(f"madm-pl prepare: error: {error}") from None


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


def _open_datasets(
    datamodule: CrossModalityDataModule,
) -> tuple[CityscapesDataset, SegmentationDataset, SegmentationDataset | None]:
    """Open the three splits as training does; every failure is collected and reported at once.

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

    source = attempt(lambda: datamodule.source_dataset(strict=False))
    target_train = attempt(lambda: datamodule.target_dataset("train", strict=False))
    target_test = None
    if datamodule.has_test_split():
        target_test = attempt(lambda: datamodule.target_dataset("test", strict=False))
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
def prepare(datamodule: CrossModalityDataModule) -> PrepareReport:
    """Check the trees, cache the RCS statistics and print the report (see the module docstring).

    Args:
        datamodule: the task's data (as ``parse_datamodule`` builds it).

    Returns:
        What was found.

    Raises:
        SystemExit: a root, folder or listed file is missing, an option is invalid, or files are bad
            (the message names every path or the option, and the fix).
    """
    task, kind = datamodule.task, datamodule.target_kind
    source, target_train, target_test = _open_datasets(datamodule)
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

    image_counts = load_or_compute_class_counts(datamodule.source_root, source.label_paths)
    report.rcs_cache = Path(datamodule.source_root) / CACHE_NAME
    temperature, min_pixels = datamodule.rcs_temperature, datamodule.rcs_min_pixels
    try:
        sampler = RareClassSampler(image_counts, temperature, min_pixels)
    except ValueError as error:
        raise SystemExit(f"madm-pl prepare: error: {error}") from None
    settings = f"data.rcs_temperature={temperature}, data.rcs_min_pixels={min_pixels}"
    print(f"\nRCS statistics of {len(image_counts)} source labels: {report.rcs_cache} ({settings})")
    print(format_rcs(sampler, image_counts, min_pixels))

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
    datamodule = parse_datamodule(sys.argv[2:] if args is None else args)
    # A command's warnings read better without the source line Python's default format adds.
    default_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        prepare(datamodule)
    finally:
        warnings.formatwarning = default_format


def _format_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"madm-pl prepare: warning ({category.__name__}): {message}\n"

"""Shared by the benchmark scripts: random training batches, the arguments of a bare Trainer, timing on
CPU or GPU, the GiB column and the report sections the scripts fill in BENCHMARKS.md."""

import functools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from madm_pl.labels import IGNORE_INDEX

#: The published recipe (its head: configs/base.yaml) and the demo recipe (its head: configs/demo/base.yaml).
PAPER_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "rgb2infrared.yaml"
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo" / "rgb2infrared.yaml"

#: A narrow head for the tiny stack's smoke runs of the GPU benchmarks (on the CPU, in the tests).
SMOKE_HEAD = {
    "embed_dim": 16,
    "projection_channels": 32,
    "decoded_projection_channels": 32,
    "bottleneck_width": 32,
}

#: Trainer arguments of a bare training loop: nothing to log, save, validate or draw while timing.
BARE_TRAINER = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "limit_val_batches": 0,
    "num_sanity_val_steps": 0,
}


class RandomPairs(Dataset):
    """Training items of the datamodule's contract, random: images in [0,1], labels with some 255."""

    def __init__(self, size: int, num_classes: int, length: int) -> None:
        self.size, self.num_classes, self.length = size, num_classes, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        shape = (self.size, self.size)
        # blocky labels (8x8 cells) so that ClassMix masks and the LPLR palette images have structure
        cells = torch.randint(0, self.num_classes + 1, (self.size // 8, self.size // 8), generator=generator)
        label = cells.repeat_interleave(8, 0).repeat_interleave(8, 1)
        label[label == self.num_classes] = IGNORE_INDEX
        return {
            "source_image": torch.rand(3, *shape, generator=generator),
            "source_label": label,
            "target_image": torch.rand(3, *shape, generator=generator),
        }


def config_head_widths(config: Path = PAPER_CONFIG) -> dict[str, int]:
    """The widths of a config's head (``model.init_args.head.init_args`` without
    ``activation_checkpointing``: ``embed_dim``, ``projection_channels``, ``decoded_projection_channels``,
    ``bottleneck_width``) as ``madm-pl fit`` parses the config (``cli.parse_config``), so that the paper's
    256/512/128/128 are written only in configs/base.yaml (and the demo's in configs/demo/base.yaml)."""
    return dict(_config_head_widths(Path(config).resolve()))


@functools.cache
def _config_head_widths(config: Path) -> tuple[tuple[str, int], ...]:
    from madm_pl.cli import parse_config

    init_args = parse_config(["-c", str(config)]).model.init_args.head.init_args.as_dict()
    return tuple((name, value) for name, value in init_args.items() if name != "activation_checkpointing")


def madm_head(widths: Mapping[str, int], activation_checkpointing: bool = False) -> dict[str, Any]:
    """``MADMModule``'s ``head`` option for the DAFormer head (``models.MADMHead``) of ``widths``
    (``embed_dim``, ``projection_channels``, ``decoded_projection_channels``, ``bottleneck_width``)."""
    init_args = {**widths, "activation_checkpointing": activation_checkpointing}
    return {"class_path": "madm_pl.models.MADMHead", "init_args": init_args}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    """Wall seconds of each of ``repeats`` calls of ``fn``, synchronised before and after on GPU."""
    durations = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        durations.append(time.perf_counter() - start)
    return durations


def gib(value: float | None) -> str:
    """A memory column: ``"1.23"`` GiB, or ``"-"`` where none was measured (CPU)."""
    return "-" if value is None else f"{value:.2f}"


def markers(name: str) -> tuple[str, str]:
    """The lines around a script's section of a markdown report: ``<!-- name:start -->`` and
    ``<!-- name:end -->``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def has_markers(document: str, name: str) -> bool:
    """Whether ``document`` has both marker lines of ``name``."""
    return set(markers(name)) <= set(document.splitlines())


def replace_between_markers(document: str, content: str, name: str) -> str:
    """The text between the markers of ``name`` replaced by ``content`` (markers kept).

    Raises:
        ValueError: the document lacks one of the markers.
    """
    start, end = markers(name)
    if start not in document or end not in document:
        raise ValueError(f"the markdown file has no '{start}' ... '{end}' block to fill")
    head, rest = document.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}\n{end}{tail}"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with the package's atomic writer, creating its folder."""
    # Imported here: madm_pl.data loads albumentations, which the GPU scripts need nowhere else (one
    # wheel fewer to carry to a GPU machine, docs/PAPER_RECIPES.md §6).
    from madm_pl.data.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        file.write(text.encode())


#: Student's t, 97.5 % quantile, by degrees of freedom (1..30): the half-width of a two-sided 95 % interval
#: of a mean is ``T_975[n - 1] * std / sqrt(n)`` (standard tables; checked against scipy in the tests).
T_975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
    20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
    29: 2.045, 30: 2.042,
}  # fmt: skip


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The two-sided 95 % t-interval of the mean of ``values`` (None for fewer than 2 values).

    Raises:
        ValueError: more than 31 values (beyond the table).
    """
    if len(values) < 2:
        return None
    if len(values) - 1 not in T_975:
        raise ValueError(f"t_interval: {len(values)} values; the t table covers 2 to 31")
    mean = statistics.fmean(values)
    half = T_975[len(values) - 1] * statistics.stdev(values) / len(values) ** 0.5
    return mean - half, mean + half

"""The cost of one MADM training step against its floor, measured in the same run (issue 7, `make bench`).

Full step: what `madm-pl fit` runs per iteration (Lightning loop, EMA update, ClassMix, DPLG teacher,
strong augmentation, both student passes with LPLR, backward, clipping, AdamW, LR schedule), timed
between ``on_train_batch_start`` and ``on_train_batch_end``.

Floor: the work no implementation of the method can skip, at the same batch and size: two student
forward+backward passes (source and mixed image; each includes its VAE encode and the decode of the
UNet output), one teacher forward without gradient, and the two VAE encodes of the LPLR palettes.

    python -m benchmarks.step_cost                       # tiny stack, CPU, 64x64, batch 2 (the demo)
    python -m benchmarks.step_cost --data random --backbone sd14-random --size 512 --paper-head \\
        --precision bf16-mixed --accelerator gpu          # the paper model on a GPU, random tensors

``--data random`` feeds random tensors (``common.RandomPairs``) instead of the synthetic world, so
the GPU run needs nothing on disk (and no albumentations); the loader rate is then that of the tensors.

Prints a markdown report (ratio, peak memory, profiler table, loader rate); ``--markdown`` writes it
into the file's ``<!-- step-cost:start -->`` ... ``<!-- step-cost:end -->`` section (``make bench``:
BENCHMARKS.md), ``--out`` into a file of its own.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader

from benchmarks.common import (
    BARE_TRAINER,
    RandomPairs,
    config_head_widths,
    has_markers,
    madm_head,
    markers,
    replace_between_markers,
    synchronize,
    timed,
    write_atomic,
)
from madm_pl.labels import get_task
from madm_pl.method.lplr import painted_label
from madm_pl.method.segmentation import segmentation_loss
from madm_pl.module import MADMModule

#: The section of ``--markdown`` this script fills.
SECTION = "step-cost"


class StepTimer(Callback):
    """Wall time of every training step (synchronised on GPU)."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        synchronize(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(pl_module.device)
        self.durations.append(time.perf_counter() - self._start)


def floor_step(module: MADMModule, batch: dict[str, torch.Tensor]) -> None:
    """The unavoidable work of one MADM step (see the module docstring)."""
    source_image, source_label, target_image = (
        batch["source_image"],
        batch["source_label"],
        batch["target_image"],
    )
    for image in (source_image, target_image):  # source pass, then the mixed pass (same cost)
        logits, _ = module.segment(module.student, image)
        segmentation_loss(logits, source_label).backward()
    with torch.no_grad():
        module.segment(module.teacher, target_image, timestep=10)
        for _ in range(2):
            module.backbone.encode(painted_label(source_label, module.palette))
    module.zero_grad(set_to_none=True)


def make_trainer(args: argparse.Namespace, max_steps: int, callbacks: list[Callback]) -> Trainer:
    """A bare training loop: no logger, checkpoints, validation or progress bar to time."""
    return Trainer(
        max_steps=max_steps,
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        **BARE_TRAINER,
        gradient_clip_val=0.01,
        callbacks=callbacks,
    )


def make_data(args: argparse.Namespace) -> Any:
    """The demo's datamodule on the synthetic world (rgb2infrared), or a loader of random tensors."""
    if args.data == "random":
        num_classes = get_task("rgb2infrared").num_classes
        length = args.batch_size * 4 * (args.warmup + args.steps + 2)
        return DataLoader(RandomPairs(args.size, num_classes, length), batch_size=args.batch_size)
    from madm_pl.data import CrossModalityDataModule  # albumentations: not needed for random tensors

    root = Path(args.data)
    return CrossModalityDataModule(
        task="rgb2infrared",
        source_root=str(root / "cityscapes"),
        target_root=str(root / "fmb"),
        source_resize=(args.size, 2 * args.size),
        crop_size=(args.size, args.size),
        target_resize=(args.size, args.size * 4 // 3),
        test_size=(args.size, args.size),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        rcs_min_pixels=50,
    )


def train_loader(data: Any) -> DataLoader:
    return data if isinstance(data, DataLoader) else data.train_dataloader()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def fit(trainer: Trainer, module: MADMModule, data: Any) -> None:
    if isinstance(data, DataLoader):
        trainer.fit(module, train_dataloaders=data)
    else:
        trainer.fit(module, datamodule=data)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; ``--paper-head`` replaces the four head widths by configs/base.yaml's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default="data/synthetic", help="root of the synthetic world (make data), or 'random'"
    )
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--size", type=int, default=64, help="crop and test size (the demo: 64)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--head-embed-dim", type=int, default=32)
    parser.add_argument("--head-projection-channels", type=int, default=64)
    parser.add_argument("--head-decoded-channels", type=int, default=32)
    parser.add_argument("--head-bottleneck-width", type=int, default=32)
    parser.add_argument(
        "--paper-head", action="store_true", help="the paper's head widths, read from configs/base.yaml"
    )
    parser.add_argument("--checkpointing", action="store_true", help="UNet + head activation checkpointing")
    parser.add_argument("--compile-unet", action="store_true")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--steps", type=int, default=12, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--out", help="also write the report to this markdown file")
    parser.add_argument(
        "--markdown",
        type=Path,
        help=f"also write the report between the {' and '.join(markers(SECTION))} lines of this file "
        "(make bench: BENCHMARKS.md)",
    )
    args = parser.parse_args(argv)
    if args.markdown is not None and not (
        args.markdown.is_file() and has_markers(args.markdown.read_text(), SECTION)
    ):
        # checked before the measurement, not after it
        parser.error(
            f"--markdown {args.markdown}: add the lines {' and '.join(markers(SECTION))} where the "
            "report goes"
        )

    if args.paper_head:
        paper = config_head_widths()
        args.head_embed_dim, args.head_projection_channels = paper["embed_dim"], paper["projection_channels"]
        args.head_decoded_channels = paper["decoded_projection_channels"]
        args.head_bottleneck_width = paper["bottleneck_width"]
    return args


def build_module(args: argparse.Namespace) -> MADMModule:
    """The rgb2infrared module of ``--backbone`` with the head widths of ``args``, made on the device."""
    # Initialising 860M parameters on the GPU takes seconds; on the CPU, minutes.
    with torch.device("cuda" if args.accelerator == "gpu" else "cpu"):
        return MADMModule(
            task="rgb2infrared",
            backbone=args.backbone,
            head=madm_head(
                {
                    "embed_dim": args.head_embed_dim,
                    "projection_channels": args.head_projection_channels,
                    "decoded_projection_channels": args.head_decoded_channels,
                    "bottleneck_width": args.head_bottleneck_width,
                },
                activation_checkpointing=args.checkpointing,
            ),
            unet_gradient_checkpointing=args.checkpointing,
            compile_unet=args.compile_unet,
            dplg_t_end=10_000,
        )


@dataclass(frozen=True)
class StepTimes:
    """Durations (s) of the timed full steps and floor steps, and the device they ran on."""

    full: list[float]
    floor: list[float]
    device: torch.device

    @property
    def full_median(self) -> float:
        return statistics.median(self.full)

    @property
    def floor_median(self) -> float:
        return statistics.median(self.floor)


def measure_steps(args: argparse.Namespace, module: MADMModule, data: Any) -> StepTimes:
    """``--steps`` full steps after ``--warmup`` (a bare ``fit``), then as many floor steps on the same
    module, device, precision and a real batch."""
    timer = StepTimer()
    trainer = make_trainer(args, args.warmup + args.steps, [timer])
    fit(trainer, module, data)
    full = timer.durations[args.warmup :]

    # The floor, on the same module, device, precision and a real batch. ``fit`` ends by moving the
    # module back to the CPU (Lightning's teardown): put it where it trained.
    device = trainer.strategy.root_device
    module.to(device)
    batch = next(iter(train_loader(data)))
    batch = {k: v.to(device) for k, v in batch.items()}
    module.train()
    autocast = trainer.precision_plugin.forward_context
    with autocast():
        floor = timed(lambda: floor_step(module, batch), args.warmup, device)  # warm-up
        floor = timed(lambda: floor_step(module, batch), args.steps, device)
    return StepTimes(full=full, floor=floor, device=device)


def loader_rate(data: Any, batches: int) -> float:
    """Loader throughput alone, with the same workers: batches per second over ``batches`` after the first."""
    loader = train_loader(data)
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    loader_batches = 0
    for _ in range(batches):
        next(iterator)
        loader_batches += 1
    return loader_batches / (time.perf_counter() - start)


def profile_table(args: argparse.Namespace, module: MADMModule, data: Any, device: torch.device) -> str:
    """Operator profile of two full steps (a short extra fit): the top 15 by total time on ``device``."""
    # The module is already on the device, so the profile holds the steps, not the copy of the weights
    # to the GPU.
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profile_trainer = make_trainer(args, 2, [])  # a fresh trainer counts from 0: two steps
    with torch.profiler.profile(activities=activities) as profiler:
        fit(profile_trainer, module, data)
    sort_key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return profiler.key_averages().table(sort_by=sort_key, row_limit=15)


def peak_memory(device: torch.device) -> str:
    """The GPU's max allocated memory, or the process's max RSS on the CPU."""
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (GPU, max allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process max RSS)"


def report_text(
    args: argparse.Namespace, steps: StepTimes, loader_per_second: float, profile: str, peak: str
) -> str:
    """The markdown report: the setup line, the table of measures (``loader_per_second`` in batches per
    second, ``peak`` as ``peak_memory`` words it) and the ``profile`` table."""
    full_median, floor_median = steps.full_median, steps.floor_median
    step_rate = 1 / full_median
    return "\n".join(
        [
            f"backbone {args.backbone}, {args.size}x{args.size}, batch {args.batch_size}, "
            f"head embed {args.head_embed_dim}, precision {args.precision}, {device_name(steps.device)}, "
            f"checkpointing {'on' if args.checkpointing else 'off'}, "
            f"compiled UNet {'yes' if args.compile_unet else 'no'}, data {args.data}, "
            f"torch {torch.__version__}",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| full MADM step (median of {len(steps.full)}) | {full_median * 1000:.0f} ms |",
            f"| floor: 2 student fwd+bwd, 1 teacher fwd, 2 palette encodes | {floor_median * 1000:.0f} ms |",
            f"| ratio full / floor | {full_median / floor_median:.3f} |",
            f"| peak memory | {peak} |",
            f"| training steps per second | {step_rate:.2f} |",
            f"| loader batches per second ({args.num_workers} workers) | {loader_per_second:.2f} |",
            "",
            "Top operators of two full steps:",
            "",
            "```",
            profile,
            "```",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = make_data(args)
    module = build_module(args)
    steps = measure_steps(args, module, data)
    # Printed at once: the profiler below can take long on a large model.
    print(f"full {steps.full_median * 1000:.0f} ms, floor {steps.floor_median * 1000:.0f} ms", flush=True)
    rate = loader_rate(data, args.steps * 2)
    profile = profile_table(args, module, data, steps.device)
    report = report_text(args, steps, rate, profile, peak_memory(steps.device))
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    if args.markdown is not None:
        write_atomic(args.markdown, replace_between_markers(args.markdown.read_text(), report, SECTION))


if __name__ == "__main__":
    main()

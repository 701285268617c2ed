"""Time and peak memory of one MADM student step and one teacher forward (backbone + head).

The GPU check (METHOD.md §6b): ``sd14-random`` (SD v1-4's architecture, random weights) at 512x512,
batch 2 and 1, bf16 autocast, with and without UNet gradient checkpointing, paper-width head (embed 256):

    python -m benchmarks.gpu_backbone                      # defaults: cuda, 512, sd14-random, embed 256

CPU smoke test (seconds):

    python -m benchmarks.gpu_backbone --device cpu --size 64 --preset tiny --embed-dim 32

- student: conditioning + backbone (t = 0) + head, forward and backward of ``logits.mean() + |latent|.mean()``
  (no optimiser step, so no AdamW state in the peak).
- teacher: the same forward at t = 50 under ``torch.no_grad()``.

Timings are the median of ``--repeats`` runs after ``--warmup`` runs (CUDA-synchronised). Peak memory is
``torch.cuda.max_memory_allocated`` over the measured runs, weights included ("-" on CPU).
"""

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence

import torch

from benchmarks.common import config_head_widths, gib, synchronize, timed
from madm_pl.models import DiffusionBackbone, MADMHead, PromptConditioning


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--size", type=int, default=512, help="square image size (multiple of 64)")
    parser.add_argument(
        "--preset", default="sd14-random", help="backbone source: tiny, sd14-random or a folder"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 1])
    parser.add_argument(
        "--embed-dim", type=int, default=None, help="head width (default: the paper's, configs/base.yaml)"
    )
    parser.add_argument("--num-classes", type=int, default=11)
    parser.add_argument("--timestep", type=int, default=50, help="teacher (DPLG) timestep")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def measure(
    fn: Callable[[], None], device: torch.device, warmup: int, repeats: int
) -> tuple[float, float | None]:
    """Median seconds of ``fn`` and peak allocated GiB over the measured runs (None on CPU)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = timed(fn, repeats, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the benchmark, print a markdown table and return its rows."""
    args = parse_args(argv)
    device = torch.device(args.device)
    # Build the parameters on the device: initialising 860M parameters on the CPU would take longer.
    with device:
        backbone = DiffusionBackbone(args.preset)
        conditioning = PromptConditioning(backbone.context_dim, backbone.time_embed_dim, backbone.num_tokens)
        widths = config_head_widths()  # the paper head's (configs/base.yaml), --embed-dim replacing its width
        if args.embed_dim is not None:
            widths["embed_dim"] = args.embed_dim
        head = MADMHead(backbone.feature_channels, args.num_classes, **widths)
    # The constant buffers (uncond, noise) are made on the CPU; move them too.
    for module in (backbone, conditioning, head):
        module.to(device).train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    rows = []
    for checkpointing in (False, True):
        if checkpointing:
            backbone.unet.enable_gradient_checkpointing()
        else:
            backbone.unet.disable_gradient_checkpointing()
        for batch_size in args.batch_sizes:
            image = torch.rand(batch_size, 3, args.size, args.size, device=device) * 2 - 1

            def student(image: torch.Tensor = image) -> None:
                with autocast:
                    cond, time_offset = conditioning(backbone.uncond)
                    output = backbone(image, 0, cond, time_offset)
                    logits = head(output.features, output.decoded)
                    loss = logits.float().mean() + output.latent.float().abs().mean()
                loss.backward()
                for module in (backbone, conditioning, head):
                    module.zero_grad(set_to_none=True)

            def teacher(image: torch.Tensor = image) -> None:
                with torch.no_grad(), autocast:
                    cond, time_offset = conditioning(backbone.uncond)
                    output = backbone(image, args.timestep, cond, time_offset)
                    head(output.features, output.decoded)

            student_s, student_gib = measure(student, device, args.warmup, args.repeats)
            teacher_s, teacher_gib = measure(teacher, device, args.warmup, args.repeats)
            rows.append(
                {
                    "batch": batch_size,
                    "unet_checkpointing": checkpointing,
                    "student_ms": 1000 * student_s,
                    "student_peak_gib": student_gib,
                    "teacher_ms": 1000 * teacher_s,
                    "teacher_peak_gib": teacher_gib,
                }
            )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"\n{args.preset}, {args.size}x{args.size}, bf16 autocast, head embed {head.classifier.in_channels}, "
        f"{name}, "
        f"torch {torch.__version__}\n"
    )
    print("| batch | UNet ckpt | student fwd+bwd ms | student peak GiB | teacher fwd ms | teacher peak GiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['batch']} | {'on' if row['unet_checkpointing'] else 'off'} | {row['student_ms']:.1f} | "
            f"{gib(row['student_peak_gib'])} | {row['teacher_ms']:.1f} | {gib(row['teacher_peak_gib'])} |"
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

"""What the 24 GB mode (``model.init_args.optimizer=adamw-offload``) costs per iteration, from the real
parameter list of the paper model and a CPU AdamW measured here (issue 24, item 2).

- Bytes moved each way per optimizer step: every trained parameter's fp32 gradient device -> host and its
  updated fp32 value host -> device (``HostOffloadAdamW``), counted from ``MADMModule.parameter_groups()``
  of ``sd14-random`` with the paper head, built on the ``meta`` device (nothing allocated). The device
  memory the mode saves (AdamW's two moments) and the host memory it takes (masters, gradient buffers,
  moments) follow from the same count, and the VAE's bytes in fp32 and with ``vae_dtype: bfloat16``.
- The host AdamW step: ``torch.optim.AdamW`` (foreach, the recipe's; and fused) timed on real tensors of
  the paper UNet's shapes (every k-th parameter, ``--sample-params`` values in all), per thread count,
  then scaled linearly to the trained parameter count (the update is elementwise and memory-bound).

    python -m benchmarks.offload_cost                          # 100M sampled values, 1 thread
    python -m benchmarks.offload_cost --threads 1 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import config_head_widths, madm_head
from madm_pl.module import MADMModule

PAPER_HEAD = config_head_widths()  # configs/base.yaml's
GIB = 2**30


def paper_model_on_meta() -> MADMModule:
    """``sd14-random`` with the paper head, built on the ``meta`` device (shapes only, nothing allocated)."""
    with torch.device("meta"):
        return MADMModule(backbone="sd14-random", head=madm_head(PAPER_HEAD))


def parameter_counts(module: MADMModule) -> dict[str, Any]:
    """A module's trained tensors per group and its VAE by layer kind.

    Returns:
        ``groups`` {name: (tensors, values)}, ``trained_shapes`` [shape], ``vae_values``,
        ``vae_bf16_values`` (convolution and linear weights: what ``vae_dtype: bfloat16`` stores in bf16).
    """
    groups = module.parameter_groups()
    vae = module.backbone.vae
    cast = [
        p for m in vae.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for p in m.parameters()
    ]
    return {
        "groups": {g["name"]: (len(g["params"]), sum(p.numel() for p in g["params"])) for g in groups},
        "trained_shapes": [tuple(p.shape) for g in groups for p in g["params"]],
        "vae_values": sum(p.numel() for p in vae.parameters()),
        "vae_bf16_values": sum(p.numel() for p in cast),
    }


def adamw_8bit_state_bytes(shapes: list[tuple[int, ...]], block_size: int = 256) -> int:
    """Bytes of torchao 0.18 AdamW8bit's two moments: 1 byte per value and one fp32 scale per block for a
    tensor of >= 4096 values that the block size divides (its ``_new_buffer`` rule), else fp32 (8 bytes per
    value for the two). The 256-entry fp32 code maps are shared, left out."""
    total = 0
    for shape in shapes:
        values = torch.Size(shape).numel()
        if values >= 4096 and values % block_size == 0:
            total += 2 * (values + 4 * values // block_size)
        else:
            total += 8 * values
    return total


def sample_shapes(shapes: list[tuple[int, ...]], target: int) -> list[tuple[int, ...]]:
    """Every k-th shape in order of size, k chosen so that the sample holds about ``target`` values: the mix
    of large and small tensors is kept (foreach pays per tensor, the arithmetic per value)."""
    ordered = sorted(shapes, key=lambda s: torch.Size(s).numel(), reverse=True)
    total = sum(torch.Size(s).numel() for s in shapes)
    stride = max(1, round(total / target))
    return ordered[::stride]


def time_adamw(shapes: list[tuple[int, ...]], implementation: str, threads: int, repeats: int) -> float:
    """Median seconds of one AdamW step over fp32 CPU tensors of ``shapes`` (state initialised first)."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator) * 1e-3
    optimizer = torch.optim.AdamW(params, lr=5e-6, weight_decay=0.05, **{implementation: True})
    optimizer.step()  # allocates the moments
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample-params", type=float, default=100e6, help="values timed (default 100M)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="intra-op thread counts")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per case (median)")
    parser.add_argument("--implementations", nargs="+", default=["foreach", "fused"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    counts = parameter_counts(paper_model_on_meta())
    trained = sum(values for _, values in counts["groups"].values())
    tensors = sum(n for n, _ in counts["groups"].values())
    fp32 = 4 * trained
    sample = sample_shapes(counts["trained_shapes"], int(args.sample_params))
    sampled = sum(torch.Size(s).numel() for s in sample)
    result: dict[str, Any] = {
        "trained_tensors": tensors,
        "trained_values": trained,
        "groups": counts["groups"],
        "device_to_host_bytes_per_step": fp32,
        "host_to_device_bytes_per_step": fp32,
        "device_bytes_saved": 2 * fp32,  # exp_avg and exp_avg_sq
        "host_bytes": 4 * fp32,  # masters, gradient buffers, two moments
        "adamw_state_bytes": 2 * fp32,
        "adamw_8bit_state_bytes": adamw_8bit_state_bytes(counts["trained_shapes"]),
        "vae_values": counts["vae_values"],
        "vae_fp32_bytes": 4 * counts["vae_values"],
        "vae_bf16_mode_bytes": 2 * counts["vae_bf16_values"]
        + 4 * (counts["vae_values"] - counts["vae_bf16_values"]),
        "sampled_tensors": len(sample),
        "sampled_values": sampled,
        "timings": [],
        "torch": torch.__version__,
    }
    for implementation in args.implementations:
        for threads in args.threads:
            seconds = time_adamw(sample, implementation, threads, args.repeats)
            result["timings"].append(
                {
                    "implementation": implementation,
                    "threads": threads,
                    "sample_seconds": seconds,
                    "scaled_seconds": seconds * trained / sampled,
                    "ns_per_value": seconds / sampled * 1e9,
                }
            )
            print(
                f"{implementation}, {threads} thread(s): {seconds:.3f} s for {sampled / 1e6:.1f}M", flush=True
            )

    setup = f"sd14-random + paper head, torch {torch.__version__}"
    print(f"\ntrained: {tensors} tensors, {trained:,} values, {setup}")
    print("| quantity | value |\n| --- | --- |")
    print(f"| device -> host per step (fp32 gradients) | {fp32 / 1e9:.3f} GB ({fp32 / GIB:.3f} GiB) |")
    print(f"| host -> device per step (fp32 parameters) | {fp32 / 1e9:.3f} GB ({fp32 / GIB:.3f} GiB) |")
    print(f"| device memory saved (AdamW's two moments) | {2 * fp32 / GIB:.2f} GiB |")
    print(f"| host memory (masters + gradient buffers + moments) | {4 * fp32 / GIB:.2f} GiB |")
    eight = result["adamw_8bit_state_bytes"]
    print(
        f"| AdamW moments fp32 / adamw-8bit (torchao's rule) | {2 * fp32 / GIB:.2f} / {eight / GIB:.2f} GiB |"
    )
    vae32, vae16 = result["vae_fp32_bytes"], result["vae_bf16_mode_bytes"]
    print(f"| VAE weights fp32 / vae_dtype bfloat16 | {vae32 / GIB:.3f} / {vae16 / GIB:.3f} GiB |")
    print("\n| host AdamW | threads | measured on the sample | ns per value | scaled to the trained values |")
    print("| --- | --- | --- | --- | --- |")
    for row in result["timings"]:
        print(
            f"| {row['implementation']} | {row['threads']} | {row['sample_seconds']:.3f} s "
            f"({sampled / 1e6:.1f}M values, {len(sample)} tensors) | {row['ns_per_value']:.2f} | "
            f"{row['scaled_seconds']:.2f} s |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

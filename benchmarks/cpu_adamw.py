"""Time of one AdamW step on the CPU, per core, scaled to the SD v1-4 UNet (the ``offload`` mode's host step).

``offload`` (issue 24) runs torch's AdamW on the host over fp32 master weights, so its step costs what
this measures: ``--params`` fp32 parameters in tensors of ``--tensor-size`` elements, with gradients and
the two AdamW states, one step after a first one that made the states (median of ``--repeats``), with
``--threads`` intra-op threads, for the ``foreach`` and the ``fused`` implementation, scaled linearly to
``--scale-to`` parameters (AdamW is elementwise: its time is proportional to the element count):

    python -m benchmarks.cpu_adamw                       # 100M parameters, 1 thread, scaled to 860M
    python -m benchmarks.cpu_adamw --params 2e6 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import torch


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=float, default=100e6, help="parameters measured (default 100M)")
    parser.add_argument("--tensor-size", type=int, default=1 << 20, help="elements per parameter tensor")
    parser.add_argument("--scale-to", type=float, default=860e6, help="report the time for this many")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1: per core)")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def step_seconds(params: int, tensor_size: int, implementation: str, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of one AdamW step (``foreach`` or ``fused``) over ``params`` fp32
    parameters. The CPU time is the process's: with one thread it is the step's cost on one core even
    when other jobs share the machine (the wall time is then longer)."""
    generator = torch.Generator().manual_seed(0)
    sizes = [tensor_size] * (params // tensor_size) + ([params % tensor_size] if params % tensor_size else [])
    weights = [torch.nn.Parameter(torch.randn(size, generator=generator)) for size in sizes]
    for weight in weights:
        weight.grad = torch.randn(weight.shape, generator=generator)
    optimizer = torch.optim.AdamW(weights, lr=5e-6, weight_decay=0.05, **{implementation: True})
    optimizer.step()  # makes the states
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        optimizer.step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Measure both implementations; print and return CPU seconds per step scaled to ``--scale-to``."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    params = int(args.params)
    scale = args.scale_to / params
    results = {}
    for implementation in ("foreach", "fused"):
        wall, cpu = step_seconds(params, args.tensor_size, implementation, args.repeats)
        results[implementation] = cpu * scale
        print(
            f"AdamW {implementation}: {cpu:.3f} s CPU ({wall:.3f} s wall) for {params / 1e6:.0f}M parameters "
            f"with {args.threads} thread(s) -> {cpu * scale:.2f} s CPU for {args.scale_to / 1e6:.0f}M "
            "(linear scaling)",
            flush=True,
        )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

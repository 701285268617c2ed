"""What the weights' SHA-256 costs at save and load (callbacks/checkpoint_file.py).

``python -m benchmarks.checkpoint_digest [--gib 1]`` prints, for the demo model's checkpoint (tiny
prior, the demo head), the time of the digest alone, of a save through the CLI's ``AtomicCheckpointIO``
(which hashes) and of a load with and without the check; then the hashing rate on ``--gib`` GiB of fp32
weights in 1024 tensors, and the time that rate gives for SD v1-4's 3.4 GB checkpoint. Each time is
the best of a few repeats.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import DEMO_CONFIG, config_head_widths, madm_head
from madm_pl.callbacks import checkpoint_file
from madm_pl.callbacks.checkpoint import AtomicCheckpointIO
from madm_pl.module import MADMModule

#: The demo config's head (configs/demo/base.yaml).
DEMO_HEAD = config_head_widths(DEMO_CONFIG)
SD14_CHECKPOINT_BYTES = 3.4e9


def best_time(run: Callable[[], object], repeats: int) -> float:
    """The shortest of ``repeats`` wall times of ``run()``, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Measure and print; returns the figures (seconds; ``rate_gb_s`` in 1e9 bytes per second)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.checkpoint_digest", description=__doc__)
    parser.add_argument("--gib", type=float, default=1.0, help="GiB of weights for the hashing rate")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    module = MADMModule(task="rgb2infrared", backbone="tiny", head=madm_head(DEMO_HEAD))
    checkpoint = {"state_dict": module.state_dict(), "global_step": 1}
    weights = sum(value.numel() * value.element_size() for value in checkpoint["state_dict"].values())
    plugin = AtomicCheckpointIO()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "demo.ckpt"
        figures = {
            "digest_s": best_time(
                lambda: checkpoint_file.weights_digests(checkpoint["state_dict"]), args.repeats
            ),
            "save_s": best_time(lambda: plugin.save_checkpoint(checkpoint, path), args.repeats),
            "load_checked_s": best_time(lambda: checkpoint_file.load_checkpoint_file(path), args.repeats),
            "load_unchecked_s": best_time(lambda: torch.load(path, weights_only=True), args.repeats),
        }
        size = path.stat().st_size
    print(
        f"demo checkpoint: {len(checkpoint['state_dict'])} tensors, {weights / 1e6:.1f} MB of weights, "
        f"{size / 1e6:.1f} MB file: digest {figures['digest_s'] * 1e3:.1f} ms, save (with digest) "
        f"{figures['save_s'] * 1e3:.1f} ms, load with check {figures['load_checked_s'] * 1e3:.1f} ms, "
        f"without {figures['load_unchecked_s'] * 1e3:.1f} ms"
    )
    count = 1024
    per_tensor = max(1, int(args.gib * 2**30 / 4 / count))
    big = {f"w{i}": torch.randn(per_tensor) for i in range(count)}
    total = count * per_tensor * 4
    seconds = best_time(lambda: checkpoint_file.weights_digests(big), max(1, args.repeats // 2))
    figures["rate_gb_s"] = total / 1e9 / seconds
    figures["sd14_s"] = SD14_CHECKPOINT_BYTES / 1e9 / figures["rate_gb_s"]
    print(
        f"hashing {total / 2**30:.2f} GiB in {count} tensors: {seconds:.2f} s = "
        f"{figures['rate_gb_s']:.2f} GB/s ({checkpoint_file._THREADS} threads); SD v1-4's 3.4 GB at that "
        f"rate: {figures['sd14_s']:.1f} s at save and again at load"
    )
    return figures


if __name__ == "__main__":
    main()

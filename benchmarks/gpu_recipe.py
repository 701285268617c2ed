"""Peak memory and speed of the one-GPU paper recipe: eager versus a compiled UNet.

The real ``MADMModule`` (all of METHOD.md §4: EMA teacher with DPLG, source and mixed student passes,
LPLR, ClassMix, strong augmentation) trains through a Lightning ``Trainer`` with the settings of
``configs/rgb2*.yaml``: 512x512 crops, batch 1 x 2 accumulated micro-batches (effective batch 2),
bf16-mixed, UNet gradient checkpointing, head activation checkpointing, paper-width head (embed 256,
projections 512/128, width 128), gradient clipping 0.01, AdamW. The backbone is ``sd14-random`` (SD
v1-4's architecture, random weights: the same memory and time as the real weights) and the data are
random tensors, so nothing needs downloading:

    python -m benchmarks.gpu_recipe                       # GPU: every mode, 5 + 20 iterations each
    python -m benchmarks.gpu_recipe --modes recipe eager  # GPU: only these modes
    python -m benchmarks.gpu_recipe --json $OUT/recipe.json
    python -m benchmarks.gpu_recipe --smoke               # CPU, tiny stack, 64x64, narrow head: seconds
    python -m benchmarks.gpu_recipe --modes recipe --adamw-implementation fused --channels-last --sdpa flash

Modes (what differs from the recipe; the names of docs/PAPER_RECIPES.md §6 and benchmarks/gpu_check.py):

- ``recipe``: the configs as they are: eager, UNet gradient checkpointing and head activation
  checkpointing (memory for time).
- ``offload``: the 24 GB mode: ``optimizer: adamw-offload`` (AdamW's state and fp32 masters in host
  memory) and ``vae_dtype: bfloat16`` (the frozen VAE in the precision the step computes it in).
- ``offload-fused``: ``offload`` with ``adamw_implementation: fused`` (the host AdamW in one fused kernel
  instead of foreach: ~10x faster on a CPU, rounding-level differences).
- ``adamw-8bit``: ``optimizer: adamw-8bit`` (torchao's 8-bit moments; the first step compiles them).
- ``eager``: no checkpointing (a card with room: about 80 GiB).
- ``compiled``: no checkpointing, ``compile_unet`` (``torch.compile`` of the UNet).
- ``compiled-ckpt``: the recipe's checkpointing with ``compile_unet``.

Switches that apply to every mode, to measure speed with (each changes numbers at rounding level, none is
the recipe's default): ``--adamw-implementation fused`` (AdamW's fused kernel on the device),
``--channels-last`` (every 4-D weight, hence the convolutions, in channels-last layout), ``--sdpa`` (the
attention kernel: flash, efficient, cudnn or math; default: torch's choice). ``--gradient-check`` runs the
compiled modes' gradient check before the timed run (default), skips it, or runs only it.

Per mode, the first ``--warmup`` iterations (compilation, cuDNN autotuning, AdamW state allocation) are
not timed; then ``--steps`` iterations are. ``peak_allocated_gib`` is
``torch.cuda.max_memory_allocated`` over the timed iterations (weights, gradients and optimiser state
included: what must fit on the card), ``peak_reserved_gib`` what the caching allocator held. The
compiled mode first checks its gradients against eager (``tap_gradient_errors``, fp32, one image): on
the CPU, torch 2.13's inductor returns wrong UNet gradients through two of the three taps, so a
compiled speed-up only counts where these errors are small (about 1e-5 or less in fp32).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader

from benchmarks.common import (
    BARE_TRAINER,
    SMOKE_HEAD,
    RandomPairs,
    config_head_widths,
    gib,
    madm_head,
    synchronize,
)
from madm_pl.labels import get_task
from madm_pl.module import MADMModule

PAPER_HEAD = config_head_widths()  # configs/base.yaml's


@dataclass(frozen=True)
class Mode:
    """What a mode sets in ``MADMModule`` (the rest is the recipe's)."""

    checkpointing: bool  # UNet gradient checkpointing and head activation checkpointing
    compile_unet: bool = False
    optimizer: str = "adamw"
    vae_dtype: str = "float32"
    adamw_implementation: str | None = None  # None: the run's --adamw-implementation

    @property
    def compiles(self) -> bool:
        """Whether the run calls ``torch.compile`` (the UNet, or torchao's 8-bit AdamW step)."""
        return self.compile_unet or self.optimizer == "adamw-8bit"


MODES = {
    "recipe": Mode(checkpointing=True),
    "offload": Mode(checkpointing=True, optimizer="adamw-offload", vae_dtype="bfloat16"),
    "offload-fused": Mode(
        checkpointing=True, optimizer="adamw-offload", vae_dtype="bfloat16", adamw_implementation="fused"
    ),
    "adamw-8bit": Mode(checkpointing=True, optimizer="adamw-8bit"),
    "eager": Mode(checkpointing=False),
    "compiled": Mode(checkpointing=False, compile_unet=True),
    "compiled-ckpt": Mode(checkpointing=True, compile_unet=True),
}
#: What a run without ``--modes`` measures (benchmarks/gpu_check.py runs the memory modes).
DEFAULT_MODES = ("recipe", "eager", "compiled", "compiled-ckpt")
#: ``--sdpa`` choices -> torch's SDPBackend names.
SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="CPU, tiny stack, 64x64, narrow head, eager only: a quick check"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=tuple(MODES), help=f"default: {' '.join(DEFAULT_MODES)} (smoke: recipe)"
    )
    parser.add_argument("--task", default="rgb2infrared", help="sets the classes and the DPLG/LPLR defaults")
    parser.add_argument("--warmup", type=int, help="untimed iterations per mode (default 5; smoke 1)")
    parser.add_argument("--steps", type=int, help="timed iterations per mode (default 20; smoke 2)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument(
        "--adamw-implementation",
        choices=("foreach", "fused"),
        default="foreach",
        help="AdamW's kernels (default foreach, the recipe's; a mode may set its own)",
    )
    parser.add_argument("--channels-last", action="store_true", help="4-D weights in channels-last layout")
    parser.add_argument("--sdpa", choices=tuple(SDPA_BACKENDS), help="attention kernel (default: torch's)")
    parser.add_argument(
        "--gradient-check",
        choices=("before", "skip", "only"),
        default="before",
        help="compiled modes: the tap gradient check before the timed run, not at all, or only it",
    )
    args = parser.parse_args(argv)
    args.modes = args.modes or (["recipe"] if args.smoke else list(DEFAULT_MODES))
    args.warmup = (1 if args.smoke else 5) if args.warmup is None else args.warmup
    args.steps = (2 if args.smoke else 20) if args.steps is None else args.steps
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1 (the first iteration allocates the AdamW state)")
    return args


class IterationTimer(Callback):
    """Times the iterations after ``warmup`` and resets the CUDA peak memory when timing starts."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.elapsed = 0.0
        self.iterations = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-iteration
        if trainer.global_step == self.warmup:
            synchronize(pl_module.device)
            if pl_module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        synchronize(pl_module.device)
        if self.start is not None:
            self.elapsed = time.perf_counter() - self.start
            self.iterations = trainer.global_step - self.warmup


def build_module(args: argparse.Namespace, mode: Mode, compile_unet: bool | None = None) -> MADMModule:
    """The module of the recipe (``configs/rgb2*.yaml``) with a mode's switches; paper head (smoke: tiny)."""
    module = MADMModule(
        task=args.task,
        backbone="tiny" if args.smoke else "sd14-random",
        unet_gradient_checkpointing=mode.checkpointing,
        head=madm_head(SMOKE_HEAD if args.smoke else PAPER_HEAD, activation_checkpointing=mode.checkpointing),
        compile_unet=mode.compile_unet if compile_unet is None else compile_unet,
        vae_dtype=mode.vae_dtype,
        optimizer=mode.optimizer,
        adamw_implementation=mode.adamw_implementation or args.adamw_implementation,
    )
    if args.channels_last:
        module.to(memory_format=torch.channels_last)
    return module


@contextlib.contextmanager
def run_context(args: argparse.Namespace, mode: Mode) -> Iterator[None]:
    """The attention kernel of ``--sdpa``; in ``--smoke``, ``torch.compile`` run eagerly (its plumbing in
    seconds: the CPU's inductor takes minutes and gets the UNet's tap gradients wrong, section 7)."""
    with contextlib.ExitStack() as stack:
        if args.sdpa is not None:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[args.sdpa])))
        if args.smoke and mode.compiles:
            stack.enter_context(torch.compiler.set_stance("force_eager"))
        yield


def tap_gradient_errors(reference: MADMModule, other: MADMModule, image: torch.Tensor) -> list[float]:
    """Per UNet tap, ``|g_other - g_reference| / |g_reference|`` of the gradient of ``conv_in.weight``.

    The loss is the mean square of one tap, in fp32, so the gradient crosses the UNet from that tap
    back to its input. (torch 2.13's CPU inductor gets taps s16 and s8 wrong: 50-80% errors.)

    Args:
        reference: the eager module.
        other: the same weights, e.g. with a compiled UNet.
        image: (1,3,H,W) float in [-1,1].

    Returns:
        [s32, s16, s8] relative errors.
    """

    def gradient(module: MADMModule, tap: int) -> torch.Tensor:
        # One forward per tap: a compiled backward frees its buffers, so its graph cannot be retained.
        cond, time_offset = module.student.conditioning(module.backbone.uncond)
        features = module.backbone(image, 0, cond, time_offset).features
        return torch.autograd.grad(
            features[tap].float().square().mean(), module.backbone.unet.conv_in.weight
        )[0]

    errors = []
    for tap in range(3):
        expected, found = gradient(reference, tap), gradient(other, tap)
        errors.append(float((found - expected).norm() / expected.norm()))
    return errors


def compiled_gradient_errors(
    args: argparse.Namespace, device: torch.device, size: int, mode: Mode
) -> list[float]:
    """``tap_gradient_errors`` of a compiled UNet (as ``configure_model`` compiles it) against eager."""
    with device:
        eager = build_module(args, mode, compile_unet=False)
        compiled = build_module(args, mode, compile_unet=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.configure_model()
    eager.to(device)
    compiled.to(device)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    errors = tap_gradient_errors(eager, compiled, image)
    del eager, compiled
    _free(device)
    return errors


def run_mode(args: argparse.Namespace, mode_name: str, device: torch.device) -> dict[str, Any]:
    """Train ``warmup + steps`` iterations in one mode; return its row."""
    size = 64 if args.smoke else 512
    mode = MODES[mode_name]
    row: dict[str, Any] = {
        "mode": mode_name,
        "iterations": 0,
        "seconds_per_iteration": None,
        "iterations_per_second": None,
        "peak_allocated_gib": None,
        "peak_reserved_gib": None,
        "tap_gradient_errors": None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "switches": switches(args, mode),
    }
    with run_context(args, mode):
        if mode.compile_unet and args.gradient_check != "skip":
            row["tap_gradient_errors"] = compiled_gradient_errors(args, device, size, mode)
        if args.gradient_check == "only":
            return row
        row.update(timed_fit(args, mode, device, size))
    return row


def switches(args: argparse.Namespace, mode: Mode) -> list[str]:
    """The measurement switches a row ran with (empty: the mode as defined)."""
    found = []
    if (mode.adamw_implementation or args.adamw_implementation) != "foreach":
        found.append("fused AdamW")
    if args.channels_last:
        found.append("channels-last")
    if args.sdpa is not None:
        found.append(f"sdpa {args.sdpa}")
    return found


def timed_fit(args: argparse.Namespace, mode: Mode, device: torch.device, size: int) -> dict[str, Any]:
    """Fit ``warmup + steps`` iterations; the timed iterations' speed and peak memory."""
    with device:  # initialising 860M parameters on the GPU is much faster than on the CPU
        module = build_module(args, mode)
    timer = IterationTimer(args.warmup)
    trainer = Trainer(
        accelerator="cpu" if device.type == "cpu" else "gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=args.warmup + args.steps,
        accumulate_grad_batches=2,
        gradient_clip_val=0.01,
        gradient_clip_algorithm="norm",
        **BARE_TRAINER,
        callbacks=[timer],
    )
    batches = 2 * (args.warmup + args.steps)
    loader = DataLoader(RandomPairs(size, get_task(args.task).num_classes, batches), batch_size=1)
    trainer.fit(module, train_dataloaders=loader)
    row: dict[str, Any] = {
        "iterations": timer.iterations,
        "seconds_per_iteration": timer.elapsed / max(timer.iterations, 1),
        "iterations_per_second": timer.iterations / timer.elapsed if timer.elapsed else 0.0,
    }
    if device.type == "cuda":
        row["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    del trainer, module
    _free(device)
    return row


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the modes, print a markdown table, return (and optionally write) the rows."""
    args = parse_args(argv)
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures a GPU (use --smoke for a CPU check)")
    rows = []
    for mode in args.modes:
        rows.append(run_mode(args, mode, device))
        print(f"{mode}: {json.dumps(rows[-1])}", flush=True)  # a row survives a later mode's failure
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    size = 64 if args.smoke else 512
    header = (
        f"{'tiny' if args.smoke else 'sd14-random'}, {args.task}, {size}x{size}, batch 1 x 2 accumulated, "
        f"bf16-mixed, paper-width head, {name}, torch {torch.__version__}"
    )
    print(f"\n{header}\n")
    print(
        "| mode | iterations timed | s / iteration | iterations / s | peak allocated GiB | peak reserved GiB "
        "| UNet gradient error vs eager (s32, s16, s8) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        errors = row["tap_gradient_errors"]
        shown = "-" if errors is None else ", ".join(f"{error:.1e}" for error in errors)
        mode = " + ".join([row["mode"], *row["switches"]])
        print(
            f"| {mode} | {row['iterations']} | {number(row['seconds_per_iteration'])} | "
            f"{number(row['iterations_per_second'])} | {gib(row['peak_allocated_gib'])} | "
            f"{gib(row['peak_reserved_gib'])} | {shown} |"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"setup": header, "rows": rows}, indent=2) + "\n")
    return rows


def number(value: float | None) -> str:
    """A time column: 3 decimals, or ``"-"`` where nothing was timed (a gradient check alone)."""
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main(sys.argv[1:])

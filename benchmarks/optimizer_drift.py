"""How far an approximate optimizer mode moves the training from fp32 AdamW (issue 24, item 4).

Trains the demo recipe (``configs/demo/<task>.yaml``: the tiny prior, 64x64 crops, batch 2, lr 1e-3, the
full method) twice from the same seed, once with ``model.init_args.optimizer=adamw`` and once with the
mode under test (default ``adamw-8bit``), scoring the target test split every ``--every`` iterations.
Then compares the trained tensors (``MADMModule.parameter_groups``) of the two runs:

- max |w_mode - w_adamw| over all values, and the same relative to the largest change AdamW itself made
  (max |w_adamw - w_start|);
- ||w_mode - w_adamw|| / ||w_adamw - w_start|| (the drift against the training's own displacement), per
  part (UNet, conditioning, head);

    python -m benchmarks.optimizer_drift                        # rgb2infrared, 600 iterations (~25 min)
    python -m benchmarks.optimizer_drift --steps 200 --json benchmarks/results/adamw_8bit_drift.json
    python -m benchmarks.optimizer_drift --optimizer adamw --implementation fused   # the control

One thread per run, the runs one after the other (each ~11 min on a quiet 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def train(
    task: str, optimizer: str, steps: int, every: int, seed: int, implementation: str = "foreach"
) -> dict[str, Any]:
    """One demo run; its start and end weights of the trained tensors and the mIoU curve."""
    import torch
    from lightning.pytorch import Callback, Trainer, seed_everything

    from benchmarks.common import BARE_TRAINER
    from madm_pl.cli import instantiate, parse_config

    torch.set_num_threads(1)
    config = parse_config(
        [
            "-c",
            str(REPO / "configs" / "demo" / f"{task}.yaml"),
            f"--model.init_args.optimizer={optimizer}",
            f"--model.init_args.adamw_implementation={implementation}",
        ]
    )
    seed_everything(seed, verbose=False)
    module = instantiate(config.model)
    data = instantiate(config.data)
    names = {id(p): n for n, p in module.named_parameters()}
    trained = [names[id(p)] for group in module.parameter_groups() for p in group["params"]]
    start = {name: value.detach().clone() for name, value in module.named_parameters() if name in trained}
    curve: list[dict[str, float]] = []

    class Record(Callback):
        def on_validation_end(self, trainer: Trainer, pl_module: Any) -> None:
            curve.append(
                {"iteration": trainer.global_step, "miou": 100 * float(pl_module.last_scores["miou"])}
            )

    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        gradient_clip_val=config.trainer.gradient_clip_val,
        gradient_clip_algorithm=config.trainer.gradient_clip_algorithm,
        **{**BARE_TRAINER, "limit_val_batches": 1.0},
        val_check_interval=every,
        check_val_every_n_epoch=None,
        callbacks=[Record()],
    )
    began = time.perf_counter()
    trainer.fit(module, data)
    end = {name: value.detach().clone() for name, value in module.named_parameters() if name in trained}
    return {"start": start, "end": end, "curve": curve, "seconds": time.perf_counter() - began}


def compare(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """The drift of ``other``'s end weights from ``reference``'s (see the module docstring)."""
    import torch

    parts: dict[str, list[str]] = {}
    for name in reference["end"]:
        part = "unet" if name.startswith("backbone.unet") else name.split(".")[1]  # conditioning, head
        parts.setdefault(part, []).append(name)

    def flat(weights: dict[str, Any], names: list[str]) -> Any:
        return torch.cat([weights[n].flatten().double() for n in names])

    result: dict[str, Any] = {}
    for part, names in {"all": list(reference["end"]), **parts}.items():
        start, ref, mine = (flat(w, names) for w in (reference["start"], reference["end"], other["end"]))
        moved = (ref - start).abs()
        drift = (mine - ref).abs()
        result[part] = {
            "values": int(ref.numel()),
            "max_abs_difference": float(drift.max()),
            "max_abs_adamw_change": float(moved.max()),
            "max_difference_over_max_change": float(drift.max() / moved.max()),
            "difference_norm_over_change_norm": float(drift.norm() / moved.norm()),
            "difference_norm_over_weight_norm": float(drift.norm() / ref.norm()),
        }
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="rgb2infrared")
    parser.add_argument("--optimizer", default="adamw-8bit", help="the mode compared with adamw")
    parser.add_argument(
        "--implementation",
        default="foreach",
        choices=("foreach", "fused"),
        help="the compared run's AdamW kernels (adamw vs adamw --implementation fused: the drift that "
        "rounding alone causes, the control)",
    )
    parser.add_argument("--steps", type=int, default=600, help="iterations (the demo's 600)")
    parser.add_argument("--every", type=int, default=200, help="score the test split every so many")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    compared = (
        args.optimizer if args.implementation == "foreach" else f"{args.optimizer}+{args.implementation}"
    )
    runs = {
        "adamw": train(args.task, "adamw", args.steps, args.every, args.seed),
        compared: train(args.task, args.optimizer, args.steps, args.every, args.seed, args.implementation),
    }
    result = {
        "task": args.task,
        "optimizer": compared,
        "steps": args.steps,
        "seed": args.seed,
        "curves": {name: run["curve"] for name, run in runs.items()},
        "seconds": {name: run["seconds"] for name, run in runs.items()},
        "drift": compare(runs["adamw"], runs[compared]),
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

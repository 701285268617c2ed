"""How strongly LPLR pulls on the network, against the segmentation loss (issue 7's ingredient study).

On one source batch of the synthetic world (the demo's crops), for a backbone at initialisation:
the source cross-entropy and the source LPLR loss, and the norm of each one's gradient over the
trainable parameters (UNet, conditioning, head), overall and per part. Training clips the sum of all
gradients to a norm of 0.01 (the paper's value), so the share of each term in that sum decides how much
of every step goes to segmentation.

    python -m benchmarks.lplr_gradients                         # priors/tiny and random tiny weights
    python -m benchmarks.lplr_gradients --backbones priors/tiny --task rgb2event
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from madm_pl.cli import instantiate, parse_config
from madm_pl.method.lplr import lplr_loss
from madm_pl.method.segmentation import segmentation_loss
from madm_pl.module import MADMModule


def unet_gradient(module: MADMModule, loss: torch.Tensor) -> torch.Tensor:
    """d loss / d (trainable UNet parameters), flattened into one vector."""
    params = [p for p in module.backbone.unet.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])


def gradient_norms(module: MADMModule, loss: torch.Tensor) -> dict[str, float]:
    """Norm of d loss / d parameters per part (``unet``, ``conditioning``, ``head``) and overall."""
    parts = {
        "unet": [p for p in module.backbone.unet.parameters() if p.requires_grad],
        "conditioning": list(module.student.conditioning.parameters()),
        "head": list(module.student.head.parameters()),
    }
    flat = [p for params in parts.values() for p in params]
    grads = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
    norms, start = {}, 0
    for name, params in parts.items():
        part = [g for g in grads[start : start + len(params)] if g is not None]
        norms[name] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in part]))) if part else 0.0
        start += len(params)
    norms["all"] = sum(v**2 for v in norms.values()) ** 0.5
    return norms


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="rgb2infrared")
    parser.add_argument("--backbones", nargs="+", default=["priors/tiny", "tiny"])
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--batches", type=int, default=4, help="batches averaged")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # The demo config as madm-pl fit parses it (its base included), the data under --data.
    config = parse_config(["-c", str(Path("configs", "demo", f"{args.task}.yaml"))])
    roots = {
        key: str(args.data / Path(config.data.init_args[key]).name) for key in ("source_root", "target_root")
    }
    data = instantiate(config.data, **roots)
    data.setup("fit")
    batches = [b for _, b in zip(range(args.batches), data.train_dataloader(), strict=False)]
    rows = []
    for backbone in args.backbones:
        torch.manual_seed(0)
        module = instantiate(config.model, backbone=backbone)
        module.train()
        totals: dict[str, float] = {}
        for batch in batches:
            logits, out = module.segment(module.student, batch["source_image"])
            ce = segmentation_loss(logits, batch["source_label"])
            target = module.palette_latent(batch["source_label"])
            lplr = lplr_loss(out.latent, target, batch["source_label"])
            values = {"ce": float(ce), "lplr": float(lplr), "palette_latent_std": float(target.std())}
            for name, loss in (("ce", ce), ("lplr", lplr)):
                for part, norm in gradient_norms(module, loss).items():
                    values[f"grad_{name}_{part}"] = norm
            values["unet_cosine"] = float(
                torch.nn.functional.cosine_similarity(
                    unet_gradient(module, ce), unet_gradient(module, lplr), dim=0
                )
            )
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value / len(batches)
        totals["backbone"] = backbone
        rows.append(totals)

    print(f"\n{args.task}, demo config, {args.batches} source batches, at initialisation\n")
    print(
        "| backbone | CE | LPLR | palette latent std | ‖∇CE‖ (UNet / head) | ‖∇LPLR‖ (UNet / head) "
        "| ‖∇LPLR‖ / ‖∇CE‖ | cosine of the UNet gradients |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| `{r['backbone']}` | {r['ce']:.3f} | {r['lplr']:.4f} | {r['palette_latent_std']:.3f} | "
            f"{r['grad_ce_all']:.3g} ({r['grad_ce_unet']:.3g} / {r['grad_ce_head']:.3g}) | "
            f"{r['grad_lplr_all']:.3g} ({r['grad_lplr_unet']:.3g} / {r['grad_lplr_head']:.3g}) | "
            f"{r['grad_lplr_all'] / r['grad_ce_all']:.2f} | {r['unet_cosine']:+.3f} |"
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

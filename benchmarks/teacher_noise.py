"""Does DPLG's noise make a teacher's pseudo-labels better? (issue 25, probe c)

A segmenter trained on the RGB source only (the adaptation table's ``source-only`` run: the demo config,
``python -m benchmarks.adapt_table``'s recipe) stands in for the teacher at the start of adaptation. After
each of ``--ages`` iterations it labels the 100 target test images (64x128, with their labels) at every
``--timesteps`` t, as DPLG's teacher does: the clean target latent noised at t with the fixed noise, the
UNet at t, in train mode (BatchNorm batch statistics over ``--batch`` images, dropout on, the same dropout
draws at every t), as the recipe's teacher runs. Per t: pixel accuracy of the argmax, mIoU, and q (the
share of pixels whose top probability is >= the recipe's 0.968, the pseudo-label weight). The same
scenes rendered in RGB (the synthetic world renders every scene in every modality) give the no-gap
reference. Training is not disturbed: the labelling runs on a copy of the student, with the global random
state forked.

    python -m benchmarks.teacher_noise --seeds 0 1 2 --ages 100 200 300 --timesteps 0 25 50

Without LPLR (source-only's switches) the head's finest level is the VAE encoder's feature of the clean
image, which DPLG's noise does not reach (METHOD.md §3); ``--lplr`` trains the source-only run with the
source LPLR term (``model.lplr_source: true``), so that the head reads the decoded UNet output, which the
noise does reach, as in MADM (results to ``teacher_noise_lplr.json`` by default).

``--control-amplitude`` adds the positive control ``rgb+pattern``: the RGB view with ``prior_probe``'s
fixed latent pattern added to every image's latent (a gap of the kind the diffusion forward process
models), to see whether this probe can show noise helping at all; it is not evidence about the real
modalities.

Writes the rows to ``--out`` (JSON) and prints a table per age: mean ± std over the seeds and the paired
change from t = 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.adapt.runs import build_run, demo_config, run_options
from benchmarks.common import write_atomic


def rgb_views(data: Any, task: str, size: tuple[int, int], data_root: str) -> torch.Tensor:
    """The RGB renderings of the target test scenes, in the test split's order, resized as the data is.

    Checks that re-rendering the target modality reproduces the stored image, so that the RGB view shows
    the same scene.

    Args:
        data: the datamodule, set up for validation (its ``val_dataset`` is the target test split).
        size: the test size (height, width).
        data_root: the synthetic world's folder (its ``synthetic.json`` gives the rendering size).

    Returns:
        (N,3,H,W) float in [0,1].
    """
    from madm_pl.data.transforms import PILResize, image_to_tensor
    from madm_pl.labels import get_task
    from madm_pl.synthetic import render_scene, scene_seed_sequence
    from madm_pl.synthetic.constants import SPLIT_TARGET_TEST
    from madm_pl.synthetic.sensors import render_modality

    modality = {"fmb": "infrared", "deliver": "depth", "dsec": "event"}[get_task(task).target_dataset]
    options = json.loads(Path(data_root, "synthetic.json").read_text())["options"]
    resize = PILResize(*size)
    views = []
    for index in range(len(data.val_dataset)):
        item = data.val_dataset[index]
        scene_index = int(Path(item["name"]).stem) - 1
        seed_sequence = scene_seed_sequence(options["seed"], SPLIT_TARGET_TEST, modality, scene_index)
        scene = render_scene(seed_sequence, options["height"], options["width"])
        own = render_modality(scene, modality)
        own = np.repeat(own[:, :, None], 3, axis=2) if own.ndim == 2 else own
        if not torch.equal(image_to_tensor(resize.apply(own)), item["image"]):
            raise ValueError(f"re-rendering {item['name']} does not give the stored image: another world?")
        views.append(image_to_tensor(resize.apply(render_modality(scene, "rgb"))))
    return torch.stack(views)


@torch.no_grad()
def label_at(
    module: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    timestep: int,
    batch: int,
    latent_offset: torch.Tensor | None = None,
) -> dict:
    """The student's (copied) pseudo-labels of ``images`` at ``timestep``, scored.

    Args:
        images: (N,3,H,W) float in [0,1]; labels: (N,H,W) int64 with 255 ignored.
        latent_offset: (1,4,h,w) float added to every image's latent before the noise (the latent
            control, ``prior_probe.latent_pattern``); the VAE encoder level (LPLR off) is left clean.

    Returns:
        ``{"accuracy", "miou", "q"}``: pixel accuracy and mIoU (%) of the argmax, and the mean per-image
        share of pixels at or above the pseudo-label threshold.
    """
    from madm_pl.labels import IGNORE_INDEX
    from madm_pl.method.metrics import miou_from_confusion
    from madm_pl.method.pseudo_label import pseudo_label

    net = copy.deepcopy(module.student).train()  # the recipe's teacher mode; the copy keeps BN stats apart
    classes = module.task.num_classes
    confusion = torch.zeros(classes * classes, dtype=torch.long)
    weights = []
    encode = module.backbone.encode
    if latent_offset is not None:
        module.backbone.encode = lambda image: encode(image) + latent_offset.to(image.device)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(1234)  # the same dropout draws at every t
            for start in range(0, len(images), batch):
                logits, _ = module.segment(net, images[start : start + batch], timestep)
                prediction, q = pseudo_label(logits, module.hparams.pseudo_label_threshold)
                target = labels[start : start + batch]
                valid = target != IGNORE_INDEX
                confusion += torch.bincount(target[valid] * classes + prediction[valid], minlength=classes**2)
                weights += q.tolist()
    finally:
        module.backbone.encode = encode
    matrix = confusion.reshape(classes, classes)
    return {
        "accuracy": 100 * matrix.diagonal().sum().item() / max(matrix.sum().item(), 1),
        "miou": 100 * miou_from_confusion(matrix)[0],
        "q": statistics.fmean(weights),
    }


def run_seed(
    task: str,
    seed: int,
    ages: Sequence[int],
    timesteps: Sequence[int],
    batch: int,
    data_root: str,
    lplr: bool = False,
    control: float | None = None,
) -> list:
    """Train the source-only run of ``seed`` (with the source LPLR term if ``lplr``) to ``max(ages)`` and
    label the test views at every age and t."""
    from lightning.pytorch import Callback, Trainer

    from madm_pl.cli import instantiate

    torch.set_num_threads(1)
    overrides = {"model.lplr_source": True} if lplr else {}
    setup = {"iterations": max(ages), "every": max(ages), "backbone": "priors/tiny", "data": data_root,
             "overrides": overrides}  # fmt: skip
    job = {"task": task, "method": "source-only", "seed": seed, "setup": setup, "key": ""}
    module, data, trainer_args = build_run(job)
    config = demo_config(task, run_options(task, "source-only", seed, setup))
    probe_data = instantiate(config.data)  # the run's data options; its own copy for the test images
    probe_data.setup("validate")
    size = tuple(config.data.init_args.test_size)
    items = [probe_data.val_dataset[i] for i in range(len(probe_data.val_dataset))]
    labels = torch.stack([item["label"] for item in items])
    views = {
        "target": torch.stack([item["image"] for item in items]),
        "rgb (same scenes)": rgb_views(probe_data, task, size, data_root),
    }
    offsets: dict[str, torch.Tensor | None] = dict.fromkeys(views)
    if control is not None:
        from benchmarks.prior_probe import latent_pattern

        views["rgb+pattern"] = views["rgb (same scenes)"]
        latent_size = module.backbone.encode(views["target"][:1] * 2 - 1).shape
        offsets["rgb+pattern"] = latent_pattern(latent_size[1], latent_size[2], latent_size[3], control)
    rows: list[dict] = []

    class Label(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch_data, batch_idx) -> None:
            if trainer.global_step in ages and not any(r["age"] == trainer.global_step for r in rows):
                for view, images in views.items():
                    for t in timesteps:
                        scores = label_at(pl_module, images, labels, t, batch, offsets[view])
                        rows.append(
                            {"seed": seed, "age": trainer.global_step, "view": view, "t": t, **scores}
                        )

    trainer_args.update(callbacks=[Label()], limit_val_batches=0)
    Trainer(**trainer_args).fit(module, data)
    return rows


def table(rows: list[dict], ages: Sequence[int], timesteps: Sequence[int]) -> str:
    """Markdown: per age and view, accuracy / q per t (mean ± std over seeds) and the paired change."""
    lines = ["| age | view | " + " | ".join(f"t = {t}: acc / q" for t in timesteps) + " | acc change t = "
             f"{max(timesteps)} - 0 |", "| --- | --- |" + " --- |" * (len(timesteps) + 1)]  # fmt: skip
    views = list(dict.fromkeys(r["view"] for r in rows))
    for age in ages:
        for view in views:
            cells = []
            for t in timesteps:
                chosen = [r for r in rows if r["age"] == age and r["view"] == view and r["t"] == t]
                cells.append(
                    f"{_spread([r['accuracy'] for r in chosen])} / {_spread([r['q'] for r in chosen], 3)}"
                )
            by_seed = {
                (r["seed"], r["t"]): r["accuracy"] for r in rows if r["age"] == age and r["view"] == view
            }
            seeds = sorted({s for s, _ in by_seed})
            change = [by_seed[(s, max(timesteps))] - by_seed[(s, 0)] for s in seeds if (s, 0) in by_seed]
            cells.append(_spread(change, 1, signed=True) if change else "-")
            lines.append(f"| {age} | {view} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spread(values: Sequence[float], digits: int = 1, signed: bool = False) -> str:
    form = f"{{:{'+' if signed else ''}.{digits}f}}"
    if len(values) < 2:
        return form.format(values[0])
    return f"{form.format(statistics.fmean(values))} ± {statistics.stdev(values):.{digits}f}"


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rgb2infrared")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ages", nargs="+", type=int, default=[100, 200, 300])
    parser.add_argument("--timesteps", nargs="+", type=int, default=[0, 25, 50])
    parser.add_argument("--batch", type=int, default=2, help="images per teacher forward (the recipe's 2)")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument(
        "--lplr", action="store_true", help="the source LPLR term on: the head reads the decode"
    )
    parser.add_argument(
        "--control-amplitude",
        type=float,
        default=None,
        help="add the positive control: the RGB view with prior_probe's latent pattern of this amplitude",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/results/teacher_noise[_lplr].json"
    )
    args = parser.parse_args(argv)
    if args.out is None:
        control = "" if args.control_amplitude is None else "_control"
        args.out = Path(f"benchmarks/results/teacher_noise{'_lplr' if args.lplr else ''}{control}.json")
    if 0 not in args.timesteps:
        parser.error("--timesteps must include 0 (the changes are from t = 0)")
    rows = []
    for seed in args.seeds:
        rows += run_seed(
            args.task,
            seed,
            sorted(args.ages),
            sorted(args.timesteps),
            args.batch,
            args.data,
            args.lplr,
            args.control_amplitude,
        )
        write_atomic(
            args.out, json.dumps({"options": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1)
        )
    print(table(rows, sorted(args.ages), sorted(args.timesteps)))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

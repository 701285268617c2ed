"""A figure of what a trained model does: target image, pseudo-label, prediction, ground truth.

``python -m madm_pl.visualize --runs runs/demo/rgb2infrared`` draws the newest run's ``last.ckpt`` into
that run's folder (``runs/demo/rgb2infrared/version_<n>/figure.png``); ``--ckpt`` picks a checkpoint,
``--out`` another file (``make figure TASK=rgb2infrared [OUT=...]`` after ``make train``; the README's
``docs/figures/demo_<task>.png`` is written only when asked for). Rows are target test images; the
pseudo-label is the EMA teacher's argmax on the clean image (what DPLG converges to at t = 0), the
prediction is the student's (METHOD.md §4.7), labels are drawn in the task's palette, ignored pixels
black.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from madm_pl.callbacks.checkpoint import newest_last_checkpoint
from madm_pl.callbacks.checkpoint_file import load_checkpoint_file
from madm_pl.callbacks.images import class_legend, title_font_size, titled_grid
from madm_pl.data import CrossModalityDataModule
from madm_pl.errors import run_reporting_errors, split_debug
from madm_pl.labels import colorize
from madm_pl.module import MADMModule

PROGRAM = "python -m madm_pl.visualize"


@torch.no_grad()
def figure_rows(module: MADMModule, batch: dict[str, torch.Tensor]) -> np.ndarray:
    """One row per image: image | pseudo-label | prediction | ground truth.

    Args:
        module: a trained module (eval mode is set here).
        batch: ``{"image": (B,3,H,W) in [0,1], "label": (B,H,W) int64}`` target test images.

    Returns:
        (B*H, 4*W, 3) uint8.
    """
    module.eval()
    image = batch["image"]
    teacher = module.teacher if module.teacher is not None else module.student
    pseudo_label = module.segment(teacher, image)[0].argmax(1)
    prediction = module(image).argmax(1)
    palette = module.task.palette
    columns = [
        (image.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8),
        colorize(pseudo_label.numpy(), palette),
        colorize(prediction.numpy(), palette),
        colorize(batch["label"].numpy(), palette),
    ]
    rows = np.concatenate(columns, axis=2)  # (B,H,4W,3)
    return rows.reshape(-1, *rows.shape[2:])


def _settings(hparams: dict) -> dict:
    return {k: v for k, v in hparams.items() if not k.startswith("_")}  # drop LightningCLI's keys


def module_from_checkpoint(checkpoint: dict) -> MADMModule:
    """The module a loaded ``madm-pl fit`` checkpoint holds: built from its hyper-parameters, then its
    weights (strictly), as ``MADMModule.load_from_checkpoint`` does without reading the file again."""
    module = MADMModule(**_settings(checkpoint["hyper_parameters"]))
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    return module


#: The figure's column titles, in the order of ``figure_rows``.
FIGURE_COLUMNS = ("target image", "teacher pseudo-label", "student prediction", "ground truth")


def titled_figure(
    rows: np.ndarray, images: int, classes: tuple[str, ...], palette: np.ndarray, min_size: int = 192
) -> np.ndarray:
    """``figure_rows``' picture made readable at a glance: panels upscaled (nearest) so that their shorter
    side is at least ``min_size`` pixels, a title over each column (``FIGURE_COLUMNS``) and the palette's
    class names under the grid (``callbacks.images.titled_grid`` and ``class_legend``).

    Args:
        rows: (B*H, 4*W, 3) uint8 from ``figure_rows``.
        images: B, the number of rows (target test images).
        classes: the task's class names (index = train id).
        palette: (C,3) uint8, the colours the labels are painted with.

    Returns:
        (grid height + legend height, grid width, 3) uint8.
    """
    height, width = rows.shape[0] // images, rows.shape[1] // len(FIGURE_COLUMNS)
    panels = torch.from_numpy(rows.reshape(images, height, len(FIGURE_COLUMNS), width, 3))
    columns = [
        (title, panels[:, :, index].permute(0, 3, 1, 2).contiguous())  # (B,3,H,W)
        for index, title in enumerate(FIGURE_COLUMNS)
    ]
    grid = titled_grid(columns, min_size=min_size).permute(1, 2, 0).numpy()
    font_size = max(14, title_font_size(grid.shape[1] // len(FIGURE_COLUMNS)) * 2 // 3)  # near the titles
    legend = class_legend(classes, palette, grid.shape[1], font_size=font_size)
    return np.concatenate([grid, legend], axis=0)


def main(argv: list[str] | None = None) -> None:
    """Entry point; the project's own errors (a bad checkpoint or data folder) end in one line naming
    the file, ``--debug`` (or ``MADM_DEBUG=1``) shows the traceback."""
    args, debug = split_debug(sys.argv[1:] if argv is None else argv)
    run_reporting_errors(PROGRAM, debug, lambda: _draw(args))


def _draw(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        help="the runs of a config (<save_dir>/<name>, e.g. runs/demo/rgb2infrared): its newest last.ckpt",
    )
    parser.add_argument("--ckpt", help="a checkpoint written by madm-pl fit (instead of --runs)")
    parser.add_argument("--out", help="PNG file to write; default: figure.png in the checkpoint's run folder")
    parser.add_argument("--images", type=int, default=4, help="number of target test images (rows)")
    args = parser.parse_args(argv)
    if (args.ckpt is None) == (args.runs is None):
        parser.error("give --runs <folder of version_<n>/ runs> (its newest last.ckpt) or --ckpt <file>")
    if args.ckpt is not None:
        ckpt = Path(args.ckpt)
        if not ckpt.is_file():
            parser.error(f"--ckpt {ckpt} does not exist: train first (make train) or pass a checkpoint path")
    else:
        found = newest_last_checkpoint(args.runs)
        if found is None:
            parser.error(
                f"no {args.runs}/version_*/checkpoints/last.ckpt: train first (make train) or pass --ckpt"
            )
        ckpt = found
        print(f"figure of {ckpt} (the newest run's last checkpoint)")
    checkpoint = load_checkpoint_file(ckpt)  # weights_only=True, the weights' SHA-256 checked
    data_hparams = checkpoint.get("datamodule_hyper_parameters")
    model_hparams = checkpoint.get("hyper_parameters")
    if not data_hparams or not model_hparams:
        parser.error(f"--ckpt {ckpt} holds no model or data settings; it was not written by madm-pl fit")
    module = module_from_checkpoint(checkpoint)
    data = CrossModalityDataModule(
        **{**_settings(data_hparams), "val_batch_size": args.images, "num_workers": 0}
    )
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    figure = titled_figure(
        figure_rows(module, batch), len(batch["image"]), module.task.classes, module.task.palette
    )
    run_folder = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out = Path(args.out) if args.out is not None else run_folder / "figure.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(figure).save(out)
    print(f"wrote {out}: rows = target test images; columns = {', '.join(FIGURE_COLUMNS)}; a class legend")


if __name__ == "__main__":
    main()

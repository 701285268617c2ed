"""Command lines of the CLI tests: the demo config pointed at the small synthetic world."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo" / "rgb2infrared.yaml"


def small_run_args(root: Path, tmp_path: Path) -> list[str]:
    """Overrides that point the demo config at the small synthetic world and shrink it for CPU tests.

    Runs go to ``<tmp_path>/logs/rgb2infrared/version_<n>/`` with their checkpoints in its
    ``checkpoints/`` (the demo config's layout).
    """
    return [
        f"--data.init_args.source_root={root / 'cityscapes'}",
        f"--data.init_args.target_root={root / 'fmb'}",
        "--data.init_args.source_resize=[64, 128]",
        "--data.init_args.crop_size=[64, 64]",
        "--data.init_args.target_resize=[64, 96]",
        "--data.init_args.test_size=[64, 64]",
        "--data.init_args.rcs_min_pixels=20",
        "--data.init_args.num_workers=0",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
    ]

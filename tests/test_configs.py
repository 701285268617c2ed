"""The paper recipes (configs/rgb2*.yaml) and the custom-modality example: values, errors, smoke runs.

The table test parses each config with the real CLI (``cli.main``) but stops before anything is
instantiated, so no Stable Diffusion folder is needed. The smoke runs use the configs unchanged except
for the overrides a CPU needs: the tiny stack, a narrow head, small sizes and fake data trees.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from jsonargparse import Namespace

from madm_pl.cli import MADMCLI, main
from madm_pl.data.datasets import load_label_map
from madm_pl.labels import IGNORE_INDEX
from madm_pl.models import MADMHead
from tests.fake_trees import FakeTree, split_label, write_image_folder

# pytest's own command line is in sys.argv when the tests call the CLI with args=[...]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]
PAPER_TASKS = ("rgb2depth", "rgb2infrared", "rgb2event")

# METHOD.md §2-§5, per task: target resize, DPLG (t0, T_end), LPLR (source, target, weights).
TASK_VALUES: dict[str, dict[str, Any]] = {
    "rgb2depth": {
        "target_resize": (712, 712),
        "dplg_t0": 60,
        "dplg_t_end": 5000,
        "lplr_source": True,
        "lplr_target": True,
        "lplr_source_weight": 1.0,
        "lplr_target_weight": 1.0,
    },
    "rgb2infrared": {
        "target_resize": (512, 683),
        "dplg_t0": 50,
        "dplg_t_end": 8000,
        "lplr_source": True,
        "lplr_target": True,
        "lplr_source_weight": 1.0,
        "lplr_target_weight": 1.0,
    },
    "rgb2event": {
        "target_resize": (512, 768),
        "dplg_t0": 50,
        "dplg_t_end": 8000,
        "lplr_source": True,
        "lplr_target": False,
        "lplr_source_weight": 20.0,
    },
}
#: The DAFormer head with the paper's widths (model.init_args.head; was the five model.head_* options).
PAPER_HEAD = {
    "class_path": "madm_pl.models.MADMHead",
    "init_args": {
        "embed_dim": 256,
        "projection_channels": 512,
        "decoded_projection_channels": 128,
        "bottleneck_width": 128,
        "activation_checkpointing": True,
    },
}
COMMON_MODEL = {
    "backbone": "path/to/stable-diffusion-v1-4",
    "noise_seed": 42,
    "unet_gradient_checkpointing": True,
    "vae_dtype": "float32",
    "mode": "madm",
    "classmix": True,
    "classmix_include_ignore": True,
    "color_jitter": "kornia-0.6",
    "ema": True,
    "dplg": True,
    "ema_max_alpha": 0.999,
    "pseudo_label_threshold": 0.968,
    "lr": 5e-6,
    "weight_decay": 0.05,
    "seed": 42,
}
COMMON_DATA = {
    "source_resize": (512, 1024),
    "crop_size": (512, 512),
    "test_size": (512, 512),
    "batch_size": 1,
    "val_batch_size": 1,
    "rcs": True,
    "rcs_temperature": 0.01,
    "rcs_min_pixels": 3000,
    "rcs_min_crop_ratio": 0.5,
    "seed": 42,
}
# The class order of the reference's evaluators (config_files/common/data/*: stuff_classes).
REFERENCE_CLASSES = {
    "rgb2depth": "sky building fence person pole road sidewalk vegetation car wall traffic_sign",
    "rgb2infrared": "sky building person pole road sidewalk vegetation car traffic_sign",
    "rgb2event": "sky building fence person pole road sidewalk vegetation car wall traffic_sign",
}


class _Parsed(Exception):  # noqa: N818 - carries the parsed config out of the CLI, not an error
    pass


def parse(monkeypatch: pytest.MonkeyPatch, *args: str) -> Namespace:
    """The config ``main`` would run with, parsed and validated but not instantiated."""

    def stop(cli: MADMCLI) -> None:
        raise _Parsed(cli.config)

    monkeypatch.setattr(MADMCLI, "instantiate_classes", stop)
    with pytest.raises(_Parsed) as parsed:
        main(["fit", *args])
    return parsed.value.args[0].fit


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_paper_config_values(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse(monkeypatch, "-c", str(REPO / "configs" / f"{task}.yaml"))
    trainer, model, data = config.trainer, config.model.init_args, config.data.init_args
    assert config.seed_everything == 42
    assert trainer.precision == "bf16-mixed"
    assert (trainer.devices, trainer.accumulate_grad_batches, data.batch_size) == (1, 2, 1)  # METHOD.md §5
    assert trainer.max_steps == 10_000
    # val_check_interval counts training batches: every 1000 iterations of 2 micro-batches
    assert trainer.val_check_interval == 1000 * trainer.accumulate_grad_batches
    assert trainer.check_val_every_n_epoch is None
    assert (trainer.gradient_clip_val, trainer.gradient_clip_algorithm) == (0.01, "norm")
    assert config.image_logger.every_n_steps == 250
    assert config.checkpoint.monitor == "val/miou"
    # one epoch covers the run, so no iteration is cut short by an epoch end
    steps_per_epoch, remainder = divmod(data.epoch_length, data.batch_size * trainer.accumulate_grad_batches)
    assert remainder == 0 and steps_per_epoch >= trainer.max_steps
    assert config.model.class_path == "madm_pl.module.MADMModule"
    assert model.task == data.task == task
    assert {key: model[key] for key in COMMON_MODEL} == COMMON_MODEL
    assert model.head.as_dict() == PAPER_HEAD
    # written once in the code too: MADMHead's defaults (the module's default head) are the paper's widths
    defaults = inspect.signature(MADMHead).parameters
    assert {name: defaults[name].default for name in PAPER_HEAD["init_args"]} == {
        **PAPER_HEAD["init_args"],
        "activation_checkpointing": False,
    }
    assert {key: data[key] for key in COMMON_DATA} == COMMON_DATA
    # a folder scan of DSEC keeps the frames of the reference's lists (train: even from 000002)
    assert data.dsec_frames == ("reference" if task == "rgb2event" else "all")
    values = TASK_VALUES[task]
    assert data.target_resize == values["target_resize"]
    assert {key: model[key] for key in values if key != "target_resize"} == {
        key: value for key, value in values.items() if key != "target_resize"
    }


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_reference_precision_is_one_switch_away(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reference: fp16 autocast with a GradScaler (train.amp.enabled) and fp16 VAE weights.
    switch = ["--trainer.precision=16-mixed", "--model.init_args.vae_dtype=float16"]
    config = parse(monkeypatch, "-c", str(REPO / "configs" / f"{task}.yaml"), *switch)
    assert (config.trainer.precision, config.model.init_args.vae_dtype) == ("16-mixed", "float16")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_placeholders_fail_naming_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(REPO / "configs" / "rgb2infrared.yaml")
    run = [f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    # the module's message, found behind jsonargparse's wrapper, is the last line
    with pytest.raises(SystemExit):
        main(["fit", "-c", config, "--trainer.accelerator=cpu", *run])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"madm-pl: error: model\.backbone='path/to/stable-diffusion-v1-4'.*vae/", last)
    tiny = ["--model.init_args.backbone=tiny", "--model.init_args.head.init_args.embed_dim=16"]
    with pytest.raises(SystemExit):
        main(["fit", "-c", config, "--trainer.accelerator=cpu", *run, *tiny])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"madm-pl: error: .*data\.source_root='path/to/Cityscapes'.*fix data\.source_root", last)


def cpu_overrides(tmp_path: Path, source: FakeTree, target: FakeTree) -> list[str]:
    """What a paper config needs to run on 2 CPU cores in seconds (the recipe's logic unchanged)."""
    return [
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'run'}",
        "--model.init_args.backbone=tiny",
        "--model.init_args.head.init_args.embed_dim=16",
        "--model.init_args.head.init_args.projection_channels=32",
        "--model.init_args.head.init_args.decoded_projection_channels=32",
        "--model.init_args.head.init_args.bottleneck_width=32",
        f"--data.init_args.source_root={source.root}",
        f"--data.init_args.target_root={target.root}",
        "--data.init_args.source_resize=[64,128]",
        "--data.init_args.crop_size=[64,64]",
        "--data.init_args.target_resize=[64,96]",
        "--data.init_args.test_size=[64,64]",
        "--data.init_args.num_workers=0",
        "--data.init_args.pin_memory=false",
        "--data.init_args.persistent_workers=false",
        "--data.init_args.rcs_min_pixels=100",
    ]


def iou_tables(text: str) -> list[tuple[str, list[str]]]:
    """(title, class rows) of every IoU table in a log (one column, or whole split + reference protocol)."""
    tables = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "after iteration" in line:
            rows = []
            for row in lines[i + 3 :]:
                if row.startswith("---"):
                    break
                rows.append(re.sub(r"(\s+(n/a|\d+\.\d\d))+$", "", row).strip().replace(" ", "_"))
            tables.append((line.strip(), rows))
    return tables


TARGET_TREES = {"rgb2depth": "deliver_tree", "rgb2infrared": "fmb_tree", "rgb2event": "dsec_tree"}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's CPU/num_workers/logging advice
def test_infrared_recipe_iterations_validation_and_test_from_checkpoint(
    cityscapes_tree: FakeTree, fmb_tree: FakeTree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = str(REPO / "configs" / "rgb2infrared.yaml")
    overrides = cpu_overrides(tmp_path, cityscapes_tree, fmb_tree)
    caplog.set_level(logging.INFO)
    # 1 iteration of 2 micro-batches; val_check_interval counts batches: 2 = after every iteration
    main(["fit", "-c", config, *overrides, "--trainer.max_steps=1", "--trainer.val_check_interval=2"])
    assert [title for title, _ in iou_tables(caplog.text)] == ["val after iteration 1 (rgb2infrared)"]
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    caplog.clear()
    main(["test", "-c", config, *overrides, f"--ckpt_path={checkpoint}"])
    [(title, rows)] = iou_tables(caplog.text)
    assert title == "test after iteration 1 (rgb2infrared)"  # the checkpoint's iteration
    assert "whole split  reference protocol" in caplog.text  # both columns (data/reference.py)
    assert rows == REFERENCE_CLASSES["rgb2infrared"].split()  # the paper's class order


@pytest.mark.parametrize("task", ["rgb2depth", "rgb2event"])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_paper_config_fast_dev_run(
    task: str,
    request: pytest.FixtureRequest,
    cityscapes_tree: FakeTree,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = request.getfixturevalue(TARGET_TREES[task])
    caplog.set_level(logging.INFO)
    config = str(REPO / "configs" / f"{task}.yaml")
    main(["fit", "-c", config, *cpu_overrides(tmp_path, cityscapes_tree, target), "--trainer.fast_dev_run=1"])
    [(title, rows)] = iou_tables(caplog.text)
    assert title == f"val after iteration 1 ({task})"
    assert rows == REFERENCE_CLASSES[task].split()  # the paper's class order


def test_example_label_map_maps_cityscapes_label_ids() -> None:
    table = load_label_map(REPO / "configs" / "label_maps" / "example.yaml", "rgb2infrared")
    # road 7 -> 4, car 26 / bicycle 33 -> 7, traffic light 19 -> sign 8, terrain 22 -> vegetation 6,
    # rider 25 -> person 2, sky 23 -> 0, wall 12 and unlabeled 0 -> ignore
    expected = {7: 4, 26: 7, 33: 7, 19: 8, 22: 6, 25: 2, 23: 0, 12: IGNORE_INDEX, 0: IGNORE_INDEX}
    assert {raw: int(table[raw]) for raw in expected} == expected
    assert (table[:34] >= 0).all()  # every Cityscapes label id 0..33 is listed


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_custom_modality_config(
    monkeypatch: pytest.MonkeyPatch,
    cityscapes_tree: FakeTree,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = str(REPO / "configs" / "custom_modality.yaml")
    with monkeypatch.context() as patch:
        parsed = parse(patch, "-c", config)
    data = parsed.data.init_args
    assert (data.target_kind, data.task) == ("folder", "rgb2infrared")
    assert (REPO / data.label_map).is_file()
    # a folder camera labelled in Cityscapes label ids: road | car and sky | wall (ignored)
    labels = [split_label((16, 32), 7, 26), split_label((16, 32), 23, 12)]
    folder = write_image_folder(tmp_path / "camera", labels, train_count=2)
    caplog.set_level(logging.INFO)
    overrides = cpu_overrides(tmp_path, cityscapes_tree, folder)
    main(
        [
            "fit",
            "-c",
            config,
            *overrides,
            f"--data.init_args.label_map={REPO / data.label_map}",
            "--trainer.fast_dev_run=1",
        ]
    )
    [(title, rows)] = iou_tables(caplog.text)
    assert title.startswith("val after iteration 1") and len(rows) == 9


@pytest.mark.parametrize(
    "config",
    ["rgb2depth", "rgb2infrared", "rgb2event", "demo/rgb2depth", "demo/rgb2infrared", "demo/rgb2event"],
)
def test_task_file_includes_its_base(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # `-c <task>.yaml` reads base.yaml first (the task file's `config:` key): the same as naming both
    task_file = REPO / "configs" / f"{config}.yaml"
    base = task_file.parent / "base.yaml"
    alone = parse(monkeypatch, "-c", str(task_file))
    both = parse(monkeypatch, "-c", str(base), "-c", str(task_file))
    alone.pop("config"), both.pop("config")
    assert alone == both
    # the base's shared values reach the task (the task file does not set them)
    assert alone.trainer.max_steps == (600 if config.startswith("demo") else 10_000)
    assert alone.data.init_args.task == alone.model.init_args.task == Path(config).name
    # and a value the task file sets replaces the base's
    assert (
        alone.trainer.default_root_dir
        == f"runs/{'demo' if config.startswith('demo') else 'paper'}/{Path(config).name}"
    )


@pytest.mark.parametrize("task", ["rgb2event"])  # the overlays name no task value; one task suffices
def test_memory_overlays_change_only_their_switches(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/offload_24gb.yaml and configs/two_gpus.yaml after a task config (issue 24)."""
    recipe = parse(monkeypatch, "-c", str(REPO / "configs" / f"{task}.yaml"))
    assert recipe.model.init_args.optimizer == "adamw"
    offload = parse(
        monkeypatch,
        "-c",
        str(REPO / "configs" / f"{task}.yaml"),
        "-c",
        str(REPO / "configs" / "offload_24gb.yaml"),
    )
    assert (offload.model.init_args.optimizer, offload.model.init_args.vae_dtype) == (
        "adamw-offload",
        "bfloat16",
    )
    two = parse(
        monkeypatch,
        "-c",
        str(REPO / "configs" / f"{task}.yaml"),
        "-c",
        str(REPO / "configs" / "two_gpus.yaml"),
    )
    trainer = two.trainer
    assert (trainer.devices, trainer.accumulate_grad_batches, trainer.val_check_interval) == (2, 1, 1000)
    assert trainer.strategy.class_path == "lightning.pytorch.strategies.DDPStrategy"
    assert trainer.strategy.init_args.gradient_as_bucket_view is True
    assert (two.model.init_args.optimizer, two.data.init_args.batch_size) == ("adamw-sharded", 1)
    for overlaid, changed in ((offload, {"optimizer", "vae_dtype"}), (two, {"optimizer"})):
        model = overlaid.model.init_args
        assert {k: model[k] for k in COMMON_MODEL if k not in changed} == {
            k: recipe.model.init_args[k] for k in COMMON_MODEL if k not in changed
        }
        assert overlaid.model.init_args.task == task and overlaid.data.init_args.task == task

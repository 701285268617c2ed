"""benchmarks.gpu_recipe: the CPU smoke run (tiny stack, 64x64) and its gradient comparison."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

import benchmarks.gpu_recipe


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    return benchmarks.gpu_recipe


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's CPU/num_workers advice
def test_smoke_run_times_the_recipe_step(benchmark: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "recipe.json"
    rows = benchmark.main(["--smoke", "--warmup", "1", "--steps", "1", "--json", str(out)])
    assert [row["mode"] for row in rows] == ["recipe"]
    assert rows[0]["iterations"] == 1 and rows[0]["seconds_per_iteration"] > 0
    assert rows[0]["peak_allocated_gib"] is None  # no CUDA memory on the CPU
    written = json.loads(out.read_text())
    assert "batch 1 x 2 accumulated" in written["setup"] and written["rows"] == rows


def test_tap_gradient_errors_are_zero_for_the_same_network(benchmark: ModuleType) -> None:
    args = benchmark.parse_args(["--smoke"])
    module = benchmark.build_module(args, benchmark.MODES["eager"])
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert benchmark.tap_gradient_errors(module, copy.deepcopy(module), image) == [0.0, 0.0, 0.0]


def test_options(benchmark: ModuleType) -> None:
    args = benchmark.parse_args([])
    assert (args.modes, args.warmup, args.steps, args.smoke) == (
        ["recipe", "eager", "compiled", "compiled-ckpt"],
        5,
        20,
        False,
    )
    args = benchmark.parse_args(["--smoke", "--modes", "compiled", "--task", "rgb2event"])
    assert (args.modes, args.warmup, args.steps, args.task) == (["compiled"], 1, 2, "rgb2event")
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--steps", "0"])


def test_modes_set_the_module_options_and_switches_apply_to_every_mode(benchmark: ModuleType) -> None:
    args = benchmark.parse_args(["--smoke"])
    offload = benchmark.build_module(args, benchmark.MODES["offload"])
    hp = offload.hparams
    assert (hp.optimizer, hp.vae_dtype, hp.adamw_implementation) == ("adamw-offload", "bfloat16", "foreach")
    assert hp.unet_gradient_checkpointing and hp.head["init_args"]["activation_checkpointing"]
    assert (
        benchmark.build_module(args, benchmark.MODES["offload-fused"]).hparams.adamw_implementation == "fused"
    )
    assert benchmark.build_module(args, benchmark.MODES["adamw-8bit"]).hparams.optimizer == "adamw-8bit"
    assert benchmark.MODES["adamw-8bit"].compiles and not benchmark.MODES["offload"].compiles
    args = benchmark.parse_args(
        ["--smoke", "--channels-last", "--adamw-implementation", "fused", "--sdpa", "math"]
    )
    recipe = benchmark.build_module(args, benchmark.MODES["recipe"])
    assert recipe.hparams.adamw_implementation == "fused"
    assert recipe.backbone.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert benchmark.switches(args, benchmark.MODES["recipe"]) == [
        "fused AdamW",
        "channels-last",
        "sdpa math",
    ]
    assert benchmark.switches(benchmark.parse_args([]), benchmark.MODES["offload-fused"]) == ["fused AdamW"]

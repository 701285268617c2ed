"""The one prepared GPU check of issue 24: speed and peak memory of every memory mode, in <= 8 minutes.

Runs ``benchmarks.gpu_recipe``'s modes (``recipe``, ``offload`` (the 24 GB mode), ``eager``,
``adamw-8bit``, ``compiled``, ``compiled-check`` (the compiled UNet's tap gradient error against eager),
then ``offload-fused`` if time is left) one after the other, each in a child process of its own: a fresh
CUDA context and peak counter per mode, and a mode that fails (out of memory, a crash) or runs out of its
time is recorded as such while the next one runs. The whole check keeps to ``--budget`` seconds (default
480): a mode gets what is left minus a reserve for the modes after it; modes with no time left are
recorded "not run".

    # on the GPU machine (docs/PAPER_RECIPES.md §6 says how to carry the missing wheels there):
    cp BENCHMARKS.md $OUT/
    python -m benchmarks.gpu_check --markdown $OUT/BENCHMARKS.md --json $OUT/gpu_check.json
    # back here: the rows into BENCHMARKS.md (its gpu-check section) from the returned JSON
    python -m benchmarks.gpu_check --from-json <returned gpu_check.json> --markdown BENCHMARKS.md
    # CPU, tiny stack, 64x64, torch.compile run eagerly: the same code path in seconds (a CI test runs it)
    python -m benchmarks.gpu_check --smoke --markdown /tmp/check.md

Rows are marked "measured" with the GPU's name, torch's version and the date; a smoke run's rows say
"smoke (CPU)" and are no measurement. The children are started with ``spawn`` (each imports the package
anew, seconds): importing diffusers imports torchao, which asks ``torch.cuda.is_available()``, and a
child forked from a process that has initialised CUDA cannot use it. ``--start-method fork`` is for tests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import gpu_recipe
from benchmarks.common import gib, has_markers, replace_between_markers, write_atomic

#: The section of BENCHMARKS.md this script fills.
SECTION = "gpu-check"
#: The issue's modes in the order they run (cheapest and most wanted first; offload-fused, the host AdamW
#: in torch's fused kernel, only if time is left).
DEFAULT_MODES = ("recipe", "offload", "eager", "adamw-8bit", "compiled", "compiled-check", "offload-fused")
#: Seconds kept back for each mode still to run when a mode's time limit is set.
RESERVE_PER_MODE = 40.0
#: A mode whose time limit would be shorter is not started.
MIN_MODE_SECONDS = 10.0
#: What each row's mode is (the table's second column).
DESCRIPTIONS = {
    "recipe": "as `configs/rgb2*.yaml`: UNet + head checkpointing, AdamW on the device",
    "offload": "the 24 GB mode: `optimizer: adamw-offload` + `vae_dtype: bfloat16`",
    "offload-fused": "`offload` with `adamw_implementation: fused` (host AdamW in one kernel)",
    "adamw-8bit": "`optimizer: adamw-8bit` (torchao; approximate, docs/DEVIATIONS.md)",
    "eager": "no checkpointing",
    "compiled": "`eager` + `compile_unet`",
    "compiled-ckpt": "`recipe` + `compile_unet`",
    "compiled-check": "`compile_unet`'s UNet tap gradient error vs eager (fp32, no timing)",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="CPU, tiny stack, 64x64: the code path in seconds"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=(*gpu_recipe.MODES, "compiled-check"), default=list(DEFAULT_MODES)
    )
    parser.add_argument(
        "--budget", type=float, default=480.0, help="seconds for the whole check (default 480)"
    )
    parser.add_argument("--warmup", type=int, help="untimed iterations per mode (default 2; smoke 1)")
    parser.add_argument("--steps", type=int, help="timed iterations per mode (default 5; smoke 1)")
    parser.add_argument("--markdown", type=Path, help="fill this file's gpu-check section with the rows")
    parser.add_argument("--json", type=Path, help="write the rows here (after every mode)")
    parser.add_argument("--from-json", type=Path, help="no run: put a previous run's rows into --markdown")
    parser.add_argument(
        "--start-method",
        choices=("spawn", "fork"),
        default="spawn",
        help="how the children start (fork: fast, but not after CUDA was initialised; for tests)",
    )
    parser.add_argument(
        "extra", nargs="*", help="after --: options for gpu_recipe (e.g. -- --channels-last --sdpa flash)"
    )
    args = parser.parse_args(argv)
    args.warmup = (1 if args.smoke else 2) if args.warmup is None else args.warmup
    args.steps = (1 if args.smoke else 5) if args.steps is None else args.steps
    if args.from_json is not None and args.markdown is None:
        parser.error("--from-json needs --markdown (the file whose gpu-check section to fill)")
    if args.markdown is not None and not (
        args.markdown.is_file() and has_markers(args.markdown.read_text(), SECTION)
    ):
        parser.error(
            f"--markdown {args.markdown}: no file with a <!-- {SECTION}:start --> ... <!-- {SECTION}:end --> "
            "section (copy BENCHMARKS.md, which has one)"
        )
    return args


def recipe_args(args: argparse.Namespace, mode: str) -> list[str]:
    """``gpu_recipe``'s command line for one mode (``compiled-check``: compiled, the gradient check only)."""
    argv = ["--warmup", str(args.warmup), "--steps", str(args.steps), *args.extra]
    if args.smoke:
        argv.append("--smoke")
    if mode == "compiled-check":
        return [*argv, "--modes", "compiled", "--gradient-check", "only"]
    gradient_check = ["--gradient-check", "skip"] if gpu_recipe.MODES[mode].compile_unet else []
    return [*argv, "--modes", mode, *gradient_check]


def run_in_child(argv: list[str], result_path: str) -> None:
    """In the forked child: one ``gpu_recipe`` mode; its row, or the error, as JSON at ``result_path``."""
    try:
        recipe = gpu_recipe.parse_args(argv)
        device = torch.device("cpu" if recipe.smoke else "cuda")
        row = gpu_recipe.run_mode(recipe, recipe.modes[0], device)
        result: dict[str, Any] = {"status": "ok", "row": row}
    except BaseException as error:  # recorded; the parent goes on with the next mode
        out_of_memory = "out of memory" in str(error).lower() or type(error).__name__ == "OutOfMemoryError"
        result = {
            "status": "out of memory" if out_of_memory else "failed",
            "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300],
            "traceback": traceback.format_exc()[-2000:],
        }
    Path(result_path).write_text(json.dumps(result))
    # A forked child must not run the parent's atexit handlers; a spawned one has nothing else to do.
    os._exit(0 if result["status"] == "ok" else 1)


def run_mode(
    mode: str,
    argv: list[str],
    timeout: float,
    start_method: str = "spawn",
    target: Callable[[list[str], str], None] = run_in_child,
) -> dict[str, Any]:
    """One mode in a child process with a time limit; its row, or what stopped it."""
    with tempfile.TemporaryDirectory() as folder:
        result_path = os.path.join(folder, "row.json")
        start = time.perf_counter()
        context = multiprocessing.get_context(start_method)
        child = context.Process(target=target, args=(argv, result_path))
        child.start()
        child.join(timeout)
        elapsed = time.perf_counter() - start
        if child.is_alive():
            child.kill()
            child.join()
            return {
                "mode": mode,
                "status": f"stopped after {elapsed:.0f} s (its time limit)",
                "seconds": elapsed,
            }
        if not os.path.exists(result_path):
            return {"mode": mode, "status": f"crashed (exit code {child.exitcode})", "seconds": elapsed}
        result = json.loads(Path(result_path).read_text())
    result.update(mode=mode, seconds=elapsed)
    return result


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """Run the modes within the budget; write the JSON after every mode. Returns the report."""
    deadline = time.perf_counter() + args.budget
    report: dict[str, Any] = {
        "smoke": args.smoke,
        "date": datetime.date.today().isoformat(),
        "warmup": args.warmup,
        "steps": args.steps,
        "extra": args.extra,
        "results": [],
    }
    for index, mode in enumerate(args.modes):
        left = deadline - time.perf_counter()
        timeout = left - RESERVE_PER_MODE * (len(args.modes) - index - 1)
        if timeout < MIN_MODE_SECONDS:
            result = {"mode": mode, "status": "not run: no time left in the budget", "seconds": 0.0}
        else:
            result = run_mode(mode, recipe_args(args, mode), timeout, args.start_method)
        report["results"].append(result)
        print(f"{mode}: {json.dumps({k: v for k, v in result.items() if k != 'traceback'})}", flush=True)
        if args.json is not None:
            write_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return report


def markdown(report: dict[str, Any]) -> str:
    """The gpu-check section: a header naming the machine, then one row per mode."""
    rows = [r["row"] for r in report["results"] if r.get("status") == "ok"]
    device = next((row["device"] for row in rows), "unknown device")
    torch_version = next((row["torch"] for row in rows), "unknown")
    extra = f" `{' '.join(report['extra'])}`" if report["extra"] else ""
    if report["smoke"]:
        kind = "**smoke (CPU)**: tiny stack, 64x64, torch.compile run eagerly; the code path, no measurement"
    else:
        kind = "**measured**: `sd14-random` (SD v1-4 architecture, random weights), 512x512, paper head"
    lines = [
        f"{kind}; {device}, torch {torch_version}, {report['date']}; batch 1 x 2 accumulated micro-batches, "
        f"bf16-mixed, clipping 0.01, full method, random data; {report['warmup']} untimed + "
        f"{report['steps']} timed iterations per mode; `python -m benchmarks.gpu_check{extra}`.",
        "",
        "| mode | what differs from the recipe | s / iteration | peak allocated GiB | peak reserved GiB "
        "| UNet gradient error vs eager (s32, s16, s8) | status |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in report["results"]:
        mode = result["mode"]
        row = result.get("row") or {}
        speed = row.get("seconds_per_iteration")
        errors = row.get("tap_gradient_errors")
        status = result["status"] if result["status"] != "ok" else f"ok ({result['seconds']:.0f} s)"
        if "error" in result:
            status += f": {result['error']}".replace("|", "/")
        lines.append(
            f"| `{mode}` | {DESCRIPTIONS.get(mode, '')} | {'-' if speed is None else f'{speed:.3f}'} | "
            f"{gib(row.get('peak_allocated_gib'))} | {gib(row.get('peak_reserved_gib'))} | "
            f"{'-' if errors is None else ', '.join(f'{e:.1e}' for e in errors)} | {status} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = json.loads(args.from_json.read_text()) if args.from_json is not None else run_check(args)
    section = markdown(report)
    print(f"\n{section}")
    if args.markdown is not None:
        document = args.markdown.read_text()
        write_atomic(args.markdown, replace_between_markers(document, section, SECTION))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])

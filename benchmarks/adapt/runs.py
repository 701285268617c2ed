"""The runs of the adaptation table (``benchmarks.adapt_table``): the methods, what defines a run (its
setup, its resolved recipe, its key), the module and data of one run as ``madm-pl fit`` parses the demo
config, and the scheduler that trains the missing runs in worker processes and appends each finished one
to the runs file (JSON lines), so that an interrupted table resumes where it stopped."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from benchmarks.common import BARE_TRAINER

TASKS = ("rgb2depth", "rgb2infrared", "rgb2event")
_SELF_TRAINING = {"mode": "madm", "classmix": True, "ema": True}
_OFF = {"dplg": False, "lplr": False}
# method -> its switches (every one named, so no method inherits one from the demo config). "lplr"
# stands for the task's own LPLR terms (method_switches): the paper chose them per task.
METHODS: dict[str, dict[str, Any]] = {
    "source-only": {"mode": "source_only", "classmix": False, "ema": False, **_OFF},
    "oracle": {"mode": "oracle", "classmix": False, "ema": False, **_OFF},
    "self-training": {**_SELF_TRAINING, **_OFF},
    "+DPLG": {**_SELF_TRAINING, **_OFF, "dplg": True},
    "+LPLR": {**_SELF_TRAINING, **_OFF, "lplr": True},
    "MADM": {**_SELF_TRAINING, "dplg": True, "lplr": True},
}
# Relative cost per iteration (student passes, teacher, palette encodes), to start the long runs first.
_COST = {"source-only": 1, "oracle": 1, "self-training": 2.6, "+DPLG": 2.6, "+LPLR": 3.2, "MADM": 3.2}


def parse_overrides(items: Sequence[str], tasks: Sequence[str] = TASKS) -> dict[str, Any]:
    """``--set``'s items as ``madm-pl fit`` parses them on each task's demo config: ``["model.lr=1e-3",
    "data.crop_size=[96,96]"]`` -> ``{"model.lr": 0.001, "data.crop_size": [96, 96]}``.

    ``model.<option>=<value>`` is ``--model.init_args.<option>=<value>`` (``data.`` likewise; a dotted
    option such as ``model.head.init_args.embed_dim`` reaches a nested one), so the values are typed and
    checked by the project's parser, and a bad key or value fails here, before any training. Each value
    is the parsed one, as JSON holds it (a tuple as a list): the form the run key stores.

    Raises:
        ValueError: an item that is not ``model.<option>=<value>`` / ``data.<option>=<value>``, or the
            parser's own one-line message for a bad option or value, in ``--set`` terms.
    """
    if not items:
        return {}
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, _, option = key.partition(".")
        if not sep or section not in ("model", "data") or not option:
            raise ValueError(f"--set {item!r}: expected model.<option>=<value> or data.<option>=<value>")
        options[key] = f"--{section}.init_args.{option}={value}"
    for task in tasks or TASKS:
        config = _parse_or_explain(task, list(options.values()))
    parsed = {}
    for key in options:
        section, _, option = key.partition(".")
        value = config[section].init_args[option]
        if isinstance(value, Namespace):  # a whole subsection (model.head={...})
            value = value.as_dict()
        parsed[key] = json.loads(json.dumps(value, default=str))
    return parsed


def _parse_or_explain(task: str, options: list[str]) -> Namespace:
    """``demo_config(task, options)``; the parser's error line (it prints it and exits) as a ValueError
    naming the ``--set`` item the user wrote instead of the ``--model.init_args.`` option it became."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return demo_config(task, options)
    except SystemExit:
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        errors = [line for line in lines if ": error: " in line]
        message = (errors or lines or ["the parser refused it"])[-1].split(": error: ", 1)[-1]
        message = re.sub(r"--(model|data)\.init_args\.", r"--set \1.", message)
        raise ValueError(f"{message} (on configs/demo/{task}.yaml)") from None


def demo_config(task: str, options: Sequence[str] = ()) -> Namespace:
    """``configs/demo/<task>.yaml``, the small recipe every run of the table starts from, as ``madm-pl
    fit`` parses it (its base included) with ``options`` (``--model.init_args.lr=0.001``, ...) added."""
    from madm_pl.cli import parse_config

    return parse_config(["-c", str(Path("configs", "demo", f"{task}.yaml")), *options])


def run_setup(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """What defines a run besides (task, method, seed): iterations, evaluation interval, backbone, data,
    overrides. Written into every run's key, so a changed recipe never reuses an old result."""
    config = demo_config(task)
    iterations = args.iterations or int(config.trainer.max_steps)
    return {
        "iterations": iterations,
        "every": args.every or max(1, iterations // 6),  # 100 for the 600-iteration demo recipe
        "backbone": args.backbone or config.model.init_args.backbone,
        "data": str(args.data),
        "overrides": dict(sorted(args.overrides.items())),
    }


def run_key(task: str, method: str, seed: int, setup: dict[str, Any], recipe: dict[str, Any]) -> str:
    """Identifies a run: a changed setup (iterations, backbone, overrides) or a changed resolved recipe
    (``resolved_recipe``: every model and data option, the colour jitter, the head's finest level) never
    reuses an old result."""
    return json.dumps(
        {"task": task, "method": method, "seed": seed, **setup, "recipe": recipe}, sort_keys=True
    )


def resolved_recipe(task: str, method: str, setup: dict[str, Any]) -> dict[str, Any]:
    """What a run of ``method`` on ``task`` trains, as ``madm-pl fit`` resolves it: the demo config with the
    run's options (``run_options``), every ``model.init_args`` and ``data.init_args`` value but the seed
    (the key has it), plus the head's finest level (``"decoded"`` / ``"vae_encoder"``), which the code
    derives from the LPLR switches (``madm_pl.module.head_finest_level``). Part of every run's key, so
    that a recipe whose meaning changed (a method's switches, ``color_jitter``, the decode rule) is
    trained again instead of reused."""
    from madm_pl.module import head_finest_level

    config = demo_config(task, run_options(task, method, 0, setup))
    model = active_model_options(config.model.init_args.as_dict())
    data = {k: v for k, v in config.data.init_args.as_dict().items() if k != "seed"}
    finest = head_finest_level(model["lplr_source"], model["lplr_target"])
    return json.loads(json.dumps({"model": model, "data": data, "head_finest_level": finest}, default=str))


def active_model_options(model: dict[str, Any]) -> dict[str, Any]:
    """``model.init_args`` without the seed and without the options ``MADMModule`` never reads under the
    given switches, so that editing one (say the demo's DPLG window) re-trains only the runs it changes:

    - ``dplg_t0``, ``dplg_t_end``: read only with ``dplg`` in mode ``madm`` (``pseudo_label_timestep``);
    - ``lplr_source_weight``: only with ``lplr_source`` outside mode ``oracle``; ``lplr_target_weight``
      only with ``lplr_target`` in mode ``madm`` (the switches themselves stay: they set the head);
    - ``ema_max_alpha``: only with a teacher (``ema`` in mode ``madm``);
    - ``pseudo_label_threshold``, ``color_jitter``, ``classmix``, ``ema``, ``dplg``: only in mode ``madm``
      (``_target_losses``); ``classmix_include_ignore`` only with ``classmix`` there.
    """
    model = {k: v for k, v in model.items() if k != "seed"}
    madm = model["mode"] == "madm"
    inert = set()
    if not (madm and model["dplg"]):
        inert |= {"dplg_t0", "dplg_t_end"}
    if not (model["lplr_source"] and model["mode"] != "oracle"):
        inert.add("lplr_source_weight")
    if not (madm and model["lplr_target"]):
        inert.add("lplr_target_weight")
    if not (madm and model["ema"]):
        inert.add("ema_max_alpha")
    if not madm:
        inert |= {"pseudo_label_threshold", "color_jitter", "classmix", "ema", "dplg"}
    if not (madm and model["classmix"]):
        inert.add("classmix_include_ignore")
    return {k: v for k, v in model.items() if k not in inert}


def method_switches(method: str, config: Namespace) -> dict[str, Any]:
    """The model options of ``method`` on a task whose parsed demo config is ``config``:
    ``METHODS[method]`` with ``lplr`` replaced by the two LPLR terms. With LPLR on they are the
    config's (the paper's per task: rgb2event regresses only the source palette, at weight 20), so
    MADM here is the task's recipe; off, both off.
    """
    switches = dict(METHODS[method])
    if switches.pop("lplr"):
        model = config.model.init_args
        switches |= {"lplr_source": model.lplr_source, "lplr_target": model.lplr_target}
    else:
        switches |= {"lplr_source": False, "lplr_target": False}
    return switches


def run_options(task: str, method: str, seed: int, setup: dict[str, Any]) -> list[str]:
    """The ``madm-pl fit`` options a run adds to its demo config: the method's switches, the seed, the
    backbone, the data folder's roots and the overrides (``--model.init_args.lr=0.001``, ...)."""
    config = demo_config(task)
    model_args = {**method_switches(method, config), "backbone": setup["backbone"], "seed": seed}
    data_args = {"seed": seed, "target_train_labels": True}
    roots = config.data.init_args
    for key in ("source_root", "target_root"):
        data_args[key] = str(Path(setup["data"], Path(roots[key]).name))
    for key, value in setup["overrides"].items():
        section, option = key.split(".", 1)
        (model_args if section == "model" else data_args)[option] = value
    return [
        f"--{section}.init_args.{option}={value if isinstance(value, str) else json.dumps(value)}"
        for section, values in (("model", model_args), ("data", data_args))
        for option, value in values.items()
    ]


def build_run(job: dict[str, Any], module_class: type | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """The module, datamodule and Trainer arguments of one run: the demo config of ``job["task"]`` as
    ``madm-pl fit`` parses it (its model and data options, its DPLG end and EMA cap, its gradient clip)
    with the method's switches, the job's seed, backbone, data folder and overrides given as options on
    top, and ``setup["iterations"]``; the table's own bare Trainer (no logger, checkpoints or callbacks).

    The target training labels are always loaded: the oracle trains on them; for the other methods
    ``MADMModule`` only logs the teacher's pseudo-label accuracy with them (a diagnostic: no method
    reads them, and the data's random draws are the same either way). ``module_class`` replaces
    ``MADMModule`` (a diagnostic subclass; the same arguments).
    """
    from lightning.pytorch import seed_everything

    from madm_pl.cli import instantiate

    task, method, seed, setup = job["task"], job["method"], job["seed"], job["setup"]
    options = run_options(task, method, seed, setup)
    config = demo_config(task, options)
    seed_everything(seed, verbose=False)
    module = instantiate(config.model, module_class)
    data = instantiate(config.data)
    trainer_args = dict(
        accelerator="cpu",
        devices=1,
        max_steps=setup["iterations"],
        gradient_clip_val=config.trainer.gradient_clip_val,
        gradient_clip_algorithm=config.trainer.gradient_clip_algorithm,
        **BARE_TRAINER,
    )
    return module, data, trainer_args


def train_and_test(job: dict[str, Any], module_class: type | None = None) -> dict[str, Any]:
    """One run (``build_run``, with ``module_class``) with the target test mIoU every ``setup["every"]``
    iterations and at the end; returns its scores, the learning curve and the pseudo-label diagnostics
    per interval."""
    import torch  # imported in the worker, after OMP_NUM_THREADS is set
    from lightning.pytorch import Callback, Trainer

    torch.set_num_threads(1)
    module, data, trainer_args = build_run(job, module_class)
    every = job["setup"]["every"]
    curve: list[dict[str, Any]] = []
    window: dict[str, list[float]] = {}

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            for name in ("pseudo_label_accuracy", "pseudo_label_weight", "loss"):
                value = trainer.callback_metrics.get(f"train/{name}")
                if value is not None:
                    window.setdefault(name, []).append(float(value))

        def on_validation_end(self, trainer, pl_module) -> None:
            # after the module's on_validation_epoch_end, which scores the epoch (callbacks run later)
            point = {"iteration": trainer.global_step, "miou": 100 * float(pl_module.last_scores["miou"])}
            point.update({name: statistics.fmean(v) for name, v in window.items() if v})
            curve.append(point)
            window.clear()

    trainer_args.update(
        limit_val_batches=1.0, val_check_interval=every, check_val_every_n_epoch=None, callbacks=[Record()]
    )
    trainer = Trainer(**trainer_args)
    start = time.perf_counter()
    trainer.fit(module, data)
    train_seconds = time.perf_counter() - start
    if curve and curve[-1]["iteration"] == job["setup"]["iterations"]:
        scores = module.last_scores  # the last validation ran at the end: the same images, the same model
    else:
        trainer.test(module, data, verbose=False)  # the target test split
        scores = module.last_scores
        curve.append({"iteration": job["setup"]["iterations"], "miou": 100 * float(scores["miou"])})
    return {
        "key": job["key"],
        "task": job["task"],
        "method": job["method"],
        "seed": job["seed"],
        **job["setup"],
        "miou": 100 * float(scores["miou"]),
        "iou": {name: 100 * float(v) for name, v in zip(module.task.classes, scores["iou"], strict=True)},
        "curve": curve,
        "train_seconds": train_seconds,
    }


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def read_runs(path: Path) -> dict[str, dict[str, Any]]:
    """Every finished run in a JSON-lines file, by key (a later line wins)."""
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["key"]] = row
    return done


def run_all(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Train every requested (task, method, seed) not yet in ``--runs``; return every known run by key
    and the keys of the requested runs."""
    done = read_runs(args.runs)
    jobs = []
    for task in args.tasks:
        setup = run_setup(args, task)
        for method in args.methods:
            # A parse of the run's options: a bad one fails here, not in a worker an hour later.
            recipe = resolved_recipe(task, method, setup)
            for seed in args.seeds:
                key = run_key(task, method, seed, setup, recipe)
                jobs.append({"task": task, "method": method, "seed": seed, "setup": setup, "key": key})
    missing = sorted((j for j in jobs if j["key"] not in done), key=lambda j: -_COST[j["method"]])
    print(f"{len(jobs)} runs, {len(jobs) - len(missing)} already done, {len(missing)} to train", flush=True)
    args.runs.parent.mkdir(parents=True, exist_ok=True)
    os.environ["OMP_NUM_THREADS"] = "1"  # the spawned workers inherit it before importing torch
    context = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    with context.Pool(args.workers, initializer=_init_worker, maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(train_and_test, missing):
            with args.runs.open("a") as handle:  # one line per finished run: resumable
                handle.write(json.dumps(row) + "\n")
            done[row["key"]] = row
            print(
                f"[{time.perf_counter() - start:6.0f} s] {row['task']} {row['method']} seed {row['seed']}: "
                f"mIoU {row['miou']:.1f} ({row['train_seconds']:.0f} s) curve "
                + " ".join(f"{p['miou']:.1f}" for p in row["curve"]),
                flush=True,
            )
    return done, [job["key"] for job in jobs]

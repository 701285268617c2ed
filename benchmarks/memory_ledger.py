"""Predict the GPU memory of one MADM training iteration on the CPU, allocating nothing of its size.

The real ``MADMModule`` runs on the ``meta`` device (:mod:`benchmarks.ledger.iteration`) with CUDA's
bf16 autocast and attention kernels emulated (:mod:`benchmarks.ledger.emulation`); every tensor it
makes goes through a model of the CUDA caching allocator (:mod:`benchmarks.ledger.allocator`,
:mod:`benchmarks.ledger.tracker`), plus the workspaces only a GPU allocates
(:mod:`benchmarks.ledger.calibration`). The figure is what ``torch.cuda.max_memory_allocated`` reads
over an iteration after the first (the AdamW state exists), by category and by phase, for each memory
mode of the one-GPU recipe (SD v1-4 via ``sd14-random``, 512x512, bf16-mixed, paper head, batch 1 x 2
micro-batches, clip 0.01):

    python -m benchmarks.memory_ledger                          # every mode + the calibration table
    python -m benchmarks.memory_ledger --modes recipe offload   # some modes
    python -m benchmarks.memory_ledger --markdown BENCHMARKS.md # also fill the report's section
    python -m benchmarks.memory_ledger --fit                    # refit the cuDNN workspace coefficient
    python -m benchmarks.memory_ledger --smoke                  # tiny stack, 64x64: seconds

Each mode takes about a minute on one core (two iterations on ``meta``); the calibration table (the
backbone rows of ``benchmarks/gpu_backbone.py``) another minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import SMOKE_HEAD, replace_between_markers, write_atomic
from benchmarks.ledger.backbone_rows import predict_backbone_rows
from benchmarks.ledger.calibration import (
    CONV_WORKSPACE_COEFFICIENT,
    FITTED_ROW,
    MEASURED_BACKBONE,
    MEASURED_ITERATION,
    relative_error,
)
from benchmarks.ledger.iteration import MODES, PAPER_HEAD, LedgerResult, Problem, predict
from benchmarks.ledger.tracker import Category, PhaseRecord

GiB = float(1 << 30)
#: Line width of the report's prose.
WRAP = 108
#: The report's section in BENCHMARKS.md.
MARKERS = "memory-ledger"
#: Phases in the order of an iteration (the table's rows).
PHASE_ORDER = (
    "batch to device",
    "EMA update",
    "student source pass",
    "palette encodes",
    "teacher pass",
    "student mixed pass",
    "losses, ClassMix, augmentation",
    "backward",
    "clipping",
    "optimizer step",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES))
    parser.add_argument("--iterations", type=int, default=2, help="iterations run; the last is measured")
    parser.add_argument("--no-calibration", action="store_true", help="skip the backbone rows")
    parser.add_argument(
        "--conv-workspace",
        type=float,
        default=CONV_WORKSPACE_COEFFICIENT,
        help="cuDNN backward-conv workspace per input byte (default: the fitted value)",
    )
    parser.add_argument("--fit", action="store_true", help=f"fit --conv-workspace on the {FITTED_ROW} row")
    parser.add_argument("--smoke", action="store_true", help="tiny stack, 64x64, narrow head (CPU seconds)")
    parser.add_argument("--markdown", type=Path, help="write the report between its markers in this file")
    parser.add_argument("--json", type=Path, help="also write the predictions to this JSON file")
    return parser.parse_args(argv)


@dataclass
class CalibrationRow:
    """One measured figure next to its prediction."""

    name: str
    measured: float
    predicted: float
    fitted: bool

    @property
    def error(self) -> float:
        return relative_error(self.predicted, self.measured)


def gib(value: float) -> str:
    return f"{value / GiB:.2f}"


def phase_peaks(phases: list[PhaseRecord]) -> dict[str, PhaseRecord]:
    """Per phase name, the occurrence (micro-batch) with the highest peak."""
    best: dict[str, PhaseRecord] = {}
    for record in phases:
        if record.name not in best or record.peak.total > best[record.name].peak.total:
            best[record.name] = record
    return best


def fit_conv_workspace(problem: Problem, iterations: int, tolerance: float = 0.002) -> float:
    """The cuDNN workspace coefficient that makes the ``FITTED_ROW`` prediction equal its measurement.

    Bisection on [0, 16] (the prediction grows with the coefficient), to ``tolerance`` relative error.
    """
    target = MEASURED_ITERATION[FITTED_ROW][0] * GiB
    low, high = 0.0, 16.0
    for _ in range(12):
        middle = (low + high) / 2
        peak = predict(MODES[FITTED_ROW], problem, iterations, conv_workspace=middle).peak.total
        print(f"fit: coefficient {middle:.3f} -> {peak / GiB:.3f} GiB", flush=True)
        if abs(peak - target) / target < tolerance:
            return middle
        low, high = (middle, high) if peak < target else (low, middle)
    return (low + high) / 2


def mode_table(results: list[LedgerResult]) -> list[str]:
    """Markdown: each mode's predicted peak, where it happens and its categories."""
    categories = list(Category)
    lines = [
        "| mode | peak allocated GiB | peak reserved GiB | where | "
        + " | ".join(c.value for c in categories)
        + " |",
        "| --- " * (4 + len(categories)) + "|",
    ]
    for result in results:
        cells = " | ".join(gib(result.peak.by_category[c]) for c in categories)
        lines.append(
            f"| `{result.mode}` | **{gib(result.peak.total)}** | {gib(result.peak_reserved)} | "
            f"{result.peak_phase} | {cells} |"
        )
    return lines


def phase_table(results: list[LedgerResult]) -> list[str]:
    """Markdown: per phase, each mode's peak (the larger micro-batch)."""
    lines = [
        "| phase | " + " | ".join(f"`{r.mode}`" for r in results) + " |",
        "| --- " * (1 + len(results)) + "|",
    ]
    peaks = [phase_peaks(r.phases) for r in results]
    for name in PHASE_ORDER:
        cells = [gib(p[name].peak.total) if name in p else "-" for p in peaks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def calibration_table(rows: list[CalibrationRow]) -> list[str]:
    lines = [
        "| measured on the H100 | measured GiB | predicted GiB | error | role |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        role = "fitted (cuDNN workspace coefficient)" if row.fitted else "held out"
        lines.append(
            f"| {row.name} | {row.measured:.2f} | {row.predicted:.2f} | {100 * row.error:+.1f} % | {role} |"
        )
    return lines


def offload_lines(results: list[LedgerResult]) -> list[str]:
    lines = []
    for result in results:
        if result.mode == "offload":
            moved = 4 * result.trained_parameters
            count = result.trained_parameters / 1e6
            lines.append(
                f"`offload` moves per optimiser step {count:.1f}M fp32 gradients to the host and as many "
                f"updated weights back: {moved / GiB:.2f} GiB each way ({moved / 1e9:.2f} GB)."
            )
    return lines


def report(
    results: list[LedgerResult], calibration: list[CalibrationRow], problem: Problem, coefficient: float
) -> str:
    """The markdown section (without its markers)."""
    embed = dict(problem.head)["embed_dim"]
    head = "paper head" if dict(problem.head) == PAPER_HEAD else f"head embed {embed}"
    header = (
        f"Predicted (not measured) by `python -m benchmarks.memory_ledger` on the 2-core CPU machine, torch "
        f"{torch.__version__}: `{problem.backbone}`, {problem.size}x{problem.size}, bf16-mixed, {head}, "
        f"batch {problem.batch_size} x micro-batches as the mode says, clip {problem.clip}; the second "
        f"iteration; cuDNN workspace coefficient {coefficient:.3f} (fitted on `{FITTED_ROW}`), cuBLAS "
        "workspaces 2 x 32 MiB."
    )
    parts = [
        header,
        "",
        *mode_table(results),
        "",
        "Peak per phase (GiB, the larger micro-batch):",
        "",
        *phase_table(results),
    ]
    if calibration:
        parts += [
            "",
            "Calibration against the H100 figures (BENCHMARKS.md, issue 7):",
            "",
            *calibration_table(calibration),
        ]
    parts += ["", *offload_lines(results)]
    # Prose wrapped as the rest of BENCHMARKS.md (tables stay one row per line).
    lines = [line if line.startswith("|") else textwrap.fill(line, WRAP) for line in parts]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Predict the modes (and the calibration rows), print the report, optionally write it."""
    args = parse_args(argv)
    torch.set_grad_enabled(True)
    problem = Problem(backbone="tiny", size=64, head=tuple(SMOKE_HEAD.items())) if args.smoke else Problem()
    coefficient = args.conv_workspace
    if args.fit:
        coefficient = fit_conv_workspace(problem, args.iterations)
        print(f"fitted cuDNN workspace coefficient: {coefficient:.4f}")
    results = []
    for name in args.modes:
        result = predict(MODES[name], problem, args.iterations, conv_workspace=coefficient)
        results.append(result)
        print(
            f"{name}: peak {gib(result.peak.total)} GiB at {result.peak_phase} ({result.peak_op})", flush=True
        )
    calibration: list[CalibrationRow] = []
    if not args.smoke:
        for result in results:
            if result.mode in MEASURED_ITERATION:
                calibration.append(
                    CalibrationRow(
                        f"`{result.mode}` iteration",
                        MEASURED_ITERATION[result.mode][0],
                        result.peak.total / GiB,
                        result.mode == FITTED_ROW,
                    )
                )
                calibration.append(
                    CalibrationRow(
                        f"`{result.mode}` iteration, reserved (allocator model)",
                        MEASURED_ITERATION[result.mode][1],
                        result.peak_reserved / GiB,
                        False,
                    )
                )
        if not args.no_calibration:
            for row in predict_backbone_rows(conv_workspace=coefficient):
                student, teacher = MEASURED_BACKBONE[(row.batch, row.checkpointing)]
                checkpointing = "on" if row.checkpointing else "off"
                for part, measured, predicted in (
                    ("student fwd+bwd", student, row.student),
                    ("teacher fwd", teacher, row.teacher),
                ):
                    calibration.append(
                        CalibrationRow(
                            f"backbone: {part}, batch {row.batch}, UNet checkpointing {checkpointing}",
                            measured,
                            predicted.total / GiB,
                            False,
                        )
                    )
    text = report(results, calibration, problem, coefficient)
    print("\n" + text)
    if args.markdown is not None:
        document = args.markdown.read_text()
        write_atomic(args.markdown, replace_between_markers(document, text.rstrip("\n"), MARKERS))
    payload = {
        "coefficient": coefficient,
        "modes": {
            r.mode: {
                "peak_allocated_gib": r.peak.total / GiB,
                "peak_reserved_gib": r.peak_reserved / GiB,
                "peak_phase": r.peak_phase,
                "by_category_gib": {c.value: v / GiB for c, v in r.peak.by_category.items()},
                "by_phase_gib": {name: rec.peak.total / GiB for name, rec in phase_peaks(r.phases).items()},
                "trained_parameters": r.trained_parameters,
            }
            for r in results
        },
        "calibration": [
            {
                "row": c.name,
                "measured_gib": c.measured,
                "predicted_gib": c.predicted,
                "error": c.error,
                "fitted": c.fitted,
            }
            for c in calibration
        ],
    }
    if args.json is not None:
        write_atomic(args.json, json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])

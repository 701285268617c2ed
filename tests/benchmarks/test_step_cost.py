"""benchmarks/step_cost.py: the report's measures from hand-made step times."""

from __future__ import annotations

import torch

from benchmarks import step_cost


def test_report_gives_medians_ratio_and_rates() -> None:
    args = step_cost.parse_args(["--data", "random", "--steps", "3", "--num-workers", "0"])
    steps = step_cost.StepTimes(full=[1.1, 0.9, 1.0], floor=[0.4, 0.5, 0.6], device=torch.device("cpu"))
    text = step_cost.report_text(args, steps, 250.0, "PROFILE", "1.00 GiB (process max RSS)")
    lines = text.splitlines()
    assert lines[0].startswith("backbone tiny, 64x64, batch 2, head embed 32, precision 32-true, cpu,")
    assert "| full MADM step (median of 3) | 1000 ms |" in lines
    assert "| floor: 2 student fwd+bwd, 1 teacher fwd, 2 palette encodes | 500 ms |" in lines
    assert "| ratio full / floor | 2.000 |" in lines  # 1.0 s / 0.5 s
    assert "| training steps per second | 1.00 |" in lines
    assert "| loader batches per second (0 workers) | 250.00 |" in lines
    assert "| peak memory | 1.00 GiB (process max RSS) |" in lines
    assert lines[-3:] == ["```", "PROFILE", "```"]


def test_paper_head_reads_the_widths_from_the_config() -> None:
    from benchmarks.common import config_head_widths

    args = step_cost.parse_args(["--paper-head"])
    paper = config_head_widths()
    assert (args.head_embed_dim, args.head_projection_channels) == (
        paper["embed_dim"],
        paper["projection_channels"],
    )
    assert (args.head_decoded_channels, args.head_bottleneck_width) == (
        paper["decoded_projection_channels"],
        paper["bottleneck_width"],
    )
    assert args.head_embed_dim != step_cost.parse_args([]).head_embed_dim

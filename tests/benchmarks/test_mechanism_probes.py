"""Issue 25's probes: the arithmetic behind LPLR's ceiling, the positive control's patterns, the tables."""

from __future__ import annotations

import pytest
import torch

from benchmarks import lplr_ceiling, prior_probe, teacher_noise


def test_coarse_maps_by_hand() -> None:
    # One 8x8 cell (stride 8) in a 8x16 label: left cell 3/4 class 1 and 1/4 class 0; right cell all 2.
    label = torch.zeros(1, 8, 16, dtype=torch.long)
    label[0, :, 2:8] = 1
    label[0, :, 8:] = 2
    fractions = lplr_ceiling.coarse_map(label, 8, 3, "fractions")
    # Left cell: shares (0.25, 0.75, 0), right cell (0, 0, 1); the outer pixels read their own cell only
    # (bilinear with align_corners=False clamps there): class 1 on the left edge, class 2 on the right.
    assert fractions[0, 0, 0].item() == 1 and fractions[0, 0, 15].item() == 2
    nearest = lplr_ceiling.coarse_map(label, 8, 3, "nearest")
    assert nearest[0, 0, 0].item() == 0  # the label at the cell's first pixel is class 0
    # An ignored pixel never votes.
    ignored = torch.full((1, 8, 8), 255, dtype=torch.long)
    ignored[0, 0, 0] = 2
    assert torch.equal(lplr_ceiling.coarse_map(ignored, 8, 3, "fractions"), torch.full((1, 8, 8), 2))


def test_scores_count_a_no_class_prediction_as_a_miss() -> None:
    label = torch.tensor([[[0, 0, 1, 1]]])
    prediction = torch.tensor([[[0, 255, 1, 0]]])
    miou, iou = lplr_ceiling.scores(prediction, label, 3)
    # class 0: TP 1, FN 1 (the 255), FP 1 (the last pixel) -> 1/3; class 1: TP 1, FN 1 -> 1/2; class 2 absent
    assert iou[0] == pytest.approx(100 / 3) and iou[1] == pytest.approx(50.0)
    assert miou == pytest.approx(100 * (1 / 3 + 1 / 2) / 2)
    assert iou[2] != iou[2]  # NaN: in neither labels nor predictions


def test_control_patterns_are_fixed_and_of_the_given_amplitude() -> None:
    pattern = prior_probe.sensor_pattern(4, 6, 0.25)
    assert set(pattern.unique().tolist()) == {-0.25, 0.25}
    assert torch.equal(pattern, prior_probe.sensor_pattern(4, 6, 0.25))  # one sensor: the same every call
    images = torch.full((2, 3, 4, 6), 100, dtype=torch.uint8)
    patterned = prior_probe.with_sensor_pattern(images, 0.25)
    assert torch.equal(patterned[0], patterned[1])  # the same pattern on every image
    expected = ((100 / 255 + pattern) * 255).round().clamp(0, 255).to(torch.uint8).expand(2, 3, 4, 6)
    assert torch.equal(patterned, expected)
    latent = prior_probe.latent_pattern(4, 8, 16, 0.6)
    assert latent.shape == (1, 4, 8, 16) and torch.equal(latent, prior_probe.latent_pattern(4, 8, 16, 0.6))
    assert latent.std().item() == pytest.approx(0.6, rel=0.15)


def test_noise_table_reports_the_paired_change() -> None:
    table = {"rgb": {0: [30.0, 32.0], 50: [28.0, 29.0]}}
    text = prior_probe.format_noise_table(table, [0, 50])
    # changes -2, -3: half-width 12.706 x 0.707 / sqrt(2) = 6.35
    assert "| rgb | 31.0 ± 1.4 | 28.5 ± 0.7 | -2.5 ± 0.7 [-8.9, +3.9] |" in text
    # changes +2, +3, +4: 3 +- 4.303 / sqrt(3) = [0.52, 5.48], which excludes 0: bold
    table = {"rgb+noise": {0: [20.0, 20.0, 20.0], 50: [22.0, 23.0, 24.0]}}
    text = prior_probe.format_noise_table(table, [0, 50])
    assert "| **+3.0 ± 1.0 [+0.5, +5.5]** |" in text


def test_teacher_table_reports_accuracy_q_and_the_change() -> None:
    rows = [
        {"seed": s, "age": 100, "view": "target", "t": t, "accuracy": a, "miou": 0.0, "q": q}
        for s, t, a, q in [(0, 0, 60.0, 0.1), (0, 50, 58.0, 0.05), (1, 0, 62.0, 0.2), (1, 50, 61.0, 0.1)]
    ]
    text = teacher_noise.table(rows, [100], [0, 50])
    assert "| 100 | target | 61.0 ± 1.4 / 0.150 ± 0.071 | 59.5 ± 2.1 / 0.075 ± 0.035 | -1.5 ± 0.7 |" in text


def test_noised_features_add_a_per_image_offset_to_the_right_image() -> None:
    from madm_pl.models import DiffusionBackbone

    backbone = DiffusionBackbone("tiny").eval()
    images = torch.randint(
        0, 256, (3, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    offsets = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    batched = prior_probe.noised_features(backbone, images, 25, offsets, batch_size=2)
    for i in range(3):
        alone = prior_probe.noised_features(backbone, images[i : i + 1], 25, offsets[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=1e-4, atol=1e-5)
    # a single offset is added to every image
    shared = prior_probe.noised_features(backbone, images, 25, offsets[:1], batch_size=2)
    torch.testing.assert_close(
        shared[2:], prior_probe.noised_features(backbone, images[2:], 25, offsets[:1]), rtol=1e-4, atol=1e-5
    )
    assert not torch.allclose(shared[2:], batched[2:])


def test_linear_eps_estimate_by_hand() -> None:
    # A constant latent (variance 0): the noise is recovered exactly from the noised latent.
    alpha_bar = 0.81  # sqrt 0.9, sqrt(1 - abar) ~ 0.436
    eps = torch.tensor([0.5, -1.0, 2.0])
    noised = 0.9 * 3.0 + (1 - alpha_bar) ** 0.5 * eps
    torch.testing.assert_close(prior_probe.linear_eps_estimate(noised, alpha_bar, 3.0, 0.0), eps)
    # Variance 1, mean 0, abar 0.5: gain sqrt(0.5) / (0.5 + 0.5) = 0.7071 on the noised value.
    estimate = prior_probe.linear_eps_estimate(torch.tensor([1.0, -2.0]), 0.5, 0.0, 1.0)
    torch.testing.assert_close(estimate, torch.tensor([0.5**0.5, -2 * 0.5**0.5]))
    # Its expected error is abar var / (abar var + 1 - abar): 0.5 here, measured on many draws.
    generator = torch.Generator().manual_seed(0)
    z, e = torch.randn(200_000, generator=generator), torch.randn(200_000, generator=generator)
    error = (prior_probe.linear_eps_estimate(0.5**0.5 * z + 0.5**0.5 * e, 0.5, 0.0, 1.0) - e).pow(2).mean()
    assert error.item() == pytest.approx(0.5, abs=0.01)


def test_denoising_table_format() -> None:
    table = {"rgb": {0: [(1.0, 1.0), (0.9, 1.0)], 50: [(0.3, 0.95), (0.5, 0.95)]}}
    text = prior_probe.format_denoising_table(table, [0, 50])
    assert "| 0 | 0.950 ± 0.071 / 1.000 |" in text and "| 50 | 0.400 ± 0.141 / 0.950 |" in text


def test_matched_probe_reads_each_t_with_a_probe_trained_at_that_t(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-ins: features = the timestep as a constant map, so a probe trained at t labels only features of t.
    calls: list[int] = []

    def fake_features(backbone, images, timestep, offset=None, batch_size=16):
        return torch.full((len(images), 1, 2, 2), float(timestep))

    def fake_fit(rows, targets, steps=300):
        trained_at = int(rows[0, 0].item())
        calls.append(trained_at)
        return lambda x: torch.where(x[:, 0] == trained_at, 1, 0)

    labels = torch.ones(2, 64, 128, dtype=torch.long)
    monkeypatch.setattr(prior_probe, "scenes", lambda start, count: (torch.zeros(2, 4, 3, 64, 128), labels))
    monkeypatch.setattr(prior_probe, "noised_features", fake_features)
    monkeypatch.setattr(prior_probe, "fit_probe", fake_fit)
    monkeypatch.setattr("madm_pl.models.DiffusionBackbone", lambda source: torch.nn.Identity())
    matched = prior_probe.noise_table(
        "x", [0], 2, [0, 50], None, views_shown=["rgb"], probe_timestep="matched"
    )
    assert calls == [0, 50] and matched["rgb"] == {0: [100.0], 50: [100.0]}
    calls.clear()
    fixed = prior_probe.noise_table("x", [0], 2, [0, 50], None, views_shown=["rgb"])
    assert calls == [0] and fixed["rgb"] == {0: [100.0], 50: [0.0]}  # the t = 0 probe misreads t = 50

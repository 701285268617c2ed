"""The training pictures: panel colours, nearest upscaling, the titled grid's layout, the grids per mode."""

from __future__ import annotations

import pytest
import torch

from madm_pl.callbacks.images import (
    GAP,
    ImageLogger,
    nearest_upscale,
    title_height,
    titled_grid,
    training_grids,
    upscale_factor,
    visual_to_rgb,
)
from madm_pl.labels import TASKS

PALETTE = torch.from_numpy(TASKS["rgb2infrared"].palette)  # (9,3) uint8


def test_visual_to_rgb_per_kind():
    image = torch.tensor([0.0, 0.5, 1.0, 2.0]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert visual_to_rgb("target_image", image, PALETTE)[0, 0, 0].tolist() == [0, 128, 255, 255]
    decoded = torch.tensor([-1.0, 0.0, 1.0, -3.0]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)  # unclipped
    assert visual_to_rgb("lplr_label_image", decoded, PALETTE)[0, 0, 0].tolist() == [0, 128, 255, 0]
    label = torch.tensor([[[0, 4, 255]]])
    painted = visual_to_rgb("pseudo_label", label, PALETTE)
    assert painted.shape == (1, 3, 1, 3) and painted.dtype == torch.uint8
    assert painted[0, :, 0, 0].tolist() == PALETTE[0].tolist()
    assert painted[0, :, 0, 1].tolist() == PALETTE[4].tolist()
    assert painted[0, :, 0, 2].tolist() == [0, 0, 0]  # ignored pixels are black
    logits = torch.zeros(1, 9, 1, 2)
    logits[0, 7, 0, 0] = 5.0
    logits[0, 2, 0, 1] = 5.0
    prediction = visual_to_rgb("mixed_prediction", logits, PALETTE)
    assert prediction[0, :, 0, 0].tolist() == PALETTE[7].tolist()
    assert prediction[0, :, 0, 1].tolist() == PALETTE[2].tolist()
    mask = visual_to_rgb("confidence_mask", torch.tensor([[[True, False]]]), PALETTE)
    assert mask[0, :, 0].tolist() == [[255, 0]] * 3


def test_nearest_upscale_repeats_pixels():
    images = torch.tensor([[1, 2], [3, 4]], dtype=torch.uint8).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    up = nearest_upscale(images, 2)
    assert up[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert upscale_factor(64, 64, 192) == 3
    assert upscale_factor(64, 128, 192) == 3  # the shorter side decides
    assert upscale_factor(65, 65, 192) == 3  # ceil(192 / 65)
    assert upscale_factor(512, 512, 192) == 1  # never shrunk


def test_titled_grid_layout_and_pixels():
    height, width = 4, 6
    first = torch.zeros(2, 3, height, width, dtype=torch.uint8)
    first[1] = 10  # second row
    second = torch.full((2, 3, height, width), 200, dtype=torch.uint8)
    second[0, :, 0, 0] = 7  # one marked pixel, top-left of row 0
    grid = titled_grid([("first", first), ("second", second)], min_size=12)
    factor = 3  # ceil(12 / 4)
    top = title_height(width * factor)  # 18-px panels: 12-px font, 18-px bar
    assert top == 18
    assert grid.shape == (3, top + 2 * factor * height + GAP, 2 * factor * width + GAP)
    assert grid.dtype == torch.uint8
    row1 = top + factor * height + GAP
    column1 = factor * width + GAP
    assert (grid[:, top : top + 12, :18] == 0).all()  # row 0, column 0
    assert (grid[:, row1 : row1 + 12, :18] == 10).all()  # row 1, column 0
    assert (grid[:, top : top + 3, column1 : column1 + 3] == 7).all()  # the marked pixel, 3x3
    assert (grid[:, top + 3 : top + 12, column1 + 3 : column1 + 18] == 200).all()
    assert (grid[:, top + 12 : row1, :] == 255).all()  # the white gap between the rows
    assert (grid[:, top:, 18:column1] == 255).all()  # and between the columns
    title = grid[:, :top, :18]
    assert (title == 255).any() and (title < 128).any()  # a white bar with dark text


def test_titled_grid_rejects_mismatched_columns():
    with pytest.raises(ValueError, match="one shape"):
        titled_grid([("a", torch.zeros(1, 3, 4, 4, dtype=torch.uint8)), ("b", torch.zeros(1, 3, 4, 8))])
    with pytest.raises(ValueError, match="no columns"):
        titled_grid([])


def fake_visuals(batch: int = 3, size: int = 8) -> dict[str, torch.Tensor]:
    images = {k: torch.rand(batch, 3, size, size) for k in ("source_image", "target_image", "mixed_image")}
    names = ("source_label", "pseudo_label", "mixed_label")
    labels = {k: torch.randint(0, 9, (batch, size, size)) for k in names}
    logits = {k: torch.randn(batch, 9, size, size) for k in ("source_prediction", "mixed_prediction")}
    return {
        **images,
        **labels,
        **logits,
        "lplr_label_image": torch.rand(batch, 3, size, size) * 2 - 1,
        "confidence_mask": torch.rand(batch, size, size) > 0.5,
    }


def test_training_grids_per_mode():
    visuals = fake_visuals()
    grids = training_grids(visuals, PALETTE, max_images=2, min_size=16)
    assert set(grids) == {"visual_train/source", "visual_train/target", "visual_train/mixed"}
    top = title_height(16)
    assert grids["visual_train/source"].shape == (3, top + 2 * 16 + GAP, 4 * 16 + 3 * GAP)  # 2 of 3 rows
    assert grids["visual_train/target"].shape == (3, top + 2 * 16 + GAP, 3 * 16 + 2 * GAP)
    # The target grid's middle column is the pseudo-label in palette colours, upscaled x2.
    expected = nearest_upscale(visual_to_rgb("pseudo_label", visuals["pseudo_label"][:1], PALETTE), 2)
    column = 16 + GAP
    assert torch.equal(grids["visual_train/target"][:, top : top + 16, column : column + 16], expected[0])
    source_only = {k: v for k, v in visuals.items() if k.startswith("source") or k == "lplr_label_image"}
    assert set(training_grids(source_only, PALETTE)) == {"visual_train/source"}
    oracle = {"target_image": visuals["target_image"], "target_label": visuals["source_label"]}
    oracle["target_prediction"] = visuals["source_prediction"]
    grid = training_grids(oracle, PALETTE, max_images=1, min_size=8)["visual_train/target"]
    assert grid.shape == (3, title_height(8) + 8, 3 * 8 + 2 * GAP)


@pytest.mark.parametrize("option", ["every_n_steps", "max_images", "min_panel_size"])
def test_image_logger_rejects_non_positive_options(option: str):
    with pytest.raises(ValueError, match=rf"image_logger\.{option}"):
        ImageLogger(**{option: 0})

"""The validation pictures' parts: which test images, the confusion matrix's normalisation and figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from madm_pl.callbacks.validation import ValidationImages, confusion_figure, evenly_spaced, row_normalised


def test_evenly_spaced_indices():
    assert evenly_spaced(5, 3) == [0, 2, 4]
    assert evenly_spaced(5, 2) == [0, 4]
    assert evenly_spaced(10, 4) == [0, 3, 6, 9]
    assert evenly_spaced(7, 1) == [0]
    assert evenly_spaced(3, 8) == [0, 1, 2]  # a split smaller than the count: all of it


def test_row_normalised_confusion():
    confusion = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 2, 4]])  # class 1 never in the ground truth
    normalised = row_normalised(confusion)
    expected = torch.tensor([[0.75, 0.25, 0.0], [0.0, 0.0, 0.0], [0.25, 0.25, 0.5]])
    torch.testing.assert_close(normalised, expected)


def test_confusion_figure_draws_the_matrix():
    picture = confusion_figure(torch.tensor([[5, 0], [1, 4]]), ("road", "sky"), "a title")
    assert picture.shape == (800, 800, 3) and picture.dtype == np.uint8
    # viridis: 1.0 is yellow, 0.0 dark purple; both cells are drawn
    yellow = (picture[..., 0] > 200) & (picture[..., 1] > 200) & (picture[..., 2] < 100)
    purple = (picture[..., 0] < 100) & (picture[..., 1] < 50) & (picture[..., 2] > 60)
    assert yellow.sum() > 10_000 and purple.sum() > 10_000


def test_validation_images_rejects_non_positive_options():
    with pytest.raises(ValueError, match=r"validation_images\.num_images"):
        ValidationImages(num_images=0)
    with pytest.raises(ValueError, match=r"validation_images\.min_panel_size"):
        ValidationImages(min_panel_size=0)

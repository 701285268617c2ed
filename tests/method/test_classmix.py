"""ClassMix (METHOD.md §4.3): which classes are pasted, and the paste itself."""

from __future__ import annotations

import pytest
import torch

from madm_pl.labels import IGNORE_INDEX
from madm_pl.method.classmix import classmix_masks, mix


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _classes_under(mask: torch.Tensor, label: torch.Tensor) -> set[int]:
    return set(label[mask[0] > 0].unique().tolist())


def test_classmix_without_ignore_takes_exactly_half_of_present_classes_never_ignore():
    label = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3], [255, 255, 3, 3], [0, 0, 1, 1]])
    mask = classmix_masks(label[None], generator(0), include_ignore=False)
    assert mask.shape == (1, 1, 4, 4) and mask.dtype == torch.float32
    chosen = _classes_under(mask[0], label)
    assert len(chosen) == 2 and chosen <= {0, 1, 2, 3}
    # The mask is exactly the pixels of the chosen classes, never an ignored pixel.
    expected = torch.isin(label, torch.tensor(sorted(chosen)))
    assert torch.equal(mask[0, 0].bool(), expected)
    assert not mask[0, 0][label == IGNORE_INDEX].any()


@pytest.mark.parametrize(("present", "expected"), [([4, 7, 9], 2), ([5], 1), ([0, 1, 2, 3, 4], 3)])
def test_classmix_rounds_up(present, expected):
    label = torch.tensor([*present, 255]).reshape(1, 1, -1)
    mask = classmix_masks(label, generator(3), include_ignore=False)
    assert len(_classes_under(mask[0], label[0])) == expected


def test_classmix_with_ignore_draws_255_like_a_class_as_the_reference():
    # Values {0, 1, 2, 3, 255}: n = 5, so ceil(5/2) = 3 values are pasted, 255 among them 3/5 of the time.
    label = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3], [255, 255, 3, 3], [0, 0, 1, 1]])
    drawn_ignore = 0
    for seed in range(200):
        mask = classmix_masks(label[None], generator(seed))  # include_ignore=True is the default
        chosen = _classes_under(mask[0], label)
        assert len(chosen) == 3 and chosen <= {0, 1, 2, 3, 255}
        assert torch.equal(mask[0, 0].bool(), torch.isin(label, torch.tensor(sorted(chosen))))
        drawn_ignore += IGNORE_INDEX in chosen
    assert 0.5 < drawn_ignore / 200 < 0.7
    # Without the ignore label the same label has n = 4: 2 classes, never 255.
    for seed in range(20):
        chosen = _classes_under(classmix_masks(label[None], generator(seed), include_ignore=False)[0], label)
        assert len(chosen) == 2 and IGNORE_INDEX not in chosen


def test_classmix_per_sample_seeded_and_all_ignore():
    labels = torch.stack([torch.tensor([[0, 1], [2, 3]]), torch.tensor([[4, 5], [6, 7]])])
    first = classmix_masks(labels, generator(1))
    assert torch.equal(first, classmix_masks(labels, generator(1)))
    # Each sample chooses among its own classes: 2 of 4 pixels per sample.
    assert first.sum(dim=(1, 2, 3)).tolist() == [2.0, 2.0]
    masks = {tuple(classmix_masks(labels, generator(seed)).flatten().tolist()) for seed in range(20)}
    assert len(masks) > 1
    empty = classmix_masks(torch.full((1, 2, 2), 255), generator(0), include_ignore=False)
    assert not empty.any()
    # With the ignore label drawn like a class, an all-ignore label has one value, which is pasted.
    assert classmix_masks(torch.full((1, 2, 2), 255), generator(0)).all()


def test_mix_images_and_labels():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    source = torch.full((1, 3, 2, 2), 0.9)
    target = torch.full((1, 3, 2, 2), 0.1)
    mixed = mix(mask, source, target)
    assert torch.allclose(mixed[0, :, 0, 0], torch.full((3,), 0.9))
    assert torch.allclose(mixed[0, :, 0, 1], torch.full((3,), 0.1))
    labels = mix(mask, torch.tensor([[[3, 3], [255, 3]]]), torch.tensor([[[7, 7], [7, 7]]]))
    assert labels.dtype == torch.int64
    assert labels.tolist() == [[[3, 7], [7, 3]]]
    with pytest.raises(ValueError):
        mix(mask, source, target[:, :, :1])

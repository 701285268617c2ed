"""benchmarks/q_zero_ablation.py: each variant changes its one ingredient through the module's seams of the
mixed pass (``mix_images``, ``augment``, ``segment_mixed``), nothing else."""

from __future__ import annotations

import torch

from benchmarks.q_zero_ablation import ablated_module_class
from tests.test_module import TINY_HEAD

SIZE = 64


def ablated(variant: str | None):
    return ablated_module_class()(ablation=variant, task="rgb2infrared", backbone="tiny", **TINY_HEAD)


def test_each_variant_changes_only_its_seam() -> None:
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[:, :, : SIZE // 2] = 1.0
    source, target = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE)
    plain, background = ablated(None), ablated("source-background")
    no_augment = ablated("no-strong-augmentation")
    classmix = torch.cat([source[:, :, : SIZE // 2], target[:, :, SIZE // 2 :]], dim=2)
    assert torch.equal(plain.mix_images(mask, source, target), classmix)
    assert torch.equal(no_augment.mix_images(mask, source, target), classmix)
    assert torch.equal(background.mix_images(mask, source, target), source)
    assert torch.equal(no_augment.augment(classmix, torch.Generator().manual_seed(0)), classmix)
    augmented = plain.augment(classmix, torch.Generator().manual_seed(0))
    assert not torch.equal(augmented, classmix)
    assert torch.equal(background.augment(classmix, torch.Generator().manual_seed(0)), augmented)


def test_frozen_statistics_and_head_only_passes() -> None:
    image = torch.rand(2, 3, SIZE, SIZE)
    frozen, head_only, plain = ablated("frozen-bn-statistics"), ablated("head-only"), ablated(None)
    head_only.load_state_dict(plain.state_dict())

    def running_means(module):
        return [m.running_mean.clone() for m in module.student.head.modules() if hasattr(m, "running_mean")]

    before = running_means(frozen)
    frozen.train().segment_mixed(image)
    assert all(torch.equal(a, b) for a, b in zip(before, running_means(frozen), strict=True))
    plain.train().segment_mixed(image)
    assert not all(torch.equal(a, b) for a, b in zip(before, running_means(plain), strict=True))

    torch.manual_seed(0)
    logits, _ = head_only.train().segment_mixed(image)
    logits.sum().backward()
    assert all(p.grad is None for p in head_only.backbone.unet.parameters())
    assert all(p.grad is None for p in head_only.student.conditioning.parameters())
    assert any(p.grad is not None for p in head_only.student.head.parameters())

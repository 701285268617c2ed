"""Feed the reference's recorded random draws to madm-pl's own draws (a test seam; nothing in src changes).

madm-pl draws ClassMix, DPLG's t0 and the augmentation from the step's ``torch.Generator`` through the
module-level name ``torch`` of ``madm_pl.method.classmix``, ``.dplg`` and ``.augment``. ``feed_draws``
replaces that name in each module by ``torch`` with ``randperm`` / ``randint`` / ``rand`` answering the
recorded values, in the documented draw order of each function, and checks every call's shape.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

import madm_pl.method.augment as augment_module
import madm_pl.method.classmix as classmix_module
import madm_pl.method.dplg as dplg_module


class TorchWith:
    """``torch`` with some functions replaced."""

    def __init__(self, **replaced: object) -> None:
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> object:
        return getattr(torch, name)


def augment_uniforms(draws: dict[str, Any], strength: float) -> tuple[list[float], list[int]]:
    """madm-pl's ``strong_augment`` draws for one sample from the reference's recorded ones.

    ``strong_augment`` draws ``rand(B, 7)`` = (u_jitter, u_blur, b, c, s, h, sigma) and ``randperm(4)``;
    factors are ``1 + strength (2u - 1)`` (hue ``strength (2u - 1)`` turns) and sigma ``0.15 + u``. The
    reference draws ``random.uniform`` twice (jitter, blur), kornia's factors and order, numpy's sigma.
    Factors the reference did not draw (no jitter, no blur) are set to the neutral 0.5.

    Returns:
        the 7 uniforms and the order.
    """
    u_jitter, u_blur = draws["uniform"][:2]
    params = draws.get("jitter_params")
    if params is None:
        factors, order = [0.5, 0.5, 0.5, 0.5], [0, 1, 2, 3]
    else:
        lower = 1 - strength
        factors = [
            (params["brightness_factor"][0] - lower) / (2 * strength),
            (params["contrast_factor"][0] - lower) / (2 * strength),
            (params["saturation_factor"][0] - lower) / (2 * strength),
            (params["hue_factor"][0] + strength) / (2 * strength),
        ]
        order = [int(i) for i in params["order"]]
    sigma = draws["blur_sigma"] - 0.15 if "blur_sigma" in draws else 0.5
    return [u_jitter, u_blur, *factors, sigma], order


class DrawFeeder:
    """Serves the recorded draws of successive micro-batches (one image each) in madm-pl's call order."""

    def __init__(self, micro_batches: list[dict[str, Any]], dplg_base: int, strength: float) -> None:
        self.classmix: deque = deque()
        self.dplg: deque = deque()
        self.uniforms: deque = deque()
        self.orders: deque = deque()
        for micro in micro_batches:
            draws = micro["draws"]
            self.classmix.append((draws["classmix_n"], draws["classmix_choice"]))
            self.dplg.append(draws["dplg_t0"] - dplg_base)
            uniforms, order = augment_uniforms(draws, strength)
            self.uniforms.append(uniforms)
            self.orders.append(order)

    def classmix_randperm(self, n: int, **kwargs: object) -> torch.Tensor:
        expected_n, chosen = self.classmix.popleft()
        assert n == expected_n, f"ClassMix draws among {n} classes, the reference among {expected_n}"
        return torch.tensor(chosen + [i for i in range(n) if i not in chosen])

    def dplg_randint(self, low: int, high: int, size: tuple, **kwargs: object) -> torch.Tensor:
        assert (low, high, tuple(size)) == (0, 2, (1,)), f"DPLG draws randint({low}, {high}, {size})"
        return torch.tensor([self.dplg.popleft()])

    def augment_rand(self, *size: int, **kwargs: object) -> torch.Tensor:
        assert size == (1, 7), f"strong_augment draws rand{size}; the feeder serves one sample of 7"
        return torch.tensor([self.uniforms.popleft()], dtype=torch.float32)

    def augment_randperm(self, n: int, **kwargs: object) -> torch.Tensor:
        assert n == 4, f"strong_augment draws randperm({n})"
        return torch.tensor(self.orders.popleft())

    def install(self, monkeypatch: Any) -> None:
        monkeypatch.setattr(classmix_module, "torch", TorchWith(randperm=self.classmix_randperm))
        monkeypatch.setattr(dplg_module, "torch", TorchWith(randint=self.dplg_randint))
        monkeypatch.setattr(
            augment_module, "torch", TorchWith(rand=self.augment_rand, randperm=self.augment_randperm)
        )

    def assert_used_up(self) -> None:
        left = [name for name in ("classmix", "dplg", "uniforms", "orders") if getattr(self, name)]
        assert not left, f"recorded draws not used: {left}"

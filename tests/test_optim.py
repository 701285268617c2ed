"""The AdamW modes of madm_pl.optim on small parameter sets: the host-offloaded AdamW step for step and state
for state against torch's AdamW, checkpoint formats across modes, torchao's 8-bit resume, the errors."""

from __future__ import annotations

import math

import pytest
import torch

from madm_pl.optim import HostOffloadAdamW, adamw_8bit_class, build_adamw, parameter_groups


def make_params(seed: int = 0) -> list[torch.nn.Parameter]:
    """Four tensors of different shapes (one scalar-like), as a model's."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(64, 32), (32,), (8, 4, 3, 3), (1,)]
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]


def make_groups(params: list[torch.nn.Parameter]) -> list[dict]:
    """Named groups with their own lr and weight decay, as MADMModule.parameter_groups gives them."""
    return [
        {"name": "unet", "params": [params[0], params[2]], "weight_decay": 0.05, "lr": 1e-2},
        {"name": "unet_no_decay", "params": [params[1], params[3]], "weight_decay": 0.0, "lr": 1e-2},
    ]


def train(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], steps: range) -> None:
    """Steps as Lightning runs them: closure (gradients, clipping at 0.01) inside ``step``, an LR factor
    per step, ``zero_grad``. Step 2 leaves one tensor without gradient; step 3's gradients are dropped
    (the module's non-finite guard), so AdamW skips every tensor."""
    # a resumed run continues the schedule (the groups' initial_lr come from the loaded state)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 / (1 + steps.start + i))
    for step in steps:

        def closure(step: int = step) -> torch.Tensor:
            generator = torch.Generator().manual_seed(100 + step)
            loss = sum((p * torch.randn(p.shape, generator=generator)).sum() ** 2 for p in params)
            loss.backward()
            if step == 2:
                params[1].grad = None
            if step == 3:
                optimizer.zero_grad(set_to_none=True)
            grads = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                torch.nn.utils.clip_grad_norm_(grads, 0.01)
            return loss

        optimizer.step(closure)
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()


def assert_same_state(actual: dict, expected: dict) -> None:
    """Two optimizer state_dicts are equal: groups key for key, state tensors bit for bit."""
    assert actual["param_groups"] == expected["param_groups"]
    assert actual["state"].keys() == expected["state"].keys()
    for index, state in expected["state"].items():
        assert actual["state"][index].keys() == state.keys()
        for key, value in state.items():
            assert torch.equal(actual["state"][index][key].cpu(), value.cpu()), (index, key)


@pytest.mark.parametrize("implementation", ["foreach", "fused"])
def test_offload_equals_adamw_bit_for_bit(implementation: str) -> None:
    plain_params, offload_params = make_params(), make_params()
    plain = build_adamw("adamw", make_groups(plain_params), lr=1e-2, implementation=implementation)
    offload = build_adamw(
        "adamw-offload", make_groups(offload_params), lr=1e-2, implementation=implementation
    )
    assert isinstance(offload, HostOffloadAdamW)
    # the groups are the device parameters (what Lightning clips) with the same hyperparameters
    assert [p for g in offload.param_groups for p in g["params"]] == [
        offload_params[0],
        offload_params[2],
        offload_params[1],
        offload_params[3],
    ]
    train(plain, plain_params, range(5))
    train(offload, offload_params, range(5))
    for expected, actual in zip(plain_params, offload_params, strict=True):
        assert torch.equal(actual, expected)
    # the step-2 tensor without gradient and the dropped step 3 were skipped like AdamW skips them
    state = offload.state_dict()["state"]
    assert [float(state[i]["step"]) for i in range(4)] == [4.0, 4.0, 3.0, 4.0]
    assert_same_state(offload.state_dict(), plain.state_dict())
    # the device side holds no optimizer state: the moments live in the host optimizer
    assert not offload.state
    assert all(not p.is_pinned() for g in offload.host_optimizer.param_groups for p in g["params"])


def test_offload_state_dict_resumes_across_modes() -> None:
    """A checkpoint of either mode resumes in the other and continues as an uninterrupted plain run."""
    reference_params = make_params()
    reference = build_adamw("adamw", make_groups(reference_params), lr=1e-2)
    train(reference, reference_params, range(6))

    for first, second in (("adamw", "adamw-offload"), ("adamw-offload", "adamw")):
        params = make_params()
        optimizer = build_adamw(first, make_groups(params), lr=1e-2)
        train(optimizer, params, range(3))
        saved = optimizer.state_dict()
        weights = [p.detach().clone() for p in params]
        resumed_params = [torch.nn.Parameter(w) for w in weights]  # a new process: weights restored first
        resumed = build_adamw(second, make_groups(resumed_params), lr=1e-2)
        resumed.load_state_dict(saved)
        train(resumed, resumed_params, range(3, 6))
        for expected, actual in zip(reference_params, resumed_params, strict=True):
            assert torch.equal(actual, expected), (first, second)
        assert_same_state(resumed.state_dict(), reference.state_dict())


def test_offload_masters_follow_parameters_changed_before_the_first_step() -> None:
    """Lightning restores a checkpoint's weights or moves the model after building the optimizer: the host
    masters are read from the parameters at the first step, not at construction."""
    params = make_params()
    optimizer = HostOffloadAdamW(make_groups(params), lr=1e-2, foreach=True)
    with torch.no_grad():
        for param in params:
            param.fill_(0.5)
    expected_params = [torch.nn.Parameter(torch.full_like(p, 0.5)) for p in params]
    expected = torch.optim.AdamW(make_groups(expected_params), lr=1e-2, foreach=True)
    train(optimizer, params, range(2))
    train(expected, expected_params, range(2))
    for want, got in zip(expected_params, params, strict=True):
        assert torch.equal(got, want)


def test_sharded_needs_a_process_group_and_names_are_checked() -> None:
    params = make_params()
    with pytest.raises(ValueError, match=r"optimizer='adamw-sharded' .* no process group is initialised"):
        build_adamw("adamw-sharded", make_groups(params), lr=1e-2)
    with pytest.raises(ValueError, match=r"model\.optimizer='sgd': expected one of \['adamw', "):
        build_adamw("sgd", make_groups(params), lr=1e-2)
    with pytest.raises(ValueError, match=r"adamw_implementation='fused' does not apply to .*'adamw-8bit'"):
        build_adamw("adamw-8bit", make_groups(params), lr=1e-2, implementation="fused")
    with pytest.raises(ValueError, match=r"adamw_implementation='loop': expected 'foreach'"):
        build_adamw("adamw", make_groups(params), lr=1e-2, implementation="loop")


# ------------------------------------------------------------------------------------------ 8-bit
def big_params(seed: int = 0) -> list[torch.nn.Parameter]:
    """One tensor torchao quantises (4096 values, a multiple of its 256 block) and one it keeps in fp32."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in ((64, 64), (100,))]


def big_groups(params: list[torch.nn.Parameter]) -> list[dict]:
    return [{"name": "unet", "params": params, "weight_decay": 0.05, "lr": 1e-2}]


@pytest.fixture
def eager_compile():
    """torchao compiles its per-tensor step (minutes on a CPU): run it eagerly, same Python path."""
    with torch.compiler.set_stance("force_eager"):
        yield


def test_8bit_quantises_large_moments_and_resumes_from_a_plain_checkpoint(eager_compile) -> None:
    from torchao.optim.subclass_8bit import OptimState8bit

    plain_params = big_params()
    plain = build_adamw("adamw", big_groups(plain_params), lr=1e-2)
    train(plain, plain_params, range(2))
    params = [torch.nn.Parameter(p.detach().clone()) for p in plain_params]
    optimizer = build_adamw("adamw-8bit", big_groups(params), lr=1e-2)
    assert isinstance(optimizer, adamw_8bit_class())
    optimizer.load_state_dict(plain.state_dict())
    state = [optimizer.state[p] for p in params]
    # torchao's rule: >= 4096 values and a multiple of the block size are 8-bit, the rest fp32
    assert all(isinstance(state[0][key], OptimState8bit) for key in ("exp_avg", "exp_avg_sq"))
    assert type(state[1]["exp_avg"]) is torch.Tensor
    # the quantised moments hold the plain ones to 8-bit precision: torchao's dynamic map errs by < 1 % of
    # each block's (256 values) largest magnitude (measured: 0.7 % for the signed map, 0.35 % unsigned)
    for key in ("exp_avg", "exp_avg_sq"):
        expected = plain.state[plain_params[0]][key].reshape(-1, 256)
        error = (state[0][key].dequantize().reshape(-1, 256) - expected).abs()
        assert 0 < (error / expected.abs().amax(1, keepdim=True)).max() < 0.01
    train(optimizer, params, range(2, 4))  # the float lr of the plain state became a tensor again
    train(plain, plain_params, range(2, 4))
    difference = max((a - b).abs().max().item() for a, b in zip(params, plain_params, strict=True))
    # measured 3.9e-4 (torch 2.13 CPU) where each of the two steps moves a weight by up to lr/3 = 3.3e-3
    assert 0 < difference < 1e-3


def test_8bit_state_dict_round_trip(eager_compile, tmp_path) -> None:
    params = big_params()
    optimizer = build_adamw("adamw-8bit", big_groups(params), lr=1e-2)
    train(optimizer, params, range(2))
    torch.save(optimizer.state_dict(), tmp_path / "state.pt")
    copy_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = build_adamw("adamw-8bit", big_groups(copy_params), lr=1e-2)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    train(optimizer, params, range(2, 4))
    train(resumed, copy_params, range(2, 4))
    for expected, actual in zip(params, copy_params, strict=True):
        assert torch.equal(actual, expected)
    assert math.isclose(float(resumed.param_groups[0]["lr"]), float(optimizer.param_groups[0]["lr"]))


def test_parameter_groups_split_norms_and_biases_and_share_nothing() -> None:
    conv, norm, frozen = torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(2, 2)
    frozen.requires_grad_(False)
    head = torch.nn.Sequential(conv, norm, frozen)
    shared = torch.nn.Sequential(conv)  # conv is in both parts: only the first one holds it
    groups = parameter_groups([("unet", shared, 1e-3), ("head", head, 1e-2)], weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert list(by_name) == ["unet", "unet_no_decay", "head_no_decay"]  # no empty "head" group
    assert by_name["unet"]["params"] == [conv.weight] and by_name["unet_no_decay"]["params"] == [conv.bias]
    assert by_name["head_no_decay"]["params"] == [norm.weight, norm.bias]
    assert [(g["weight_decay"], g["lr"]) for g in groups] == [(0.05, 1e-3), (0.0, 1e-3), (0.0, 1e-2)]

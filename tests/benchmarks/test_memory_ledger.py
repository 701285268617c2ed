"""The memory ledger (issue 24): its accounting on hand-computed cases, the CUDA emulation, the allocator
model's rules, and the whole iteration on the tiny stack."""

import pytest
import torch
from torch import nn

from benchmarks import memory_ledger
from benchmarks.common import markers
from benchmarks.ledger.allocator import LARGE_BUFFER, SMALL_BUFFER, CachingAllocatorModel
from benchmarks.ledger.calibration import ConvWorkspace
from benchmarks.ledger.emulation import CudaEmulation
from benchmarks.ledger.tracker import Category, MemoryLedger, allocated_bytes

MiB = 1 << 20


def two_layer_net() -> nn.Sequential:
    """Linear(4 -> 8) + ReLU + Linear(8 -> 2) on meta: 4*8 + 8 + 8*2 + 2 = 58 fp32 = 232 bytes."""
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_categories_of_a_two_layer_net_equal_hand_counted_bytes():
    net = two_layer_net()
    optimizer = torch.optim.AdamW(net.parameters(), foreach=False)
    for parameter in net.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # exp_avg and exp_avg_sq on meta (the step counters are CPU scalars: not counted)
    optimizer.zero_grad(set_to_none=True)

    ledger = MemoryLedger(granule=1)  # raw bytes
    ledger.register(net.parameters(), Category.PARAMETERS)
    ledger.register_optimizer(optimizer)
    ledger.watch_gradients(net.parameters())
    with ledger:
        with ledger.phase("forward"):
            x = torch.ones(3, 4, device="meta")  # 3 * 4 * 4 = 48 bytes
            out = net(x)  # hidden (3, 8): freed; ReLU's output (3, 8) = 96 bytes saved; out (3, 2) = 24
            loss = out.sum()  # 4 bytes
        after_forward = ledger.current.copy()
        with ledger.phase("backward", creates=Category.TEMPORARIES):
            loss.backward()
        after_backward = ledger.current.copy()
        with ledger.phase("step", creates=Category.TEMPORARIES):
            optimizer.step()
        after_step = ledger.current.copy()

    assert after_forward.by_category == {
        Category.PARAMETERS: 232,
        Category.GRADIENTS: 0,
        Category.OPTIMIZER_STATES: 2 * 232,
        Category.ACTIVATIONS: 48 + 96 + 24 + 4,
        Category.TEMPORARIES: 0,
        Category.ALLOCATOR_SLACK: 0,
        Category.WORKSPACES: 0,
    }
    # Backward frees the saved ReLU output and makes one gradient per parameter; x, out, loss stay.
    assert after_backward.by_category[Category.GRADIENTS] == 232
    assert after_backward.by_category[Category.ACTIVATIONS] == 48 + 24 + 4
    assert after_backward.by_category[Category.TEMPORARIES] == 0
    assert after_step.total == after_backward.total  # the step's scratch is gone again
    # The peak happened in the backward (gradients plus the activations still saved) and sums up.
    assert ledger.peak.total == sum(ledger.peak.by_category.values())
    assert ledger.peak.total >= after_forward.total + 232 - 96
    assert [p.name for p in ledger.phases] == ["forward", "backward", "step"]


def test_allocation_rounding_and_the_caching_allocator_rules():
    assert [allocated_bytes(n) for n in (0, 1, 512, 513)] == [0, 512, 512, 1024]
    allocator = CachingAllocatorModel()
    small = allocator.malloc(100)  # small pool: a 2 MiB segment, split, 512-byte block
    assert (small.size, allocator.reserved) == (512, SMALL_BUFFER)
    large = allocator.malloc(3 * MiB)  # 1-10 MiB: a 20 MiB segment, split (17 MiB > 1 MiB remain)
    assert (large.size, allocator.reserved) == (3 * MiB, SMALL_BUFFER + LARGE_BUFFER)
    allocator.free(large)  # merges back into the whole 20 MiB free block
    whole = allocator.malloc(19 * MiB + MiB // 2)  # 0.5 MiB would remain: not split, the block is taken
    assert whole.size == LARGE_BUFFER
    assert allocator.allocated == 512 + LARGE_BUFFER
    odd = allocator.malloc(11 * MiB + 1)  # >= 10 MiB: its own segment rounded to 2 MiB, 1 MiB - 1 left
    assert odd.size == 12 * MiB and allocator.reserved == SMALL_BUFFER + LARGE_BUFFER + 12 * MiB


def test_bf16_emulation_saves_the_sizes_a_gpu_holds():
    emulation = CudaEmulation()
    with torch.device("meta"):
        conv = nn.Conv2d(4, 8, 3)
        norm = nn.GroupNorm(2, 8)
    x = torch.ones(2, 4, 16, 16, device="meta")
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with emulation, emulation.autocast(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = conv(x)
        again = conv(x)
        normed = norm(out)
    conv_saved = [t for t in saved[:2]]
    assert out.dtype == torch.bfloat16 and normed.dtype == torch.float32  # conv: bf16, group_norm: fp32
    # The conv saved its input and weight in bf16: 2 * 4 * 16 * 16 * 2 bytes, not the fp32 4 bytes.
    input_saved = next(t for t in conv_saved if t.shape == x.shape)
    assert input_saved.dtype == torch.bfloat16
    assert input_saved.untyped_storage().nbytes() == 2 * 4 * 16 * 16 * 2
    # The weight's bf16 cast is cached for the region: both convolutions saved the same tensor.
    weights = [t for t in saved if t.shape == conv.weight.shape]
    assert len(weights) == 2 and weights[0] is weights[1] and weights[0].dtype == torch.bfloat16
    assert again.dtype == torch.bfloat16
    # Outside the region nothing is cast.
    with emulation:
        assert conv(x).dtype == torch.float32


def test_attention_runs_the_flash_kernel_and_never_materialises_the_attention_matrix():
    emulation = CudaEmulation()
    q = torch.ones(1, 8, 4096, 40, device="meta", requires_grad=True)
    ledger = MemoryLedger(granule=1)
    with emulation, emulation.autocast(), ledger:
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert type(out.grad_fn).__name__ == "ScaledDotProductFlashAttentionBackward0"
    # q cast to bf16 (2.5 MiB), the output (2.5 MiB) and a (1, 8, 4096) fp32 logsumexp; no 4096 x 4096.
    assert ledger.peak.total < 8 * MiB


def test_conv_workspace_term_skips_depthwise_and_scales_with_the_input():
    workspace = ConvWorkspace(2.0)
    backward = torch.ops.aten.convolution_backward.default
    activation = torch.empty(1, 16, 8, 8, device="meta", dtype=torch.bfloat16)
    dense = (None, activation, torch.empty(4, 16, 3, 3, device="meta"), None, [1], [1], [1], False, [0], 1)
    depthwise = (
        None,
        activation,
        torch.empty(16, 1, 3, 3, device="meta"),
        None,
        [1],
        [1],
        [1],
        False,
        [0],
        16,
    )
    assert workspace(backward, dense) == 2 * 16 * 8 * 8 * 2
    assert workspace(backward, depthwise) == 0
    assert workspace(torch.ops.aten.convolution.default, dense) == 0


def consistent(mode: dict) -> None:
    """The categories add up to the peak, the phases' peaks reach it, every phase of an iteration ran."""
    assert sum(mode["by_category_gib"].values()) == pytest.approx(mode["peak_allocated_gib"], rel=1e-9)
    assert max(mode["by_phase_gib"].values()) == pytest.approx(mode["peak_allocated_gib"], rel=1e-9)
    assert set(memory_ledger.PHASE_ORDER) <= set(mode["by_phase_gib"])
    assert mode["peak_reserved_gib"] >= mode["peak_allocated_gib"]


def test_the_ledger_runs_end_to_end_on_the_tiny_stack(tmp_path):
    start, end = markers(memory_ledger.MARKERS)
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(f"before\n{start}\nold\n{end}\nafter\n")
    payload = memory_ledger.main(["--smoke", "--modes", "recipe", "--markdown", str(report)])
    recipe = payload["modes"]["recipe"]
    consistent(recipe)
    assert recipe["by_category_gib"]["optimizer states"] > 0
    assert recipe["by_category_gib"]["workspaces"] > 0  # the cuBLAS workspaces at least
    text = report.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| `recipe` |" in text


@pytest.mark.slow
def test_every_mode_on_the_tiny_stack():
    payload = memory_ledger.main(["--smoke"])
    modes = payload["modes"]
    for mode in modes.values():
        consistent(mode)
    # offload: no AdamW state on the device; 8-bit: less than fp32 states; sharded: about half of them.
    states = {name: mode["by_category_gib"]["optimizer states"] for name, mode in modes.items()}
    assert states["offload"] == 0
    assert 0 < states["adamw-8bit"] < states["recipe"]
    assert 0.3 * states["recipe"] < states["sharded"] < 0.7 * states["recipe"]
    assert modes["offload"]["peak_allocated_gib"] < modes["recipe"]["peak_allocated_gib"]

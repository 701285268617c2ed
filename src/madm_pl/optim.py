"""The recipe's AdamW in four memory modes (issue 24; docs/PAPER_RECIPES.md §6, docs/ARCHITECTURE.md).

``model.init_args.optimizer`` picks one; all take the same named parameter groups, learning rates and
weight decays (``parameter_groups``, of the parts ``MADMModule.parameter_groups`` names) and the same LR
schedule (Lightning's ``LambdaLR`` writes each group's ``lr`` before every step):

- ``adamw``: ``torch.optim.AdamW`` (foreach), parameters, gradients and both moments on the device.
- ``adamw-offload``: :class:`HostOffloadAdamW`: the same AdamW, run on the host on fp32 master copies;
  the device keeps only the parameters and their gradients. Same numbers as ``adamw`` (bit for bit on the
  CPU; on a GPU the update runs in the CPU's kernels instead of CUDA's, see the class).
- ``adamw-8bit``: torchao's ``AdamW8bit`` (both moments blockwise-quantised to 8 bits): an approximate,
  opt-in deviation (docs/DEVIATIONS.md).
- ``adamw-sharded``: torch's ``ZeroRedundancyOptimizer`` over AdamW under DDP: each process keeps the
  moments of its share of the parameters. Same numbers as ``adamw`` under DDP.

A layer-1 file: it imports torch only (torchao when ``adamw-8bit`` is built).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

OptimizerName = Literal["adamw", "adamw-offload", "adamw-8bit", "adamw-sharded"]
OPTIMIZERS: tuple[str, ...] = ("adamw", "adamw-offload", "adamw-8bit", "adamw-sharded")
AdamWImplementation = Literal["foreach", "fused"]
#: Parameters of these layers are not weight-decayed (nor biases).
NORM_TYPES = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)


def parameter_groups(
    parts: Iterable[tuple[str, torch.nn.Module, float]], weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW's named parameter groups: per part, its decayed parameters and, as ``<name>_no_decay``, those
    of norm layers and biases (weight decay 0).

    Args:
        parts: ``(name, module, lr)``: the group name, the module whose trainable parameters it holds (a
            parameter already in an earlier part is not repeated) and the group's learning rate.
        weight_decay: of the decayed groups.

    Returns:
        ``[{"name", "params", "weight_decay", "lr"}, ...]`` in the order of ``parts``, decayed group
        first; empty groups left out.
    """
    groups = []
    seen: set[int] = set()
    for part, module, lr in parts:
        decay, no_decay = [], []
        for submodule in module.modules():
            for name, param in submodule.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                is_norm = isinstance(submodule, NORM_TYPES)
                (no_decay if is_norm or name.endswith("bias") else decay).append(param)
        for name, params, decay_rate in ((part, decay, weight_decay), (f"{part}_no_decay", no_decay, 0.0)):
            if params:
                groups.append({"name": name, "params": params, "weight_decay": decay_rate, "lr": lr})
    return groups


def build_adamw(
    name: str,
    groups: list[dict[str, Any]],
    lr: float,
    implementation: str = "foreach",
) -> torch.optim.Optimizer:
    """The optimizer of mode ``name`` over ``groups``.

    Args:
        name: one of :data:`OPTIMIZERS`.
        groups: parameter groups, each ``{"name", "params", "lr", "weight_decay"}``.
        lr: the default learning rate (every group sets its own).
        implementation: torch's AdamW kernels, ``foreach`` (the recipe's) or ``fused`` (one kernel per
            step; rounding-level differences from foreach). Not for ``adamw-8bit`` (torchao's own).

    Raises:
        ValueError: an unknown name or implementation, ``fused`` with ``adamw-8bit``, or
            ``adamw-sharded`` without an initialised process group (DDP).
    """
    if implementation not in ("foreach", "fused"):
        raise ValueError(
            f"model.adamw_implementation={implementation!r}: expected 'foreach' (the recipe's) or 'fused'"
        )
    kernels = {implementation: True}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **kernels)
    if name == "adamw-offload":
        return HostOffloadAdamW(groups, lr=lr, **kernels)
    if name == "adamw-8bit":
        if implementation != "foreach":
            raise ValueError(
                "model.adamw_implementation='fused' does not apply to model.optimizer='adamw-8bit' "
                "(torchao's AdamW8bit has its own compiled kernel): set adamw_implementation: foreach"
            )
        return adamw_8bit_class()(groups, lr=lr)
    if name == "adamw-sharded":
        return sharded_adamw(groups, lr=lr, **kernels)
    raise ValueError(f"model.optimizer={name!r}: expected one of {list(OPTIMIZERS)}")


# ---------------------------------------------------------------------------------------- offload
class HostOffloadAdamW(torch.optim.Optimizer):
    """``torch.optim.AdamW`` whose state and fp32 master weights live in host memory.

    ``param_groups`` hold the device parameters, so everything that acts on an optimizer's groups before
    the step acts exactly as with a plain AdamW: Lightning's gradient clipping (on the device gradients),
    gradient accumulation (autograd's own), ``zero_grad``, the LR scheduler and the module's
    non-finite-gradient guard. At :meth:`step`:

    1. the closure runs (forward, backward, clipping: Lightning's closure);
    2. each gradient is copied device -> host into a host buffer (pinned when the device is a CUDA GPU;
       the copies are queued non-blocking, then the stream is synchronised once);
    3. ``torch.optim.AdamW`` (same kernels, foreach or fused, same groups; lr and weight decay copied from
       ``param_groups``, where the scheduler wrote them) updates the host masters;
    4. each updated master is copied host -> device into its parameter, in place (non-blocking from pinned
       memory: later kernels on the stream wait for it; the host masters are written again only after the
       next step's synchronisation).

    A parameter without a gradient is skipped as AdamW skips it (no copy, no state change). The masters
    are copied from the device parameters before the first step and after every :meth:`load_state_dict`
    (the parameters may be moved or restored after the optimizer is built); between steps only the step
    writes the trained parameters, so parameter and master stay equal. Device memory: parameters and
    gradients only, no AdamW state and no staging buffer. Host memory: masters and gradient buffers
    (pinned on CUDA) plus the two moments, 4 x the trained parameters' bytes.

    :meth:`state_dict` is the host AdamW's, i.e. plain ``torch.optim.AdamW``'s format with the same
    parameter indices and groups: a checkpoint resumes across ``adamw`` and ``adamw-offload`` (torch's
    ``load_state_dict`` moves the moments to each parameter's device).

    Numbers: on the CPU the update is bit-identical to ``torch.optim.AdamW`` on the parameters. On a GPU
    the same float32 arithmetic runs in the CPU's kernels instead of CUDA's; elementwise ops are
    correctly rounded in both, but fused multiply-adds and ``lerp``'s formula may differ in the last bit.

    Args:
        params: parameter groups (dicts with ``params`` and any AdamW option) or parameters.
        lr, betas, eps, weight_decay: AdamW's defaults for groups that do not set them.
        foreach, fused: torch's AdamW implementation on the host (the recipe: foreach).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        self._host_groups: list[dict[str, Any]] = []
        self._host: torch.optim.AdamW | None = None
        self._masters_stale = True
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self._host = torch.optim.AdamW(self._host_groups, lr=lr, foreach=foreach, fused=fused)
        self._grad_buffers: dict[int, Tensor] = {}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        # Values come from the device parameters before the first step (_refresh_masters).
        masters = [torch.empty(p.shape, dtype=p.dtype, device="cpu") for p in group["params"]]
        host_group = {**_hyperparameters(group), "params": masters}
        if self._host is None:
            self._host_groups.append(host_group)
        else:
            self._host.add_param_group(host_group)

    @property
    def host_optimizer(self) -> torch.optim.AdamW:
        """The host AdamW (its params are the masters, its state the moments)."""
        assert self._host is not None
        return self._host

    def _pairs(self) -> Iterable[tuple[Tensor, Tensor]]:
        for group, host_group in zip(self.param_groups, self.host_optimizer.param_groups, strict=True):
            yield from zip(group["params"], host_group["params"], strict=True)

    def _sync_hyperparameters(self) -> None:
        for group, host_group in zip(self.param_groups, self.host_optimizer.param_groups, strict=True):
            host_group.update(_hyperparameters(group))

    def _refresh_masters(self) -> None:
        for param, master in self._pairs():
            if param.device.type == "cuda" and not master.is_pinned():
                master.data = torch.empty_like(master, pin_memory=True)
            master.detach().copy_(param.detach())
        self._masters_stale = False

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._masters_stale:
            self._refresh_masters()
        self._sync_hyperparameters()
        updated, streams = [], set()
        for param, master in self._pairs():
            if param.grad is None:
                master.grad = None
                continue
            pinned = master.is_pinned()
            buffer = self._grad_buffers.get(id(master))
            if buffer is None or buffer.is_pinned() != pinned:
                buffer = torch.empty_like(master, pin_memory=pinned)
                self._grad_buffers[id(master)] = buffer
            # non-blocking only into pinned memory (a device-to-pageable copy is always synchronous)
            buffer.copy_(param.grad, non_blocking=pinned)
            master.grad = buffer
            updated.append((param, master))
            if pinned:
                streams.add(torch.cuda.current_stream(param.device))
        for stream in streams:
            stream.synchronize()  # the gradients are on the host before AdamW reads them
        self.host_optimizer.step()
        for param, master in updated:
            param.copy_(master, non_blocking=master.is_pinned())
        return loss

    def state_dict(self) -> dict[str, Any]:
        self._sync_hyperparameters()
        return self.host_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.host_optimizer.load_state_dict(state_dict)
        for group, host_group in zip(self.param_groups, self.host_optimizer.param_groups, strict=True):
            group.update(_hyperparameters(host_group))
        self._masters_stale = True


def _hyperparameters(group: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in group.items() if key != "params"}


# ------------------------------------------------------------------------------------------ 8-bit
@functools.cache
def adamw_8bit_class() -> type[torch.optim.Optimizer]:
    """torchao's ``AdamW8bit`` with a resumable ``load_state_dict`` (imported on first use).

    torchao 0.18's AdamW8bit keeps both moments of each tensor with >= 4096 values whose count is a
    multiple of the block size (256) as 8-bit codes with one fp32 scale per 256 values (``OptimState8bit``);
    smaller tensors keep fp32 moments. Its step compiles one kernel per parameter shape with
    ``torch.compile`` (minutes on the first step of a CPU, cached on disk afterwards).

    The subclass changes one thing: a state loaded from another mode's checkpoint (full-precision moments,
    a float ``lr``) is quantised into torchao's 8-bit state and its learning rates turned back into the
    tensors the step expects, instead of stepping on fp32 moments (no memory saved) or failing on the
    float ``lr``.
    """
    from torchao.optim import AdamW8bit
    from torchao.optim.subclass_8bit import OptimState8bit

    class ResumableAdamW8bit(AdamW8bit):
        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            super().load_state_dict(state_dict)
            for group in self.param_groups:
                if not isinstance(group["lr"], Tensor):
                    group["lr"] = torch.tensor(group["lr"], dtype=torch.float32)
                for param in group["params"]:
                    state = self.state.get(param, {})
                    for key, signed in (("exp_avg", True), ("exp_avg_sq", False)):
                        value = state.get(key)
                        if value is None or isinstance(value, OptimState8bit):
                            continue
                        buffer = self._new_buffer(param, signed)
                        if isinstance(buffer, OptimState8bit):
                            buffer.copy_(value)
                            state[key] = buffer

    return ResumableAdamW8bit


# ---------------------------------------------------------------------------------------- sharded
def sharded_adamw(groups: list[dict[str, Any]], lr: float, **kernels: bool) -> torch.optim.Optimizer:
    """``ZeroRedundancyOptimizer`` over ``torch.optim.AdamW``: each DDP process keeps its share's moments.

    ZeRO gives every parameter to one rank (greedily by size), steps AdamW there and broadcasts the
    updated parameter; the update of each element is AdamW's, so the weights equal an unsharded DDP run's.
    Lightning's DDP strategy consolidates the shards on rank 0 when it saves a checkpoint
    (``Strategy.optimizer_state`` calls ``consolidate_state_dict``), and the consolidated state has plain
    AdamW's format (global parameter indices).

    Raises:
        ValueError: no process group is initialised (not under DDP).
    """
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "model.optimizer='adamw-sharded' shards the AdamW state over DDP processes, but no process "
            "group is initialised: train with trainer.strategy ddp and trainer.devices >= 2 "
            "(docs/PAPER_RECIPES.md §4), or use optimizer adamw / adamw-offload on one device"
        )
    # AdamW's every default, so that the consolidated state_dict's groups hold the keys plain AdamW's do;
    # AdamW sets decoupled_weight_decay itself and refuses it as an argument, so the groups carry it.
    defaults = dict(torch.optim.AdamW([torch.zeros(1)], **kernels).defaults, lr=lr)
    decoupled = defaults.pop("decoupled_weight_decay")
    groups = [{**group, "decoupled_weight_decay": decoupled} for group in groups]
    return ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, **defaults)

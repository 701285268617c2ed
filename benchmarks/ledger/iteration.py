"""One training iteration of the real ``MADMModule`` on the ``meta`` device, as Lightning drives it.

:func:`predict` builds the module of a memory mode (:data:`MODES`, the names and semantics of
``/work/notes/MODES.md``) on ``meta``, puts it in the state the *second* iteration starts from (the
AdamW state exists and the previous iteration's gradients are still allocated: Lightning zeroes them
only after the next ``training_step``), and runs one iteration under :class:`~.tracker.MemoryLedger`
and :class:`~.emulation.CudaEmulation` in Lightning's order of automatic optimisation with gradient
accumulation: per micro-batch ``on_train_batch_start`` (the EMA update, first micro-batch only),
``training_step`` inside autocast, ``zero_grad(set_to_none=True)`` (first micro-batch only, after its
``training_step``), backward of ``loss / micro_batches``; then ``on_before_optimizer_step``, gradient
clipping by norm over the optimiser's parameters, ``optimizer.step()``.

The module is not modified: the ledger attaches a stand-in for the few trainer attributes the step
reads (:class:`TrainerStandIn`), drops ``self.log`` (Lightning keeps a few device scalars), gives the
UNet and the head checkpoint functions that recompute under the emulated autocast, and wraps
``segment``/``palette_latent`` on the instance to name the phases.

The optimisers of the modes, device side only (what stays on the GPU):

- ``adamw``: the module's own ``configure_optimizers`` (torch AdamW, foreach, named groups).
- ``adamw-offload``: parameters and gradients stay; AdamW's states and the fp32 master copy live on
  the host, so the device holds no state, and the step's copies (gradient to host, updated weight back
  into the parameter in place) allocate nothing on the device (:class:`OffloadedAdamW`).
- ``adamw-8bit``: torchao's ``AdamW8bit`` states, made by torchao's own ``_new_buffer`` on ``meta``
  (quantised only when ``numel >= 4096`` and ``numel % 256 == 0``, else fp32; ``step`` on the host),
  and a step whose scratch is two fp32 copies of one parameter at a time (:class:`EightBitAdamW`).
- ``adamw-sharded``: DDP with ``gradient_as_bucket_view=True`` (the gradients are views of buckets
  that stay allocated) and ``ZeroRedundancyOptimizer``: this rank's AdamW holds the states of the
  parameters ZeRO's own greedy partition gives it (:func:`zero_partition`); one micro-batch per step.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchmarks.common import RandomPairs, config_head_widths, madm_head
from benchmarks.ledger.allocator import CachingAllocatorModel
from benchmarks.ledger.calibration import CONV_WORKSPACE_COEFFICIENT, ConvWorkspace, cublas_workspace_bytes
from benchmarks.ledger.emulation import CudaEmulation
from benchmarks.ledger.tracker import Category, MemoryLedger, PhaseRecord, Snapshot
from madm_pl.labels import get_task
from madm_pl.module import MADMModule

#: The paper head's widths, read from configs/base.yaml through the project's parser.
PAPER_HEAD = config_head_widths()


@dataclass(frozen=True)
class Mode:
    """A memory mode of the one-GPU recipe (MODES.md).

    Attributes:
        name: ``recipe``, ``eager``, ``offload``, ``adamw-8bit`` or ``sharded``.
        checkpointing: UNet gradient checkpointing and head activation checkpointing.
        optimizer: ``adamw``, ``adamw-offload``, ``adamw-8bit`` or ``adamw-sharded``.
        micro_batches: accumulated micro-batches per optimiser step (``accumulate_grad_batches``).
        world_size: data-parallel processes (figures are per GPU).
        vae_bf16: the frozen VAE's weights stored in bf16 (the precision the bf16-mixed step uses).
        description: one line for the report.
    """

    name: str
    checkpointing: bool
    optimizer: str
    micro_batches: int = 2
    world_size: int = 1
    vae_bf16: bool = False
    description: str = ""


MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("recipe", True, "adamw", description="as configs/rgb2*.yaml: UNet + head checkpointing, AdamW"),
        Mode("eager", False, "adamw", description="no checkpointing"),
        Mode(
            "offload",
            True,
            "adamw-offload",
            vae_bf16=True,
            description="recipe + AdamW states and master weights on the host, VAE weights bf16",
        ),
        Mode("adamw-8bit", True, "adamw-8bit", description="recipe + torchao AdamW8bit (approximate)"),
        Mode(
            "sharded",
            True,
            "adamw-sharded",
            micro_batches=1,
            world_size=2,
            description="2 GPUs, DDP (bucket views) + ZeroRedundancyOptimizer, batch 1 per GPU",
        ),
    )
}


@dataclass(frozen=True)
class Problem:
    """The size of the step: backbone, image side, batch per micro-batch, head, task, clipping."""

    backbone: str = "sd14-random"
    size: int = 512
    batch_size: int = 1
    head: tuple[tuple[str, int], ...] = tuple(PAPER_HEAD.items())
    task: str = "rgb2infrared"
    clip: float = 0.01
    max_steps: int = 10000


@dataclass
class LedgerResult:
    """What one predicted iteration gives.

    Attributes:
        mode: the mode's name.
        start: tracked bytes when the iteration starts (parameters, buffers, last gradients, states).
        peak: the iteration's peak, with its categories.
        peak_phase: the phase (and micro-batch) where the peak happened.
        peak_op: the operator whose output reached it.
        phases: every phase in order, each with its own peak.
        parameters_bytes: parameters and buffers on the device.
        trained_parameters: how many parameters the optimiser updates.
        peak_reserved: the allocator model's peak of reserved segments (``max_memory_reserved``).
    """

    mode: str
    start: Snapshot
    peak: Snapshot
    peak_phase: str
    peak_op: str
    phases: list[PhaseRecord] = field(default_factory=list)
    parameters_bytes: int = 0
    trained_parameters: int = 0
    peak_reserved: int = 0


class TrainerStandIn(types.SimpleNamespace):
    """The trainer attributes ``MADMModule``'s training hooks read (global_step, accumulate_grad_batches,
    global_rank, precision_plugin.scaler, max_steps, precision)."""


def _discard_log(*args: Any, **kwargs: Any) -> None:
    """``LightningModule.log`` stand-in: the ledger keeps no metrics (Lightning's are device scalars)."""


# --------------------------------------------------------------------------------------- optimisers
class OffloadedAdamW:
    """Device side of ``adamw-offload`` (MODES.md): the step allocates nothing on the device.

    The host keeps the AdamW states and an fp32 master copy per parameter; the step copies each
    gradient to the host and the updated master back into the parameter in place. Neither copy makes a
    device tensor, so the device-side step is empty here. ``param_groups`` are the module's own.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.param_groups = optimizer.param_groups
        self.state: dict[Any, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                parameter.grad = None

    def step(self) -> None:
        """The host update: no device allocation (grad -> host, host master -> parameter in place)."""


class EightBitAdamW(OffloadedAdamW):
    """Device side of ``adamw-8bit``: torchao ``AdamW8bit``'s states made by torchao itself on the device.

    The step is torchao's compiled ``single_param_adam``, one parameter at a time; its scratch is
    counted as two fp32 copies of the parameter (the dequantised moments), freed before the next one:
    an upper bound for a fused kernel.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, block_size: int = 256) -> None:
        super().__init__(optimizer)
        from torchao.optim import AdamW8bit  # optional dependency, needed only by this mode

        self._maker = AdamW8bit([nn.Parameter(torch.zeros(1))], block_size=block_size)

    def step(self) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                if parameter not in self.state:  # made at the first step, as torchao does
                    self.state[parameter] = {
                        "exp_avg": self._maker._new_buffer(parameter, True),
                        "exp_avg_sq": self._maker._new_buffer(parameter, False),
                    }
                scratch = [torch.empty_like(parameter, dtype=torch.float32) for _ in range(2)]
                del scratch


def zero_partition(optimizer: torch.optim.Optimizer, world_size: int) -> list[list[dict]]:
    """``ZeroRedundancyOptimizer``'s own partition of the parameter groups over ``world_size`` ranks.

    Runs torch's ``ZeroRedundancyOptimizer._partition_parameters`` (greedy: each group's parameters,
    largest first, to the rank with the fewest elements so far) on a stand-in holding only what it
    reads, so no process group is needed.

    Returns:
        Per rank, its parameter groups (the module's groups, each with the rank's share of ``params``).
    """
    from torch.distributed.optim import ZeroRedundancyOptimizer

    stand_in = types.SimpleNamespace(
        _partition_parameters_cache=[], world_size=world_size, param_groups=optimizer.param_groups
    )
    stand_in._get_min_index = types.MethodType(ZeroRedundancyOptimizer._get_min_index, stand_in)
    stand_in._partition_param_group = types.MethodType(
        ZeroRedundancyOptimizer._partition_param_group, stand_in
    )
    return ZeroRedundancyOptimizer._partition_parameters(stand_in)


class ShardedAdamW:
    """Device side of ``adamw-sharded`` on one rank: DDP bucket-view gradients + ZeRO's local AdamW.

    ``buckets`` hold every trained parameter's gradient storage for the whole run (DDP's reducer owns
    them; ``zero_grad(set_to_none=True)`` drops ``param.grad`` but not the bucket). After autograd
    accumulates a fresh gradient, the reducer copies it into the bucket and makes ``param.grad`` the
    bucket view (:meth:`bucket_hook`). The step is torch's AdamW (foreach) over this rank's partition.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, world_size: int, rank: int) -> None:
        self.param_groups = optimizer.param_groups
        partition = zero_partition(optimizer, world_size)[rank]
        local_groups = [group for group in partition if group["params"]]
        self.local = torch.optim.AdamW(local_groups, foreach=True)
        self.state = self.local.state
        self.buckets: dict[nn.Parameter, torch.Tensor] = {}

    def allocate_buckets(self) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                self.buckets[parameter] = torch.zeros_like(parameter)
                parameter.grad = self.buckets[parameter]

    def bucket_hook(self, parameter: nn.Parameter) -> None:
        bucket = self.buckets[parameter]
        if parameter.grad is not None and parameter.grad is not bucket:
            bucket.copy_(parameter.grad)
            parameter.grad = bucket

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                parameter.grad = None

    def step(self) -> None:
        self.local.step()


def build_optimizer(module: MADMModule, mode: Mode) -> Any:
    """The device side of the mode's optimiser over ``module.configure_optimizers()``'s groups."""
    optimizer = module.configure_optimizers()["optimizer"]
    if mode.optimizer == "adamw":
        return optimizer
    if mode.optimizer == "adamw-offload":
        return OffloadedAdamW(optimizer)
    if mode.optimizer == "adamw-8bit":
        return EightBitAdamW(optimizer)
    if mode.optimizer == "adamw-sharded":
        # Report the rank with the larger share of the states (the partition is nearly even).
        shares = [
            sum(p.numel() for group in groups for p in group["params"])
            for groups in zero_partition(optimizer, mode.world_size)
        ]
        return ShardedAdamW(optimizer, mode.world_size, rank=shares.index(max(shares)))
    raise ValueError(
        f"unknown optimizer {mode.optimizer!r}: expected adamw, adamw-offload, adamw-8bit or adamw-sharded"
    )


def trained_parameters(optimizer: Any) -> list[nn.Parameter]:
    """Every parameter of the optimiser's groups (the module's ``configure_optimizers`` groups)."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def optimizer_state_tensors(optimizer: Any) -> list[torch.Tensor]:
    """The state tensors of an optimiser, tensor subclasses (torchao's 8-bit states) by their parts."""
    tensors: list[torch.Tensor] = []
    for state in optimizer.state.values():
        for value in state.values():
            if not isinstance(value, torch.Tensor):
                continue
            if type(value) is not torch.Tensor and hasattr(value, "__tensor_flatten__"):
                names, _ = value.__tensor_flatten__()
                tensors.extend(getattr(value, name) for name in names)
            else:
                tensors.append(value)
    return tensors


# ------------------------------------------------------------------------------------------ module
def build_module(mode: Mode, problem: Problem, emulation: CudaEmulation) -> MADMModule:
    """The recipe's module on ``meta``, with the mode's switches and checkpoints that recompute in the
    emulated autocast."""
    # The tiny stack runs its text encoder once to make ``uncond``, which needs real tensors; it is
    # small, so it is built on the CPU and moved. Every other stack is built on ``meta`` directly.
    with torch.device("cpu" if problem.backbone == "tiny" else "meta"):
        module = MADMModule(
            task=problem.task,
            backbone=problem.backbone,
            unet_gradient_checkpointing=mode.checkpointing,
            head=madm_head(dict(problem.head), activation_checkpointing=mode.checkpointing),
            # the module's own option: conv/linear weights in bf16, norms in fp32 (MODES.md)
            vae_dtype="bfloat16" if mode.vae_bf16 else "float32",
        )
    module.to("meta")  # the buffers made on the CPU (palette, uncond, fixed noise), the tiny stack
    if mode.checkpointing:
        module.backbone.unet.enable_gradient_checkpointing(gradient_checkpointing_func=emulation.checkpoint)
        head = module.student.head
        contexts = head._checkpoint_contexts
        head._checkpoint_contexts = lambda: emulation.checkpoint_contexts(contexts)
    module.train()
    return module


def random_batch(problem: Problem, index: int) -> dict[str, torch.Tensor]:
    """Micro-batch ``index`` of random training items (images in [0,1], blocky labels), on the CPU."""
    items = RandomPairs(problem.size, get_task(problem.task).num_classes, 10**6)
    samples = [items[index * problem.batch_size + i] for i in range(problem.batch_size)]
    return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


@dataclass
class PassState:
    """Where ``training_step`` is: the micro-batch and how many student passes it has run."""

    micro_batch: int = 0
    student_passes: int = 0


@contextlib.contextmanager
def _named_passes(module: MADMModule, ledger: MemoryLedger, state: PassState) -> Iterator[None]:
    """Name the phases inside ``training_step``: the three passes and the palette encodes."""
    segment, palette_latent = module.segment, module.palette_latent

    def named_segment(net: nn.Module, image: torch.Tensor, timestep: int = 0) -> Any:
        if net is module.teacher:
            name = "teacher pass"
        else:
            name = "student source pass" if state.student_passes == 0 else "student mixed pass"
            state.student_passes += 1
        with ledger.phase(name, state.micro_batch):
            return segment(net, image, timestep)

    def named_palette_latent(label: torch.Tensor) -> torch.Tensor:
        with ledger.phase("palette encodes", state.micro_batch):
            return palette_latent(label)

    module.segment, module.palette_latent = named_segment, named_palette_latent
    try:
        yield
    finally:
        del module.segment, module.palette_latent


def run_iteration(
    module: MADMModule,
    optimizer: Any,
    ledger: MemoryLedger,
    emulation: CudaEmulation,
    mode: Mode,
    problem: Problem,
    state: PassState,
) -> None:
    """One iteration in Lightning's order of automatic optimisation (see the module docstring).

    Args:
        state: updated here, read by the phase names inside ``training_step``.
    """
    parameters = trained_parameters(optimizer)
    for index in range(mode.micro_batches):
        state.micro_batch, state.student_passes = index, 0
        with ledger.phase("batch to device", index):
            batch = {key: value.to("meta") for key, value in random_batch(problem, index).items()}
        with ledger.phase("EMA update", index):
            module.on_train_batch_start(batch, index)
        with ledger.phase("losses, ClassMix, augmentation", index), emulation.autocast():
            output = module.training_step(batch, index)
        if output is None:
            raise RuntimeError("training_step returned None on meta: the ledger cannot follow a skipped step")
        loss = output["loss"] / mode.micro_batches  # Lightning's normalisation, outside autocast
        if index == 0:
            optimizer.zero_grad(set_to_none=True)  # Lightning: after the first training_step
        with ledger.phase("backward", index, creates=Category.TEMPORARIES):
            loss.backward()
        del loss
        if index < mode.micro_batches - 1:
            del output, batch  # Lightning drops a micro-batch's batch and closure result after it
    with ledger.phase("clipping", creates=Category.TEMPORARIES):
        module.on_before_optimizer_step(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, problem.clip)
    with ledger.phase("optimizer step", creates=Category.TEMPORARIES):
        optimizer.step()


def predict(
    mode: Mode,
    problem: Problem = Problem(),
    iterations: int = 2,
    conv_workspace: float = CONV_WORKSPACE_COEFFICIENT,
    cublas_bytes: int | None = None,
) -> LedgerResult:
    """Run ``iterations`` iterations of ``mode`` on ``meta`` and return the ledger of the last one.

    Args:
        mode, problem: what to run.
        iterations: the last one is measured (2: the second iteration, AdamW state made).
        conv_workspace: cuDNN backward-convolution workspace per input byte (:mod:`.calibration`).
        cublas_bytes: persistent cuBLAS workspaces (None: :func:`.calibration.cublas_workspace_bytes`).

    The ledger and the allocator model follow the run from the parameters on (allocated first, in
    module order, as building the module on the GPU does); the first iterations make the gradients, the
    optimiser states and the allocator's cached segments; the peak is reset before the last one, as
    ``benchmarks.gpu_recipe`` resets it after its warm-up iterations.
    """
    if iterations < 2:
        raise ValueError(f"iterations={iterations}: at least 2 (the first one makes the optimiser states)")
    task = get_task(problem.task)
    emulation = CudaEmulation(unique_size=task.num_classes + 1)
    module = build_module(mode, problem, emulation)
    module.trainer = TrainerStandIn(
        global_step=0,
        accumulate_grad_batches=mode.micro_batches,
        global_rank=0,
        precision_plugin=types.SimpleNamespace(scaler=None),
        precision="bf16-mixed",
        max_steps=problem.max_steps,
    )
    module.log = _discard_log
    optimizer = build_optimizer(module, mode)
    parameters = trained_parameters(optimizer)

    allocator = CachingAllocatorModel()
    ledger = MemoryLedger(allocator=allocator, workspace=ConvWorkspace(conv_workspace))
    ledger.register(module.parameters(), Category.PARAMETERS)
    ledger.register(module.buffers(), Category.PARAMETERS)
    parameters_bytes = ledger.current.by_category[Category.PARAMETERS]
    ledger.allocate_workspace(cublas_workspace_bytes() if cublas_bytes is None else cublas_bytes)
    state = PassState()
    with emulation, ledger, _named_passes(module, ledger, state):
        if isinstance(optimizer, ShardedAdamW):
            optimizer.allocate_buckets()  # DDP's buckets, made when DDP wraps the module
            ledger.register((p.grad for p in parameters), Category.GRADIENTS)
            for parameter in parameters:
                parameter.register_post_accumulate_grad_hook(optimizer.bucket_hook)
        ledger.watch_gradients(parameters)
        for iteration in range(iterations):
            module.trainer.global_step = iteration
            if iteration == iterations - 1:
                start = ledger.current.copy()
                ledger.reset_peak()
            run_iteration(module, optimizer, ledger, emulation, mode, problem, state)
            ledger.register(optimizer_state_tensors(optimizer), Category.OPTIMIZER_STATES)
    if ledger.current.total != allocator.allocated:
        raise RuntimeError(
            "the ledger and its allocator model disagree: a storage was counted twice or missed"
        )
    return LedgerResult(
        mode=mode.name,
        start=start,
        peak=ledger.peak,
        peak_phase=ledger.peak_phase,
        peak_op=ledger.peak_op,
        phases=ledger.phases,
        parameters_bytes=parameters_bytes,
        trained_parameters=sum(p.numel() for p in parameters),
        peak_reserved=allocator.peak_reserved,
    )

"""Device-memory accounting of the tensors an iteration makes: by category, by phase, at the peak.

:class:`MemoryLedger` is a ``TorchDispatchMode``: every tensor an operator returns on the tracked
device (``meta`` in the ledger, where nothing is really allocated) has its storage counted, in the
block size the CUDA caching allocator would hand out (:func:`allocated_bytes`), until the storage is
freed (a weak reference's callback). ``torch.cuda.max_memory_allocated`` counts exactly these blocks,
so the ledger's peak is its prediction, before the terms no tracker of tensors can see
(:mod:`benchmarks.ledger.calibration`).

Categories (:class:`Category`) are assigned by what a storage is, not by where its op ran:

- ``parameters``: module parameters and buffers (registered with :meth:`MemoryLedger.register`).
- ``gradients``: ``param.grad`` (marked by a post-accumulate-grad hook, or registered).
- ``optimizer states``: tensors in ``optimizer.state`` (registered, or marked after a step).
- ``activations``: everything a *forward* phase made that is still alive: what autograd saved for
  backward, the autocast weight copies, the batch, the outputs still referenced.
- ``temporaries``: everything the backward, clipping and optimizer phases made that is not a gradient
  or a state: gradients of activations, recomputed checkpoint segments, the optimizer's scratch.
- ``allocator slack``: with a :class:`~.allocator.CachingAllocatorModel`, the bytes of allocated
  blocks beyond their tensors (a request served by a cached block up to 1 MiB larger takes all of it),
  so that the total is the allocator's ``memory_allocated``.
- ``workspaces``: library scratch a GPU allocates through the caching allocator and no tensor shows:
  persistent ones (:meth:`MemoryLedger.allocate_workspace`, e.g. cuBLAS's per handle) and transient
  ones around single operators (the ``workspace`` callback, e.g. cuDNN's for convolutions).

Phases are named spans (:meth:`MemoryLedger.phase`); each records the memory at its start and end and
its own peak with the category breakdown at that moment.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from benchmarks.ledger.allocator import Block, CachingAllocatorModel

#: The CUDA caching allocator's block granularity (``kMinBlockSize`` in CUDACachingAllocator.cpp):
#: every request is rounded up to a multiple of 512 bytes, and ``allocated_bytes`` counts the blocks.
ALLOCATION_GRANULE = 512


class Category(StrEnum):
    """What a device storage holds (see the module docstring)."""

    PARAMETERS = "parameters"
    GRADIENTS = "gradients"
    OPTIMIZER_STATES = "optimizer states"
    ACTIVATIONS = "activations"
    TEMPORARIES = "temporaries"
    ALLOCATOR_SLACK = "allocator slack"
    WORKSPACES = "workspaces"


def allocated_bytes(nbytes: int) -> int:
    """Bytes the CUDA caching allocator counts as allocated for a request of ``nbytes``.

    ``0`` stays 0 (no block); anything else is rounded up to a multiple of :data:`ALLOCATION_GRANULE`.
    """
    return -(-nbytes // ALLOCATION_GRANULE) * ALLOCATION_GRANULE


@dataclass
class Snapshot:
    """Tracked device bytes at one moment, in total and per category."""

    total: int = 0
    by_category: dict[Category, int] = field(default_factory=lambda: dict.fromkeys(Category, 0))

    def copy(self) -> Snapshot:
        return Snapshot(self.total, dict(self.by_category))


@dataclass
class PhaseRecord:
    """One span of the iteration: memory at its start and end, and its own peak.

    Attributes:
        name: the phase, e.g. ``"student source pass"``.
        micro_batch: the micro-batch it belongs to (None: the whole step, e.g. the optimizer step).
        start: tracked bytes when it began.
        end: tracked bytes when it ended.
        peak: the largest total inside it, with the categories at that moment.
        peak_op: the operator whose output set that peak.
    """

    name: str
    micro_batch: int | None
    start: int
    end: int = 0
    peak: Snapshot = field(default_factory=Snapshot)
    peak_op: str = ""


@dataclass
class _Entry:
    """What the ledger knows of one storage: its rounded size, category and allocator block."""

    nbytes: int
    category: Category
    block: Block | None = None
    slack: int = 0


class MemoryLedger(TorchDispatchMode):
    """Count the device storages that operators create, by category and phase (see the module docstring).

    Args:
        device_type: the device whose storages are counted (``"meta"`` for the ledger, or ``"cpu"`` for
            a test of the accounting itself).
        granule: allocation rounding in bytes (1 counts raw tensor bytes).
        allocator: replay every allocation and free through this model of the caching allocator; its
            block slack becomes the ``allocator slack`` category (None: tensor sizes only).
        workspace: bytes of transient scratch an operator allocates while it runs (after its outputs,
            freed when it returns), from ``(func, args)``; None: none.

    Use::

        ledger = MemoryLedger()
        ledger.register(module.parameters(), Category.PARAMETERS)
        with ledger, ledger.phase("forward", micro_batch=0):
            loss = module(x).sum()
        print(ledger.peak.total)
    """

    def __init__(
        self,
        device_type: str = "meta",
        granule: int = ALLOCATION_GRANULE,
        allocator: CachingAllocatorModel | None = None,
        workspace: Callable[[Any, tuple], int] | None = None,
    ) -> None:
        super().__init__()
        self.device_type = device_type
        self.granule = granule
        self.allocator = allocator
        self.workspace = workspace
        self._workspaces: list[Block | None] = []
        self._entries: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.current = Snapshot()
        self.peak = Snapshot()
        self.peak_phase = ""
        self.peak_op = ""
        self.phases: list[PhaseRecord] = []
        self._phase: PhaseRecord | None = None
        self._creation_category = Category.ACTIVATIONS
        self._handles: list[Any] = []

    # ------------------------------------------------------------------------------ bookkeeping
    def _size(self, nbytes: int) -> int:
        return -(-nbytes // self.granule) * self.granule

    def _add(self, category: Category, nbytes: int) -> None:
        self.current.total += nbytes
        self.current.by_category[category] += nbytes

    def _remove(self, entry: _Entry, _reference: object = None) -> None:
        # Called by the storage's weak reference when the storage dies.
        self._add(entry.category, -entry.nbytes)
        self._release(entry)

    def _allocate(self, entry: _Entry, raw_nbytes: int) -> None:
        if self.allocator is not None:
            entry.block = self.allocator.malloc(raw_nbytes)
            entry.slack = 0 if entry.block is None else entry.block.size - entry.nbytes
            self._add(Category.ALLOCATOR_SLACK, entry.slack)

    def _release(self, entry: _Entry) -> None:
        if self.allocator is not None:
            self.allocator.free(entry.block)
            self._add(Category.ALLOCATOR_SLACK, -entry.slack)
            entry.block, entry.slack = None, 0

    def _storage(self, tensor: torch.Tensor) -> torch.UntypedStorage | None:
        if tensor.device.type != self.device_type:
            return None
        return tensor.untyped_storage()

    def mark(self, tensor: torch.Tensor | None, category: Category) -> None:
        """Count ``tensor``'s storage under ``category`` (moving it there if already counted)."""
        if tensor is None:
            return
        storage = self._storage(tensor)
        if storage is None:
            return
        raw = storage.nbytes()
        nbytes = self._size(raw)
        known = self._entries.get(storage)
        if known is None:
            entry = _Entry(nbytes, category)
            self._entries[storage] = (entry, weakref.ref(storage, partial(self._remove, entry)))
            self._add(category, nbytes)
            self._allocate(entry, raw)
            return
        entry = known[0]
        if entry.nbytes != nbytes:  # a resized storage: a new block
            self._release(entry)
            self._add(entry.category, -entry.nbytes)
            entry.nbytes = nbytes
            self._add(entry.category, nbytes)
            self._allocate(entry, raw)
        if entry.category != category:
            self._add(entry.category, -entry.nbytes)
            entry.category = category
            self._add(category, nbytes)

    def register(self, tensors: Iterable[torch.Tensor | None], category: Category) -> None:
        """Count tensors made outside the ledger (parameters, buffers, existing gradients and states)."""
        for tensor in tensors:
            self.mark(tensor, category)
        self._update_peak("registered")

    def register_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Count every tensor in ``optimizer.state`` as an optimizer state."""
        for state in optimizer.state.values():
            self.register(
                (v for v in state.values() if isinstance(v, torch.Tensor)), Category.OPTIMIZER_STATES
            )

    def watch_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Mark each ``param.grad`` as a gradient when autograd accumulates it (hooks removed on exit)."""
        for parameter in parameters:
            if parameter.requires_grad:
                self._handles.append(
                    parameter.register_post_accumulate_grad_hook(
                        lambda p: self.mark(p.grad, Category.GRADIENTS)
                    )
                )

    def _update_peak(self, op: str) -> None:
        total = self.current.total
        phase = self._phase
        if phase is not None and total > phase.peak.total:
            phase.peak = self.current.copy()
            phase.peak_op = op
        if total > self.peak.total:
            self.peak = self.current.copy()
            self.peak_phase = _phase_label(phase)
            self.peak_op = op

    def _block(self, nbytes: int) -> tuple[Block | None, int]:
        if self.allocator is None:
            return None, self._size(nbytes)
        block = self.allocator.malloc(nbytes)
        return block, 0 if block is None else block.size

    def allocate_workspace(self, nbytes: int) -> None:
        """A persistent workspace of ``nbytes`` (e.g. cuBLAS's, held per handle for the process)."""
        block, size = self._block(nbytes)
        self._workspaces.append(block)
        self._add(Category.WORKSPACES, size)
        self._update_peak("workspace")

    def _transient_workspace(self, nbytes: int, op: str) -> None:
        block, size = self._block(nbytes)
        self._add(Category.WORKSPACES, size)
        self._update_peak(f"{op} (workspace)")
        self._add(Category.WORKSPACES, -size)
        if self.allocator is not None:
            self.allocator.free(block)

    def reset_peak(self) -> None:
        """Start a new measurement (``torch.cuda.reset_peak_memory_stats``): the peak restarts from the
        current memory and the phases recorded so far are dropped."""
        self.peak = self.current.copy()
        self.peak_phase = _phase_label(self._phase)
        self.peak_op = ""
        self.phases = []
        if self.allocator is not None:
            self.allocator.reset_peaks()

    # ----------------------------------------------------------------------------------- phases
    @contextlib.contextmanager
    def phase(
        self, name: str, micro_batch: int | None = None, creates: Category | None = None
    ) -> Iterator[None]:
        """A named span of the iteration; phases nest (the inner one is current while it runs, and its
        peak is its own: an outer phase's peak covers only the operators run outside its inner phases).

        Args:
            name: the phase's name.
            micro_batch: the micro-batch it belongs to, or None.
            creates: the category of what it makes: ``activations`` (forward-like phases, the default
                outside backward) or ``temporaries`` (backward, clipping, optimizer step).
        """
        record = PhaseRecord(name, micro_batch, start=self.current.total)
        record.peak = self.current.copy()
        outer, outer_category = self._phase, self._creation_category
        self._phase = record
        if creates is not None:
            self._creation_category = creates
        self.phases.append(record)
        try:
            yield
        finally:
            record.end = self.current.total
            self._phase, self._creation_category = outer, outer_category

    # ------------------------------------------------------------------------------- dispatch
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        output = func(*args, **(kwargs or {}))
        grew = False
        for tensor in tree_flatten(output)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = self._storage(tensor)
                if storage is None:
                    continue
                known = self._entries.get(storage)
                if known is None:
                    self.mark(tensor, self._creation_category)
                    grew = True
                elif known[0].nbytes != self._size(storage.nbytes()):  # a resized storage
                    self.mark(tensor, known[0].category)
                    grew = True
        name = getattr(func, "__name__", str(func))
        if grew:
            self._update_peak(name)
        if self.workspace is not None:
            scratch = self.workspace(func, args)
            if scratch:
                self._transient_workspace(scratch, name)
        return output

    def __exit__(self, *args: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return super().__exit__(*args)


def _phase_label(record: PhaseRecord | None) -> str:
    if record is None:
        return "(no phase)"
    return record.name if record.micro_batch is None else f"{record.name} (micro-batch {record.micro_batch})"


def phase_label(record: PhaseRecord) -> str:
    """``"name (micro-batch k)"``, or the name alone for a whole-step phase."""
    return _phase_label(record)

"""A model of the CUDA caching allocator's block bookkeeping, to turn tensor sizes into *allocated* bytes.

``torch.cuda.max_memory_allocated`` counts the blocks the caching allocator hands out, not tensor bytes:
a request is rounded up to 512 bytes, and a request served from a cached free block that is at most
1 MiB larger than it takes the *whole* block (a large-pool block is split only when more than 1 MiB
would remain). Which free block serves a request depends on every allocation and free before it, so
the ledger replays the iteration's exact sequence through this model. The rules are those of
``c10/cuda/CUDACachingAllocator.cpp`` (torch 2.x, default configuration: no ``max_split_size``, no
expandable segments, no garbage collection, one stream):

- sizes: ``round_size`` = a multiple of 512 (512 at least); requests of at most 1 MiB use the small
  pool, others the large pool.
- lookup: the smallest free block of the pool at least as large as the request (ties: lowest address).
- new segments (``cudaMalloc``) when none fits: 2 MiB for the small pool, 20 MiB for requests under
  10 MiB, else the request rounded up to 2 MiB.
- split: small pool when at least 512 bytes remain, large pool when more than 1 MiB remains; the
  request takes the front of the block.
- free: the block merges with free neighbours of its segment and returns to its pool; segments are
  never released (the card has room: nothing triggers ``empty_cache``).

``reserved`` is the sum of segments (``max_memory_reserved``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20  # kSmallSize: the small pool's largest request
SMALL_BUFFER = 2 << 20  # kSmallBuffer: a small-pool segment
LARGE_BUFFER = 20 << 20  # kLargeBuffer: a segment for requests of 1-10 MiB
MIN_LARGE_ALLOC = 10 << 20  # kMinLargeAlloc
ROUND_LARGE = 2 << 20  # kRoundLarge


def round_size(size: int) -> int:
    """The allocator's request size: at least 512 bytes, a multiple of 512."""
    return MIN_BLOCK if size < MIN_BLOCK else MIN_BLOCK * (-(-size // MIN_BLOCK))


def segment_size(size: int) -> int:
    """The ``cudaMalloc`` size for a (rounded) request no cached block can serve."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * (-(-size // ROUND_LARGE))


@dataclass(eq=False)
class Block:
    """A piece of a segment: ``[address, address + size)``, allocated or free, with its neighbours."""

    address: int
    size: int
    small: bool
    allocated: bool = False
    previous: Block | None = field(default=None, repr=False)
    next: Block | None = field(default=None, repr=False)


class CachingAllocatorModel:
    """Replays mallocs and frees with the caching allocator's rules (see the module docstring).

    Attributes:
        allocated: bytes in allocated blocks (``memory_allocated``).
        reserved: bytes in segments (``memory_reserved``).
        peak_allocated, peak_reserved: their maxima since the last :meth:`reset_peaks`.
    """

    def __init__(self) -> None:
        self._free: dict[bool, list[tuple[int, int, int]]] = {True: [], False: []}  # (size, address, id)
        self._blocks: dict[int, Block] = {}
        self._next_address = 1 << 40
        self.allocated = 0
        self.reserved = 0
        self.peak_allocated = 0
        self.peak_reserved = 0

    def reset_peaks(self) -> None:
        """``torch.cuda.reset_peak_memory_stats``: the peaks restart from the current values."""
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def _insert_free(self, block: Block) -> None:
        self._blocks[id(block)] = block
        bisect.insort(self._free[block.small], (block.size, block.address, id(block)))

    def _remove_free(self, block: Block) -> None:
        pool = self._free[block.small]
        index = bisect.bisect_left(pool, (block.size, block.address, id(block)))
        del pool[index]
        del self._blocks[id(block)]

    def malloc(self, nbytes: int) -> Block | None:
        """Allocate a block for a tensor storage of ``nbytes`` (None for 0 bytes: no block)."""
        if nbytes == 0:
            return None
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        pool = self._free[small]
        index = bisect.bisect_left(pool, (size, 0, 0))
        if index < len(pool):
            _, _, key = pool[index]
            block = self._blocks[key]
            self._remove_free(block)
        else:
            block = Block(self._next_address, segment_size(size), small)
            self._next_address += block.size + ROUND_LARGE  # distinct segments are not contiguous
            self.reserved += block.size
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        remaining = block.size - size
        if remaining >= MIN_BLOCK if small else remaining > SMALL_SIZE:
            rest = Block(block.address + size, remaining, small, previous=block, next=block.next)
            if block.next is not None:
                block.next.previous = rest
            block.next = rest
            block.size = size
            self._insert_free(rest)
        block.allocated = True
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block

    def free(self, block: Block | None) -> None:
        """Return a block; it merges with free neighbours of its segment."""
        if block is None:
            return
        block.allocated = False
        self.allocated -= block.size
        for neighbour in (block.previous, block.next):
            if neighbour is not None and not neighbour.allocated:
                self._remove_free(neighbour)
                if neighbour is block.previous:
                    block.address = neighbour.address
                    block.previous = neighbour.previous
                    if block.previous is not None:
                        block.previous.next = block
                else:
                    block.next = neighbour.next
                    if block.next is not None:
                        block.next.previous = block
                block.size += neighbour.size
        self._insert_free(block)

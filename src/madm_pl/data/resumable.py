"""Exact resume of the training loader: a sampler that continues after the batches already trained on
and a DataLoader whose position travels in checkpoints (see ``datamodule``'s docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from torch.utils.data import DataLoader, Dataset, DistributedSampler


class BatchCounter(Protocol):
    """What the loader needs of its datamodule: the count of training batches already trained on."""

    train_batches_seen: int


class ResumableSampler(DistributedSampler):
    """Yields global sample numbers, continuing from the batches already trained on.

    Per epoch it yields ``num_batches * batch_size`` indices starting at batch ``start_batch()``
    (read when an epoch starts). With ``world_size`` processes, process ``rank`` takes the samples
    ``((b * world_size + rank) * batch_size + j)`` of its batch ``b``; being a ``DistributedSampler``,
    Lightning leaves it as it is.

    Args:
        dataset: the training dataset (only its type matters to the base class).
        num_batches: batches per epoch and process.
        batch_size: samples per batch.
        start_batch: returns the number of batches already trained on.
        rank: this process.
        world_size: number of processes.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_batches: int,
        batch_size: int,
        start_batch: Callable[[], int],
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False, drop_last=True)
        self.num_batches = num_batches
        self.batch_size = batch_size
        self.start_batch = start_batch

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        first = int(self.start_batch())
        for batch in range(first, first + self.num_batches):
            base = (batch * self.num_replicas + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)


class ResumableDataLoader(DataLoader):
    """The training DataLoader, whose position (the datamodule's batch count) travels in checkpoints.

    Its ``state_dict``/``load_state_dict`` make Lightning treat it as resumable (Lightning stores the
    state under the fit loop's ``combined_loader`` and restores it on resume); the sampler reads the
    same count when an epoch starts. The datamodule's own ``state_dict`` holds the count too, so
    checkpoints written before this loader existed resume alike.

    Args:
        *args, **kwargs: as ``DataLoader``.
        datamodule: what counts the batches (the ``CrossModalityDataModule``).
    """

    def __init__(self, *args: Any, datamodule: BatchCounter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.datamodule = datamodule

    def state_dict(self) -> dict[str, int]:
        """``{"train_batches_seen": batches trained on}``."""
        return {"train_batches_seen": self.datamodule.train_batches_seen}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue after the stored batch count."""
        self.datamodule.train_batches_seen = int(state_dict["train_batches_seen"])

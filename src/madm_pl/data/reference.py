"""What the reference's file lists hold: the rank-0 share its numbers score, DSEC's frame rule.

**The evaluation protocol.**
The reference (XiaRho/MADM) tests on 2 GPUs (its README's commands: ``--num-gpus 2``) with detectron2's
``build_detection_test_loader``, whose default sampler is ``InferenceSampler`` (``data/build.py``
103-141 passes ``sampler=None``). That sampler gives each rank one contiguous block of the dataset's
indices. The reference's evaluator has the cross-rank gather of its confusion matrix commented out
(``evaluation/d2_evaluator.py`` 228-238), so every rank scores its own block, and the mIoU printed and
published is rank 0's: the first ``ceil(N/2)`` test images in the order of the reference's test list
(its dataset reads ``target_data`` of the JSON in list order, ``data/dataset/cross_modality_dataset.py``
430-431 and 489-490).

madm-pl scores the whole split (the default, ``test/miou``) and also this share ("reference protocol",
``test/miou_reference_protocol``), so a run can be compared with the paper on the same images. The
share depends only on the order of the test images:

- with a file list (``data.test_file_list``, the reference's ``data/json_file/*_test.json``) the order
  is the list's, so the share is exactly the reference's;
- with a folder scan the images are put in the order the reference's lists were written in: the relative
  paths sorted as strings with ``\\`` as the separator (all six of its JSON lists are in that order;
  for FMB and DSEC it equals a plain sort, for DELIVER it does not: ``MAP_10_point22`` comes before
  ``MAP_10_point2``). A scan of a tree holding exactly the listed files thus gives the reference's share.

**DSEC's frames.** ``Cityscapes_RGB_to_DSEC_Event_train.json`` holds, in each of its 8 sequences, the
even frame numbers from 000002 without gaps (4037 frames); ``..._test.json`` holds, in each of its 3
sequences, every frame from 000001 without gaps (2806). ``data.dsec_frames="reference"`` keeps exactly
those frames of a folder scan (``DSECEventDataset``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: The reference's evaluation setup: 2 GPUs, the published numbers are rank 0's.
REFERENCE_WORLD_SIZE = 2
REFERENCE_RANK = 0


def inference_shard(total: int, world_size: int, rank: int) -> range:
    """The dataset indices one rank scores under detectron2's ``InferenceSampler``.

    Contiguous blocks; the first ``total % world_size`` ranks get one index more (detectron2
    ``data/samplers/distributed_sampler.py``, ``InferenceSampler._get_local_indices``, unchanged since
    2021-09-29). With 2 ranks rank 0 gets ``range(0, ceil(total / 2))``.

    Args:
        total: images in the split (> 0).
        world_size: number of ranks (> 0).
        rank: in ``[0, world_size)``.

    Returns:
        The indices of ``rank``.

    Raises:
        ValueError: a value out of range.
    """
    if total < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"inference_shard: need total >= 1 and 0 <= rank < world_size, got {total}, {rank}, {world_size}"
        )
    size, left = divmod(total, world_size)
    sizes = [size + int(r < left) for r in range(world_size)]
    begin = sum(sizes[:rank])
    return range(begin, min(begin + sizes[rank], total))


def reference_sort_key(relative_path: str) -> str:
    """The order of the reference's JSON lists: the path with ``\\`` separators, compared as a string.

    Args:
        relative_path: a path relative to the dataset root with ``/`` separators.
    """
    return relative_path.replace("/", "\\")


@dataclass(frozen=True)
class ReferenceShare:
    """The reference's rank-0 share of a test split.

    Attributes:
        indices: dataset indices in the share.
        total: images in the split.
        order: ``"file list"`` (the list's order) or ``"scan"`` (the reference's sort of the paths).
    """

    indices: frozenset[int]
    total: int
    order: str

    def describe(self) -> str:
        """One line for the IoU table: how many images, of how many, in which order."""
        order = "the file list's order" if self.order == "file list" else "the reference's path order"
        return (
            f"the reference's rank-0 share on {REFERENCE_WORLD_SIZE} GPUs: the first {len(self.indices)} "
            f"of the {self.total} test images, in {order}"
        )


def reference_share(relative_paths: Sequence[str], from_file_list: bool) -> ReferenceShare:
    """The indices of the images the reference's published numbers score.

    Args:
        relative_paths: the split's image paths relative to the root (``/`` separators), in dataset
            index order.
        from_file_list: the dataset follows a file list (its order is the reference's); else it was
            scanned and is put in the reference's order first (``reference_sort_key``).

    Returns:
        The share: rank ``REFERENCE_RANK`` of ``REFERENCE_WORLD_SIZE`` under ``inference_shard``.
    """
    total = len(relative_paths)
    order = list(range(total))
    if not from_file_list:
        order.sort(key=lambda index: reference_sort_key(relative_paths[index]))
    shard = inference_shard(total, REFERENCE_WORLD_SIZE, REFERENCE_RANK)
    return ReferenceShare(
        indices=frozenset(order[position] for position in shard),
        total=total,
        order="file list" if from_file_list else "scan",
    )


#: The frames of the reference's DSEC lists per split, as (first frame number, step) in every sequence.
DSEC_REFERENCE_FRAMES: dict[str, tuple[int, int]] = {"train": (2, 2), "test": (1, 1)}
#: The same in words, for messages.
DSEC_REFERENCE_RULES: dict[str, str] = {
    "train": "the even frames from 000002",
    "test": "every frame from 000001",
}
#: The values of ``data.dsec_frames``: every frame found, or the reference's.
DSEC_FRAME_CHOICES: tuple[str, ...] = ("all", "reference")


def is_dsec_reference_frame(frame: int, split: str) -> bool:
    """Whether frame number ``frame`` of a DSEC sequence is one the reference's ``split`` list holds.

    Args:
        frame: the number in the file name (``000002.png`` -> 2).
        split: ``"train"`` or ``"test"``.
    """
    first, step = DSEC_REFERENCE_FRAMES[split]
    return frame >= first and (frame - first) % step == 0

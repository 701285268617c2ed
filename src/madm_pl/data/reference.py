"""What the reference's file lists hold: DSEC's frame rule.

**DSEC's frames.** ``Cityscapes_RGB_to_DSEC_Event_train.json`` holds, in each of its 8 sequences, the
even frame numbers from 000002 without gaps (4037 frames); ``..._test.json`` holds, in each of its 3
sequences, every frame from 000001 without gaps (2806). ``data.dsec_frames="reference"`` keeps exactly
those frames of a folder scan (``DSECEventDataset``).
"""

from __future__ import annotations

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

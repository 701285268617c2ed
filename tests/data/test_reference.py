"""What the reference's lists hold: DSEC's frame rule."""

from __future__ import annotations

from madm_pl.data.reference import is_dsec_reference_frame


def test_dsec_reference_frames() -> None:
    # train: the even frames from 000002 (000000 and odd frames out); test: every frame from 000001
    assert [f for f in range(8) if is_dsec_reference_frame(f, "train")] == [2, 4, 6]
    assert is_dsec_reference_frame(938, "train") and not is_dsec_reference_frame(939, "train")
    assert [f for f in range(4) if is_dsec_reference_frame(f, "test")] == [1, 2, 3]

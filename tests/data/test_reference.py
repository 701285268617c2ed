"""What the reference's lists hold: detectron2's inference split, the lists' order, DSEC's frame rule."""

from __future__ import annotations

import pytest

from madm_pl.data.reference import (
    ReferenceShare,
    inference_shard,
    is_dsec_reference_frame,
    reference_share,
    reference_sort_key,
)


@pytest.mark.parametrize(
    ("total", "world_size", "shards"),
    [
        (5, 2, [range(0, 3), range(3, 5)]),
        (4, 2, [range(0, 2), range(2, 4)]),
        (7, 3, [range(0, 3), range(3, 5), range(5, 7)]),  # the first total % world_size ranks get one more
        (1, 2, [range(0, 1), range(1, 1)]),
    ],
)
def test_inference_shard_is_contiguous_with_the_remainder_first(total, world_size, shards) -> None:
    assert [inference_shard(total, world_size, rank) for rank in range(world_size)] == shards


def test_inference_shard_of_the_published_test_splits() -> None:
    # FMB 280, DELIVER 1897, DSEC 2806 test images: rank 0 of 2 scores the first ceil(N/2)
    assert [inference_shard(n, 2, 0) for n in (280, 1897, 2806)] == [range(140), range(949), range(1403)]
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        inference_shard(5, 2, 2)


def test_reference_order_puts_deliver_maps_as_its_list_does() -> None:
    # The order of Cityscapes_RGB_to_DELIVER_Depth_test.json: point22 before point2 ('2' < '\\' < '_').
    listed = [
        "depth/cloud/test/MAP_10_point22/013450_depth_front.png",
        "depth/cloud/test/MAP_10_point22_motionblur/093050_depth_front.png",
        "depth/cloud/test/MAP_10_point2/012250_depth_front.png",
        "depth/cloud/test/MAP_10_point2_eventlowres/012400_depth_front.png",
    ]
    assert sorted(listed, key=reference_sort_key) == listed
    assert sorted(listed) != listed  # a plain sort puts point2/ first


def test_reference_share_of_a_file_list_and_of_a_scan() -> None:
    paths = ["b/x.png", "a/y.png", "c/z.png", "a/w.png", "d/v.png"]
    listed = reference_share(paths, from_file_list=True)  # the list's order: the first 3 entries
    assert listed == ReferenceShare(frozenset({0, 1, 2}), total=5, order="file list")
    scanned = reference_share(paths, from_file_list=False)  # sorted: a/w, a/y, b/x | c/z, d/v
    assert scanned.indices == frozenset({3, 1, 0})
    assert listed.describe().endswith("the first 3 of the 5 test images, in the file list's order")
    assert scanned.describe().endswith("in the reference's path order")


def test_dsec_reference_frames() -> None:
    # train: the even frames from 000002 (000000 and odd frames out); test: every frame from 000001
    assert [f for f in range(8) if is_dsec_reference_frame(f, "train")] == [2, 4, 6]
    assert is_dsec_reference_frame(938, "train") and not is_dsec_reference_frame(939, "train")
    assert [f for f in range(4) if is_dsec_reference_frame(f, "test")] == [1, 2, 3]

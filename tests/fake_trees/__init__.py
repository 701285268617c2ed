"""Tiny fake datasets in the real on-disk layouts (METHOD.md §1), with chosen label ids.

Every writer returns a ``FakeTree``: the root and the written image / label paths relative to it, in
sorted order (the order a folder scan gives). Image ``i`` of a split is filled with the grey value
``image_value(i)`` (all channels), so a test can tell which file was read; labels are written as
given (8-bit ids). Nothing here imports madm_pl: the trees are independent of the code under test.

One writer per dataset, in the file named as its dataset's in ``src/madm_pl/data/datasets/``;
``common`` holds what they share. Import the names from here.
"""

from tests.fake_trees.cityscapes import write_cityscapes
from tests.fake_trees.common import (
    FakeTree,
    fake_image,
    image_value,
    label_halves,
    split_label,
    write_file_list,
    write_png,
)
from tests.fake_trees.deliver import write_deliver
from tests.fake_trees.dsec import write_dsec
from tests.fake_trees.fmb import write_fmb
from tests.fake_trees.folder import write_image_folder

__all__ = [
    "FakeTree",
    "fake_image",
    "image_value",
    "label_halves",
    "split_label",
    "write_cityscapes",
    "write_deliver",
    "write_dsec",
    "write_file_list",
    "write_fmb",
    "write_image_folder",
    "write_png",
]

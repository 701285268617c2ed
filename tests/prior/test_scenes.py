"""The tiny prior's scenes: the paired pool and the palette paintings of layouts (madm_pl.prior.scenes)."""

import numpy as np
import torch

from madm_pl import labels
from madm_pl.prior.scenes import PAIRED_START, paint_layout, paint_pool, palette_tables, render_paired_pool
from madm_pl.synthetic import MODALITIES, SPLIT_PRIOR, render_modality, render_scene, scene_seed_sequence

CS = {name: i for i, name in enumerate(labels.CITYSCAPES_CLASSES)}


def test_paired_pool_renders_one_layout_in_every_modality():
    pool = render_paired_pool(0, 2, 64, 128, progress=False)
    assert pool.shape == (2, len(MODALITIES), 3, 64, 128) and pool.dtype == torch.uint8
    scene = render_scene(scene_seed_sequence(0, SPLIT_PRIOR, "rgb", PAIRED_START + 1), 64, 128)
    for index, modality in enumerate(MODALITIES):
        image = torch.from_numpy(render_modality(scene, modality))
        expected = image.permute(2, 0, 1) if image.dim() == 3 else image.expand(3, -1, -1)
        assert torch.equal(pool[1, index], expected), modality
    assert not torch.equal(pool[0, 0], pool[1, 0])  # two scenes, two layouts


def test_paint_layout_gives_the_task_colours_and_black_for_void():
    layout = torch.tensor(
        [[[CS["road"], CS["sky"], labels.IGNORE_INDEX, CS["car"], CS["wall"]]]], dtype=torch.uint8
    )
    eleven, nine = palette_tables()
    painting = paint_layout(layout, *eleven)
    assert painting.shape == (1, 3, 1, 5) and painting.dtype == torch.uint8
    assert painting[0, :, 0].T.tolist() == [
        [128, 64, 128],  # road
        [70, 130, 180],  # sky
        [0, 0, 0],  # void: ignored, black
        [0, 0, 142],  # car
        [102, 102, 156],  # wall
    ]
    # the 9-class task ignores walls: black
    assert paint_layout(layout, *nine)[0, :, 0, 4].tolist() == [0, 0, 0]


def test_permuted_palettes_keep_the_colours_and_are_drawn_from_the_generator():
    first = palette_tables(permute=True, generator=torch.Generator().manual_seed(0))
    again = palette_tables(permute=True, generator=torch.Generator().manual_seed(0))
    for (table, colours), (_, same_colours), (true_table, true_colours) in zip(
        first, again, palette_tables()
    ):
        assert table is true_table and np.array_equal(colours, same_colours)
        assert sorted(map(tuple, colours.tolist())) == sorted(map(tuple, true_colours.tolist()))


def test_paint_pool_paints_each_layout_with_one_true_palette():
    layouts = torch.tensor([[[CS["road"], CS["person"]]]] * 6, dtype=torch.uint8)
    paintings = paint_pool(layouts, torch.Generator().manual_seed(0))
    options = [paint_layout(layouts[:1], *tables)[0] for tables in palette_tables()]
    assert paintings.shape == (6, 3, 1, 2)
    assert all(any(torch.equal(painting, option) for option in options) for painting in paintings)

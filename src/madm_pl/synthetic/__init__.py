"""Procedural four-modality street world: madm-pl's built-in data (console script ``madm-pl-data``).

One scene is one street layout (Cityscapes 19 train ids, 255 void) with its depth, rendered by four
sensors (rgb, depth, infrared, event) and written in the layouts of Cityscapes, DELIVER, FMB and DSEC.

- :mod:`~madm_pl.synthetic.constants`: split and modality codes, scene seeds, class ids;
- :mod:`~madm_pl.synthetic.world` and :mod:`~madm_pl.synthetic.objects`: the street's geometry and the
  objects standing in it;
- :mod:`~madm_pl.synthetic.sensors`: the four renderings of a scene (``render_scene``, ``render_modality``);
- :mod:`~madm_pl.synthetic.writer`: the dataset layouts, ``generate`` and the command ``main``.
"""

from madm_pl.synthetic.constants import (
    MODALITIES,
    MODALITY_CODES,
    SKY_DEPTH_M,
    SPLIT_PRIOR,
    SPLIT_SOURCE,
    SPLIT_TARGET_TEST,
    SPLIT_TARGET_TRAIN,
    TARGET_MODALITIES,
    TIMES_OF_DAY,
    WEATHERS,
    scene_seed_sequence,
)
from madm_pl.synthetic.sensors import Scene, encode_depth, render_modality, render_scene
from madm_pl.synthetic.writer import FORMAT_VERSION, generate, main, scene_paths, target_label

__all__ = [
    "FORMAT_VERSION",
    "MODALITIES",
    "MODALITY_CODES",
    "SKY_DEPTH_M",
    "SPLIT_PRIOR",
    "SPLIT_SOURCE",
    "SPLIT_TARGET_TEST",
    "SPLIT_TARGET_TRAIN",
    "TARGET_MODALITIES",
    "TIMES_OF_DAY",
    "WEATHERS",
    "Scene",
    "encode_depth",
    "generate",
    "main",
    "render_modality",
    "render_scene",
    "scene_paths",
    "scene_seed_sequence",
    "target_label",
]

"""Side effects of training: image grids, IoU tables, prediction files, checkpoint guards."""

from madm_pl.callbacks.checkpoint import FiniteWeightsGuard
from madm_pl.callbacks.images import ImageLogger, training_grid
from madm_pl.callbacks.predictions import PredictionWriter
from madm_pl.callbacks.tables import IoUTable, format_iou_table

__all__ = [
    "FiniteWeightsGuard",
    "ImageLogger",
    "IoUTable",
    "PredictionWriter",
    "format_iou_table",
    "training_grid",
]

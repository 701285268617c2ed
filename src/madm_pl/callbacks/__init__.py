"""Side effects of training: TensorBoard logger and pictures, IoU tables, prediction files, guards."""

from madm_pl.callbacks.checkpoint import FiniteWeightsGuard
from madm_pl.callbacks.images import ImageLogger, titled_grid, training_grids
from madm_pl.callbacks.predictions import PredictionWriter
from madm_pl.callbacks.tables import IoUTable, format_iou_table
from madm_pl.callbacks.tensorboard import MADMTensorBoardLogger
from madm_pl.callbacks.validation import ConfusionMatrixImage, ValidationImages

__all__ = [
    "ConfusionMatrixImage",
    "FiniteWeightsGuard",
    "ImageLogger",
    "IoUTable",
    "MADMTensorBoardLogger",
    "PredictionWriter",
    "ValidationImages",
    "format_iou_table",
    "titled_grid",
    "training_grids",
]

"""``madm-pl convert``: a released MADM model (XiaRho/MADM ``model_RGB2*.pth``) as a madm-pl checkpoint.

::

    madm-pl convert --task rgb2infrared --reference model_RGB2Infrared.pth \\
        --backbone /models/stable-diffusion-v1-4 --out converted.ckpt

The reference trains with detectron2, whose checkpointer (fvcore) writes ``{"model": state_dict, "trainer":
{...}, "iteration": i}``; ``model`` is ``MTMADISE.state_dict()``: the fine-tuned diffusers UNet, the
learnable prompt/time conditioning, the four bottleneck projections, the DAFormer head and the EMA
copies of the last three. :data:`MAPPING` is the one table that says which reference tensor becomes
which madm-pl tensor; :data:`IGNORED` names every reference tensor that is left out on purpose, with the
reason. The conversion is strict: a reference tensor in neither table, a madm-pl tensor with no
reference tensor, or a shape that does not fit stops it with the keys named, and nothing is written.

The frozen VAE and the CLIP text encoder come from ``--backbone`` (as in the reference, which loads them
from its SD v1-4 folder). The reference file holds copies of them too; they are not converted, but they
are compared with ``--backbone`` (the VAE value for value at the reference's fp16, the empty-prompt
embedding within 1e-3), so a wrong ``--backbone`` folder is found here and not as a lower mIoU later.

The written file is a Lightning checkpoint that ``madm-pl test``, ``validate``, ``predict`` and ``fit``
take with ``--ckpt_path``; it holds weights only (no hyper-parameters: the config describes the model,
see :func:`~madm_pl.convert.command.lightning_checkpoint`). The table is
:mod:`madm_pl.convert.table`; reading, checking and writing is :mod:`madm_pl.convert.command`. Where each
fact comes from in the reference: docs/REFERENCE_NOTES.md,
"Loading the released checkpoints". The table was checked against the reference's code, not against
the released files.
"""

from madm_pl.convert.command import convert, main, read_reference
from madm_pl.convert.table import (
    IGNORED,
    MAPPING,
    ConversionError,
    convert_state_dict,
    reference_key,
    to_reference_layout,
)

__all__ = [
    "IGNORED",
    "MAPPING",
    "ConversionError",
    "convert",
    "convert_state_dict",
    "main",
    "read_reference",
    "reference_key",
    "to_reference_layout",
]

"""madm-pl: MADM (modality adaptation with text-to-image diffusion models) in PyTorch Lightning."""

import logging
import os

# madm-pl never downloads: weights load from local folders only. huggingface_hub reads this variable
# once, when it is first imported (by diffusers or transformers), so it is set before anything else.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"

#: Log lines that importing diffusers prints because torchao (model.optimizer adamw-8bit) is installed,
#: by logger and the start of their exact text; none concerns madm-pl: torchao's CUDA kernel libraries do
#: not load into a CPU build of torch, torchao registers two enums torch 2.13 supports natively, and
#: diffusers cannot read torchao-quantised checkpoints of another torchao version (madm-pl loads none).
_IMPORT_NOISE = {
    "torchao": ("Failed to load ",),
    "torch.utils._pytree": (
        "<enum 'KernelPreference'> is an Enum subclass",
        "<enum 'ScaleCalculationMode'> is",
    ),
    "diffusers.quantizers.torchao.torchao_quantizer": ("Unable to import `torchao` Tensor objects",),
}


class _DropKnownImportNoise(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # torchao's "Failed to load" is noise only for its CUDA libraries on a build without CUDA.
        if message.startswith("Failed to load ") and "Could not load this library" not in message:
            return True
        return not message.startswith(self.prefixes)


for _name, _prefixes in _IMPORT_NOISE.items():
    logging.getLogger(_name).addFilter(_DropKnownImportNoise(_prefixes))

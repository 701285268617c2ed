"""madm-pl: MADM (modality adaptation with text-to-image diffusion models) in PyTorch Lightning."""

import os

# madm-pl never downloads: weights load from local folders only. huggingface_hub reads this variable
# once, when it is first imported (by diffusers or transformers), so it is set before anything else.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"

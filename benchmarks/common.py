"""Shared by the benchmark scripts: random training batches and the arguments of a bare Trainer."""

import torch
from torch.utils.data import Dataset

from madm_pl.labels import IGNORE_INDEX

#: Trainer arguments of a bare training loop: nothing to log, save, validate or draw while timing.
BARE_TRAINER = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "limit_val_batches": 0,
    "num_sanity_val_steps": 0,
}


class RandomPairs(Dataset):
    """Training items of the datamodule's contract, random: images in [0,1], labels with some 255."""

    def __init__(self, size: int, num_classes: int, length: int) -> None:
        self.size, self.num_classes, self.length = size, num_classes, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        shape = (self.size, self.size)
        # blocky labels (8x8 cells) so that ClassMix masks and the LPLR palette images have structure
        cells = torch.randint(0, self.num_classes + 1, (self.size // 8, self.size // 8), generator=generator)
        label = cells.repeat_interleave(8, 0).repeat_interleave(8, 1)
        label[label == self.num_classes] = IGNORE_INDEX
        return {
            "source_image": torch.rand(3, *shape, generator=generator),
            "source_label": label,
            "target_image": torch.rand(3, *shape, generator=generator),
        }

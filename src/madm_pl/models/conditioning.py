"""Learnable prompt and time embedding that replace the text prompt (METHOD.md §3, "Conditioning")."""

import torch
from torch import Tensor, nn


class PromptConditioning(nn.Module):
    """A learnable prompt blended with the empty-prompt embedding, and a gated offset of the time embedding.

    ``cond = tanh(a_u) * uncond + tanh(a_c) * P`` is the UNet's cross-attention context and
    ``time_offset = tanh(g) * E`` is added to the UNet's time embedding. Initialisation follows the
    reference (XiaRho/MADM ``ClipFeatureProject``): P and E truncated normal with std 0.02 (cut at
    +-2, i.e. +-100 std), the gates a_u, a_c uniform in [0,1), g zero, so the time offset starts at 0.
    Source and target share one instance (``same_cond_params=True``); the EMA teacher holds a copy.

    The empty-prompt embedding ``uncond`` is an input, not a parameter or buffer, so that it lives in one
    place (``DiffusionBackbone.uncond``) and this module holds only what is learned.

    Args:
        context_dim: D, the UNet's cross-attention width (768 for SD v1-4).
        time_embed_dim: T, the width of the UNet's time embedding (1280 for SD v1-4).
        num_tokens: the context length (77, CLIP's).
    """

    def __init__(self, context_dim: int = 768, time_embed_dim: int = 1280, num_tokens: int = 77) -> None:
        super().__init__()
        self.prompt = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, num_tokens, context_dim), std=0.02))
        self.prompt_gate = nn.Parameter(torch.rand(1, num_tokens, context_dim))  # a_c
        self.uncond_gate = nn.Parameter(torch.rand(1, num_tokens, context_dim))  # a_u
        self.time_embedding = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, time_embed_dim), std=0.02))
        self.time_gate = nn.Parameter(torch.zeros(time_embed_dim))  # g

    def forward(self, uncond: Tensor) -> tuple[Tensor, Tensor]:
        """Blend the prompt and gate the time embedding.

        Args:
            uncond: (1,77,D) float, the CLIP embedding of the empty prompt.

        Returns:
            cond: (1,77,D) float, the cross-attention context.
            time_offset: (1,T) float, added to the UNet's time embedding.

        Raises:
            ValueError: ``uncond`` does not have this module's (1,77,D) shape.
        """
        if uncond.shape != self.prompt.shape:
            raise ValueError(
                f"uncond has shape {tuple(uncond.shape)}, expected {tuple(self.prompt.shape)}: build "
                "PromptConditioning with the backbone's context_dim and num_tokens"
            )
        cond = torch.tanh(self.uncond_gate) * uncond + torch.tanh(self.prompt_gate) * self.prompt
        time_offset = (torch.tanh(self.time_gate) * self.time_embedding)[:, 0]
        return cond, time_offset

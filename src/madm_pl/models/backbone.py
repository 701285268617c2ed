"""Stable Diffusion as a backbone: frozen VAE, fine-tuned UNet, fixed DDPM noise, taps (METHOD.md §3)."""

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from madm_pl.models.presets import build_stack

#: Latent size of SD v1-4 at 512x512: the fixed noise at this size is exactly the reference's
#: ``torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(42))``.
BASE_NOISE_SIZE = (64, 64)

#: The VAE encoder layer whose output is the head's finest level when the backbone does not decode (LPLR
#: off): (down block, resnet) = the first resnet of the third down block, after two downsamplings (stride 4;
#: 512 channels in SD). The reference's base model config reads it as ``encoder_block_indices=[5]``, its
#: 5th resnet counted over SD's two resnets per block (``ldm_diffusers.py`` ``vae_encoder``).
ENCODER_TAP = (2, 0)

#: The UNet up blocks whose last layer (before the upsampler) is tapped: strides 32, 16, 8 (METHOD.md §3).
#: Strides are 4x, 2x and 1x the VAE's: 32, 16, 8 with SD's VAE (stride 8), 16, 8, 4 with a stride-4 VAE.
TAPPED_UP_BLOCKS = (1, 2, 3)


def tap_layers(unet: nn.Module) -> list[nn.Module]:
    """The layers whose outputs are the feature taps: the last layer (attention if the block has one, else
    resnet) of ``unet.up_blocks[1..3]``, before their upsamplers: strides 32, 16, 8 (METHOD.md §3)."""
    layers = []
    for block_index in TAPPED_UP_BLOCKS:
        block = unet.up_blocks[block_index]
        layers.append(block.attentions[-1] if getattr(block, "attentions", None) else block.resnets[-1])
    return layers


def tap_output(output: Tensor | tuple) -> Tensor:
    """The tensor a tapped layer returns (diffusers' layers return a tensor, a tuple or an output object)."""
    return output[0] if isinstance(output, tuple) else getattr(output, "sample", output)


@dataclass
class BackboneOutput:
    """What one backbone pass gives the head and the losses.

    Strides and shapes are written for SD's VAE stride 8 ("s32, s16, s8"; latents H/8); a VAE of stride v
    gives taps at 4v, 2v, v and latents H/v (the names s32/s16/s8 stay: the coarsest, middle, finest tap).

    Exactly one of ``decoded`` and ``encoder_feature`` is set: ``decoded`` when the backbone decodes
    (``decode_output``, LPLR on), ``encoder_feature`` otherwise (METHOD.md §3, "Finest level").

    Attributes:
        features: [stride 32, stride 16, stride 8] UNet taps, (B,C_i,H/s,W/s) float, with gradient.
        latent: (B,4,H/8,W/8) float, the UNet's final output (LPLR's "before decoder" prediction).
        decoded: (B,3,H,W) float, ``latent`` decoded by the frozen VAE, detached and NOT clipped: the head
            reads the raw decode, as in the reference (which clips only the copy it visualises). Mostly in
            [-1,1]; pictures clip it (the image logger does). None when the backbone does not decode.
        encoder_feature: (B,C_e,H/4,W/4) float, the frozen VAE encoder's feature at :data:`ENCODER_TAP`
            (no gradient); None when the backbone decodes.
    """

    features: list[Tensor]
    latent: Tensor
    decoded: Tensor | None = None
    encoder_feature: Tensor | None = None

    @property
    def finest(self) -> Tensor:
        """The head's finest level: ``decoded`` if set, else ``encoder_feature``."""
        return self.decoded if self.decoded is not None else self.encoder_feature


class DiffusionBackbone(nn.Module):
    """SD's VAE and UNet as a segmentation backbone, as in MADM (METHOD.md §3).

    - The VAE is frozen and always in eval mode; encode/decode run without gradient.
    - The UNet is trained, except ``conv_norm_out`` and ``conv_out`` (frozen as in the reference; gradients
      still flow through them into the UNet).
    - Latents are noised with SD's DDPM schedule and one fixed noise tensor (seed ``noise_seed``): the
      student uses t = 0 (noise scale sqrt(1 - abar_0) = 0.029), DPLG's teacher a larger t. The UNet gets
      the same t as ``add_noise`` (reference ``ldm_diffusers.py``: ``LdmDiffusers.forward`` draws
      ``timesteps`` once and passes them to both).
    - The text prompt is replaced by ``cond`` (cross-attention context) and ``time_offset`` (added to the
      UNet's time embedding by a forward hook on ``unet.time_embedding``); see
      :class:`~madm_pl.models.conditioning.PromptConditioning`.
    - Features are read by forward hooks on the last layer of ``unet.up_blocks[1..3]`` (before their
      upsamplers), so diffusers' forward is used unchanged, gradient checkpointing included.
    - The head's finest level (METHOD.md §3): with ``decode_output`` (LPLR on) the UNet output decoded by
      the frozen VAE; without, no decode runs and a forward hook reads the VAE encoder's feature at
      :data:`ENCODER_TAP` (stride 4) during the image's encode, as the reference's backbone does with its
      ``vae_decoder_loss`` flag off (``ldm_diffusers.py`` ``LdmDiffusers.forward``, ~line 192).

    The fixed noise: at the base latent size 64x64 it is a non-persistent buffer drawn from
    ``torch.Generator().manual_seed(noise_seed)``, value for value the reference's. Any other latent size
    draws its own (1,4,h,w) tensor from the same seed instead of resizing the 64x64 one: still one fixed
    tensor per size, but standard normal, which bicubic resizing of white noise is not. It is a buffer so it
    follows ``.to(device)``, and non-persistent because the seed (a constructor argument) defines it.
    ``uncond`` is a non-persistent buffer for the same reason: the source defines it.

    Args:
        source: ``"tiny"`` (small random stack for CPU work), ``"sd14-random"`` (SD v1-4's UNet and VAE
            architectures, random weights) or a local folder in the diffusers layout (``vae/``, ``unet/``,
            ``text_encoder/``, ``tokenizer/``, ``scheduler/``), e.g. SD v1-4 or a stack saved by
            :func:`~madm_pl.models.presets.save_stack`. See :mod:`madm_pl.models.presets`.
        noise_seed: seed of the fixed noise (42 in the reference).
        unet_gradient_checkpointing: recompute the UNet's blocks in the backward pass (less memory, slower).
        vae_dtype: dtype of the frozen VAE's weights, ``torch.float32``, ``torch.float16`` (the
            reference loads the VAE in fp16, ``ldm_diffusers.py`` ``_init_vae``) or ``torch.bfloat16``.
            ``encode``/``decode`` cast their inputs to fp32 or fp16 and return the VAE's output dtype; an
            fp16 VAE needs fp16 autocast for its outputs to meet the fp32 UNet and head. ``bfloat16``
            stores only the convolution and linear weights in bf16 (99.95 % of SD's VAE) and keeps the
            GroupNorms in fp32: under bf16 autocast, which computes convolutions and linear layers in bf16
            from bf16 copies of fp32 weights anyway, the outputs are bit-identical to the fp32 VAE's
            (``tests/models/test_backbone.py``) at half the weights' memory and without the per-call
            weight casts; without bf16 autocast it cannot run. ``.to(device)`` keeps the dtypes.
        decode_output: decode the UNet output for the head (the reference's ldm extractor flag
            ``vae_decoder_loss``, set whenever LPLR is on); off: hand the head the VAE encoder's stride-4
            feature instead.

    Raises:
        ValueError: a bad ``vae_dtype``, or ``decode_output=False`` with a VAE of fewer than three blocks
            (no stride-4 encoder feature).
    """

    def __init__(
        self,
        source: str = "tiny",
        noise_seed: int = 42,
        unet_gradient_checkpointing: bool = False,
        vae_dtype: torch.dtype = torch.float32,
        decode_output: bool = True,
    ):
        super().__init__()
        if vae_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(
                f"vae_dtype={vae_dtype}: expected torch.float32, torch.float16 or torch.bfloat16"
            )
        self.noise_seed = noise_seed
        self.decode_output = decode_output
        stack = build_stack(source)
        self.vae = stack.vae
        self.unet = stack.unet
        self.scheduler = stack.scheduler
        self.vae.requires_grad_(False)
        if vae_dtype == torch.float16:
            # .half(), not diffusers' .to(dtype), which warns about fp32 modules AutoencoderKL has not.
            self.vae.half()
        elif vae_dtype == torch.bfloat16:
            # The layers autocast runs in bf16 get the bf16 weights autocast would cast them to; the norms,
            # which autocast runs from fp32 weights, keep them.
            for layer in self.vae.modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer.to(torch.bfloat16)
        # What encode/decode cast their inputs to. Not bf16 for the bf16 VAE: decode divides by the latent
        # scale before the first convolution, and casting first would round twice.
        self.vae_input_dtype = torch.float32 if vae_dtype == torch.bfloat16 else vae_dtype
        self.unet.requires_grad_(True)
        self.unet.train()  # from_pretrained gives eval mode, and Lightning keeps every module's mode
        self.unet.conv_norm_out.requires_grad_(False)
        self.unet.conv_out.requires_grad_(False)
        self.vae.eval()
        if unet_gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.register_buffer("uncond", stack.uncond.detach().clone(), persistent=False)
        self.register_buffer("noise", self._draw_noise(*BASE_NOISE_SIZE), persistent=False)

        self._time_offset: Tensor | None = None
        self._taps: list[Tensor | None] | None = None
        # [None] while forward encodes the image without decoding (the hook fills it), else None.
        self._encoder_tap: list[Tensor | None] | None = None
        if not decode_output:
            blocks = self.vae.encoder.down_blocks
            if len(blocks) <= ENCODER_TAP[0]:
                raise ValueError(
                    f"decode_output=False reads the VAE encoder's stride-4 feature (down block "
                    f"{ENCODER_TAP[0]}), but the VAE has {len(blocks)} down blocks: use a VAE of stride "
                    ">= 4, or turn LPLR on"
                )
            blocks[ENCODER_TAP[0]].resnets[ENCODER_TAP[1]].register_forward_hook(self._capture_encoder_tap)
        self.unet.time_embedding.register_forward_hook(self._add_time_offset)
        for index, layer in enumerate(tap_layers(self.unet)):
            # A partial of a bound method (not a closure) so that copy.deepcopy rebinds it to the copy.
            layer.register_forward_hook(functools.partial(self._capture_tap, index))

    # ----------------------------------------------------------------------------------- properties
    @property
    def feature_channels(self) -> tuple[int, int, int]:
        """Channels of the (stride 32, stride 16, stride 8) taps: (1280, 640, 320) for SD v1-4."""
        blocks = self.unet.up_blocks
        return tuple(blocks[index].resnets[-1].out_channels for index in TAPPED_UP_BLOCKS)

    @property
    def encoder_feature_channels(self) -> int:
        """Channels of the VAE encoder feature at :data:`ENCODER_TAP` (512 for SD v1-4, 32 for ``tiny``)."""
        return int(self.vae.config.block_out_channels[ENCODER_TAP[0]])

    @property
    def context_dim(self) -> int:
        """D, the width of ``cond`` (768 for SD v1-4)."""
        return int(self.unet.config.cross_attention_dim)

    @property
    def time_embed_dim(self) -> int:
        """T, the width of the UNet's time embedding and of ``time_offset`` (1280 for SD v1-4)."""
        return int(self.unet.time_embedding.linear_2.out_features)

    @property
    def num_tokens(self) -> int:
        """The context length (77)."""
        return int(self.uncond.shape[1])

    @property
    def size_divisor(self) -> int:
        """Image sides must be multiples of this (64 for SD: VAE stride 8 x 3 UNet downsamplings)."""
        vae_stride = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return vae_stride * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def train(self, mode: bool = True) -> "DiffusionBackbone":
        """Set train/eval mode; the frozen VAE stays in eval mode."""
        super().train(mode)
        self.vae.eval()
        return self

    # ------------------------------------------------------------------------------------ VAE and noise
    @torch.no_grad()
    def encode(self, image: Tensor) -> Tensor:
        """Encode images to SD latents: the posterior mean times the scaling factor, without gradient.

        Args:
            image: (B,3,H,W) float in [-1,1], H and W multiples of 8.

        Returns:
            (B,4,H/8,W/8) float (the VAE's output dtype: its weights' dtype, bf16 under bf16 autocast), SD's
            latent scale (x0.18215).
        """
        posterior = self.vae.encode(image.to(self.vae_input_dtype)).latent_dist
        return posterior.mean * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        """Decode latents to images with the frozen VAE decoder, without gradient.

        The decode is not clipped: the reference feeds the raw ``decoder_output.detach()`` to the head
        (``ldm_diffusers.py``) and clips only the copy it returns for visualisation.

        Args:
            latent: (B,4,h,w) float, SD's latent scale.

        Returns:
            (B,3,8h,8w) float (the VAE's output dtype, as ``encode``), mostly in [-1,1] but not clipped to it.
        """
        latent = latent.to(self.vae_input_dtype) / self.vae.config.scaling_factor
        return self.vae.decode(latent).sample

    def fixed_noise(self, height: int, width: int) -> Tensor:
        """The fixed noise for a latent size.

        Args:
            height, width: latent size.

        Returns:
            (1,4,height,width) float32, standard normal, the same on every call (see the class docstring).
        """
        if (height, width) == BASE_NOISE_SIZE:
            return self.noise
        return self._draw_noise(height, width).to(self.noise.device)

    def _draw_noise(self, height: int, width: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.noise_seed)
        channels = self.vae.config.latent_channels
        # Explicit CPU: the seeded generator is a CPU one, even under a `with torch.device(...)` block.
        return torch.randn(1, channels, height, width, generator=generator, device="cpu")

    def add_noise(self, latent: Tensor, timestep: int | Tensor) -> Tensor:
        """Noise latents to step t of SD's DDPM schedule with the fixed noise.

        ``sqrt(abar_t) * latent + sqrt(1 - abar_t) * noise``; t = 0 gives a noise scale of 0.029.

        Args:
            latent: (B,4,h,w) float.
            timestep: an int for the whole batch, or an int64 tensor () or (B,), in [0, 1000).

        Returns:
            (B,4,h,w) float, same dtype as ``latent``.
        """
        timesteps = self._timesteps(timestep, latent.shape[0], latent.device)
        noise = self.fixed_noise(*latent.shape[-2:]).to(latent.dtype).expand_as(latent)
        return self.scheduler.add_noise(latent, noise, timesteps)

    @staticmethod
    def _timesteps(timestep: int | Tensor, batch_size: int, device: torch.device) -> Tensor:
        if isinstance(timestep, Tensor):
            timesteps = timestep.to(device=device, dtype=torch.long).reshape(-1)
            if timesteps.numel() == 1:
                return timesteps.expand(batch_size)
            if timesteps.numel() != batch_size:
                raise ValueError(f"timestep has {timesteps.numel()} values for a batch of {batch_size}")
            return timesteps
        return torch.full((batch_size,), int(timestep), dtype=torch.long, device=device)

    # ------------------------------------------------------------------------------------------ UNet
    def forward(
        self, image: Tensor, timestep: int | Tensor, cond: Tensor, time_offset: Tensor
    ) -> BackboneOutput:
        """Encode, noise at t, run the UNet at t, decode its output.

        Args:
            image: (B,3,H,W) float in [-1,1], H and W multiples of :attr:`size_divisor` (64 for SD).
            timestep: t for ``add_noise`` and the UNet: an int, or an int64 tensor () or (B,)
                (0 for the student and at inference, DPLG's t for the teacher).
            cond: (1|B,77,D) float, the cross-attention context.
            time_offset: (1|B,T) float, added to the UNet's time embedding.

        Returns:
            :class:`BackboneOutput`: taps [s32, s16, s8], the UNet output latent (B,4,H/8,W/8) and, with
            ``decode_output``, its decoding (B,3,H,W), detached and not clipped; without, the VAE
            encoder's feature (B,C_e,H/4,W/4) instead.

        Raises:
            ValueError: the image size is not a multiple of :attr:`size_divisor`.
        """
        height, width = image.shape[-2:]
        if height % self.size_divisor or width % self.size_divisor:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of {self.size_divisor} (VAE stride x UNet "
                "downsamplings): resize or crop the images to multiples of it"
            )
        if self.decode_output:
            latent = self.add_noise(self.encode(image), timestep)
            features, output = self.forward_latent(latent, timestep, cond, time_offset)
            return BackboneOutput(features=features, latent=output, decoded=self.decode(output).detach())
        self._encoder_tap = [None]
        try:
            clean = self.encode(image)
            encoder_feature = self._encoder_tap[0]
        finally:
            self._encoder_tap = None
        features, output = self.forward_latent(self.add_noise(clean, timestep), timestep, cond, time_offset)
        return BackboneOutput(features=features, latent=output, encoder_feature=encoder_feature)

    def forward_latent(
        self, latent: Tensor, timestep: int | Tensor, cond: Tensor, time_offset: Tensor
    ) -> tuple[list[Tensor], Tensor]:
        """Run the UNet on (already noised) latents and read the taps.

        Args:
            latent: (B,4,h,w) float, h and w multiples of 8 (SD: 3 downsamplings).
            timestep: an int, or an int64 tensor () or (B,).
            cond: (1|B,77,D) float, the cross-attention context.
            time_offset: (1|B,T) float, added to the UNet's time embedding.

        Returns:
            features: [stride 32, stride 16, stride 8] relative to the image, i.e. (B,C,h/4,w/4),
                (B,C,h/2,w/2), (B,C,h,w) float.
            output: (B,4,h,w) float, the UNet's final output.
        """
        batch_size = latent.shape[0]
        if cond.shape[0] not in (1, batch_size) or time_offset.shape[0] not in (1, batch_size):
            raise ValueError(
                f"cond {tuple(cond.shape)} and time_offset {tuple(time_offset.shape)} must have batch size 1 "
                f"or {batch_size}"
            )
        timesteps = self._timesteps(timestep, batch_size, latent.device)
        self._taps = [None] * len(TAPPED_UP_BLOCKS)
        self._time_offset = time_offset
        try:
            output = self.unet(
                latent.to(self.unet.dtype),
                timesteps,
                encoder_hidden_states=cond.expand(batch_size, -1, -1),
                return_dict=False,
            )[0]
            features = list(self._taps)
        finally:
            # Cleared even on error, so a stale offset never leaks into a later call.
            self._taps = None
            self._time_offset = None
        return features, output

    def _add_time_offset(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        # emb += tanh(g) * E, right after the time embedding MLP, as the reference does.
        if self._time_offset is None:
            return None
        return output + self._time_offset.to(output.dtype)

    def _capture_encoder_tap(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        # Only during forward's image encode: LPLR's palette encodes must not overwrite it.
        if self._encoder_tap is not None:
            self._encoder_tap[0] = output.detach()

    def _capture_tap(self, index: int, module: nn.Module, args: tuple, output: Tensor | tuple) -> None:
        # Only during forward_latent: a gradient-checkpointing recomputation must not overwrite the taps.
        if self._taps is None:
            return
        self._taps[index] = tap_output(output)

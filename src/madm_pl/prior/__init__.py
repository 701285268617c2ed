"""The tiny diffusion prior: a small VAE and UNet of the ``tiny`` preset's architecture, pretrained on CPU.

``make prior`` (``python -m madm_pl.prior --out priors/tiny``) trains it on the synthetic world's own prior
scenes (see :mod:`madm_pl.prior.train`); :mod:`madm_pl.prior.evaluate` measures it. The result is a folder in
the diffusers layout that ``DiffusionBackbone("priors/tiny")`` loads like SD v1-4.
"""

from madm_pl.prior.train import PriorOptions, main, train_prior

__all__ = ["PriorOptions", "main", "train_prior"]

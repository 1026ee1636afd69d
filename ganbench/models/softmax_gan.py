"""Softmax GAN — Min Lin, "Softmax GAN", 2017.

D's outputs over the whole batch (real and generated) form one softmax (a Boltzmann distribution
with energy ``-D(x)``); D puts its mass on the real samples and G asks for the uniform distribution
over the batch (§2; :func:`ganbench.losses.d_softmax`, :func:`ganbench.losses.g_softmax`). G's loss
reads D's outputs on real data (``Objective.g_needs_real``). Built on the DCGAN networks and
optimizer, as in the paper's experiments.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ganbench.models.base import GANModule
from ganbench.nn.norms import Norm


class SoftmaxGAN(GANModule):
    family: ClassVar[str] = "softmax_gan"
    image_arch: ClassVar[str] = "dcgan"

    def __init__(self, g_norm: Norm = "batch", d_norm: Norm = "batch", latent_dim: int = 100, **kwargs: Any):
        super().__init__(loss="softmax", g_norm=g_norm, d_norm=d_norm, latent_dim=latent_dim, **kwargs)


__all__ = ["SoftmaxGAN"]

"""DCGAN — Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional
GANs", ICLR 2016.

The all-convolutional networks of §3 (strided convolutions, batch norm in G and D except G's output
and D's input layers, ReLU/Tanh in G, LeakyReLU(0.2) in D), the non-saturating GAN loss, a
100-dimensional z and Adam with lr 2e-4 and β1 = 0.5 (§4).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ganbench.losses import LossName
from ganbench.models.base import GANModule
from ganbench.nn.norms import Norm


class DCGAN(GANModule):
    family: ClassVar[str] = "dcgan"
    image_arch: ClassVar[str] = "dcgan"

    def __init__(self, loss: LossName = "ns", g_norm: Norm = "batch", d_norm: Norm = "batch", latent_dim: int = 100,
                 **kwargs: Any):
        super().__init__(loss=loss, g_norm=g_norm, d_norm=d_norm, latent_dim=latent_dim, **kwargs)


__all__ = ["DCGAN"]

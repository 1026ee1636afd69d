"""f-GAN — Nowozin, Cseke & Tomioka, "f-GAN: Training Generative Neural Samplers using Variational
Divergence Minimization", NeurIPS 2016.

D is the variational function ``T = g_f(V)`` of eq. 6 with the output activation and conjugate of
Table 2 for the chosen ``divergence``; G uses the non-saturating update of §3.2. The loss is the
table entry ``fgan_<divergence>`` of :data:`ganbench.losses.LOSSES`. DCGAN networks and Adam
(2e-4, β1 = 0.5) as in the paper's image experiments.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ganbench.losses import FDivergenceName
from ganbench.models.base import GANModule
from ganbench.nn.norms import Norm


class FGAN(GANModule):
    family: ClassVar[str] = "fgan"
    image_arch: ClassVar[str] = "dcgan"

    def __init__(self, divergence: FDivergenceName = "js", g_norm: Norm = "batch", d_norm: Norm = "batch",
                 latent_dim: int = 100, **kwargs: Any):
        """``divergence``: the f-divergence of Table 2 that G minimizes."""
        super().__init__(loss=f"fgan_{divergence}", g_norm=g_norm, d_norm=d_norm, latent_dim=latent_dim,
                         **kwargs)


__all__ = ["FGAN"]

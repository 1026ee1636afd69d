"""SNGAN — Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for GANs", ICLR 2018.

Spectral normalization of every D layer, hinge loss, Adam(2e-4, β=(0.0, 0.9)), n_dis = 5, the
"standard CNN" (Table 3) or ResNet (Table 4) networks, batch 64 for D (and 128 for G, as in the
reference implementation, set in configs/sngan.yaml).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ganbench.losses import LossName
from ganbench.models.base import GANModule
from ganbench.nn.norms import Norm


class SNGAN(GANModule):
    family: ClassVar[str] = "sngan"
    paper_optimizer: ClassVar[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = (
        torch.optim.Adam, {"lr": 2e-4, "betas": (0.0, 0.9)})

    def __init__(self, loss: LossName = "hinge", d_norm: Norm = "spectral", g_norm: Norm = "batch", n_critic: int = 5,
                 **kwargs: Any):
        super().__init__(loss=loss, d_norm=d_norm, g_norm=g_norm, n_critic=n_critic, **kwargs)

__all__ = ["SNGAN"]

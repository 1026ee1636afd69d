"""DRAGAN — Kodali, Abernethy, Hays & Kira, "On Convergence and Stability of GANs", 2017.

The non-saturating GAN with the gradient penalty ``λ E[(‖∇D(x̃)‖ - 1)²]`` at perturbed real
points ``x̃`` (§4, λ = 10; :func:`ganbench.regularizers.dragan_penalty`), which penalizes the sharp
gradients around the data that accompany mode collapse. The DCGAN networks without batch norm in D
(a per-sample penalty), and Adam(1e-4, β=(0.5, 0.9)) as in the authors' code.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ganbench.losses import LossName
from ganbench.models.base import GANModule
from ganbench.nn.norms import Norm
from ganbench.regularizers import PenaltyName


class DRAGAN(GANModule):
    family: ClassVar[str] = "dragan"
    image_arch: ClassVar[str] = "dcgan"
    paper_optimizer: ClassVar[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = (
        torch.optim.Adam, {"lr": 1e-4, "betas": (0.5, 0.9)})

    def __init__(self, loss: LossName = "ns", penalty: PenaltyName = "dragan", penalty_weight: float = 10.0,
                 g_norm: Norm = "batch", d_norm: Norm = "none", **kwargs: Any):
        super().__init__(loss=loss, penalty=penalty, penalty_weight=penalty_weight, g_norm=g_norm, d_norm=d_norm,
                         **kwargs)


__all__ = ["DRAGAN"]

"""Wasserstein GANs.

* :class:`WGAN` — Arjovsky, Chintala & Bottou, "Wasserstein GAN", ICML 2017, Algorithm 1: a
  critic without sigmoid maximizes ``E[D(x)] - E[D(G(z))]`` (the Kantorovich-Rubinstein dual,
  eq. 3), its weights are clipped to ``[-c, c]`` after every critic update (c = 0.01), n_critic = 5,
  RMSProp with lr 5e-5. The critic estimate of W(P_r, P_g) is logged as ``train/critic_gap``.
* :class:`WGANGP` — Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017,
  Algorithm 1: clipping replaced by the gradient penalty ``λ E[(‖∇D(x̂)‖ - 1)²]`` with λ = 10
  (eq. 3), no batch norm in the critic (§4; layer norm allowed), n_critic = 5, Adam(1e-4, β=(0, 0.9)),
  and the ResNet of the CIFAR-10 experiments.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ganbench.models.base import GANModule
from ganbench.nn.norms import Norm
from ganbench.regularizers import PenaltyName, clip_weights_


class WGAN(GANModule):
    family: ClassVar[str] = "wgan"
    image_arch: ClassVar[str] = "dcgan"
    paper_optimizer: ClassVar[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = (
        torch.optim.RMSprop, {"lr": 5e-5})

    def __init__(self, clip: float = 0.01, g_norm: Norm = "batch", d_norm: Norm = "batch", n_critic: int = 5,
                 latent_dim: int = 100, **kwargs: Any):
        """``clip``: the clipping bound c of Algorithm 1."""
        super().__init__(loss="wasserstein", g_norm=g_norm, d_norm=d_norm, n_critic=n_critic, latent_dim=latent_dim,
                         **kwargs)

    def after_d_step(self) -> None:
        """Algorithm 1, line 7: ``w ← clip(w, -c, c)`` after every critic update."""
        clip_weights_(self.discriminator, self.cfg.clip)


class WGANGP(GANModule):
    family: ClassVar[str] = "wgan_gp"
    image_arch: ClassVar[str] = "resnet"
    paper_optimizer: ClassVar[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = (
        torch.optim.Adam, {"lr": 1e-4, "betas": (0.0, 0.9)})

    def __init__(self, penalty: PenaltyName = "gp", penalty_weight: float = 10.0, g_norm: Norm = "batch",
                 d_norm: Norm = "none", n_critic: int = 5, **kwargs: Any):
        super().__init__(loss="wasserstein", penalty=penalty, penalty_weight=penalty_weight, g_norm=g_norm,
                         d_norm=d_norm, n_critic=n_critic, **kwargs)


__all__ = ["WGAN", "WGANGP"]

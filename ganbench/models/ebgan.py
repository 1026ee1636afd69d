"""EBGAN — Zhao, Mathieu & LeCun, "Energy-based Generative Adversarial Network", ICLR 2017.

D is an autoencoder whose energy is the per-sample reconstruction error
(:mod:`ganbench.nn.autoencoder`, mean squared error by default). D minimizes
``E[D(x)] + E[[m - D(G(z))]⁺]`` (eq. 1, :func:`~ganbench.losses.d_ebgan`) and G minimizes
``E[D(G(z))] + w_PT·f_PT(Enc(G(z)))`` (eq. 2 plus the pulling-away term of eq. 6 on the encoder
embeddings of the generated batch, :func:`~ganbench.losses.pullaway_term`, weight 0.1 as in §2.4).
Energies are means over pixels, so the margin ``m`` does not depend on the resolution.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn as nn

from ganbench import GanbenchError
from ganbench.losses import d_ebgan, g_ebgan, pullaway_term
from ganbench.models.base import GANModule
from ganbench.nn.autoencoder import Energy, autoencoder
from ganbench.nn.norms import Norm


class EnergyGAN(GANModule):
    """Shared by the autoencoder-discriminator families (EBGAN, MAGAN, BEGAN): the autoencoder D of
    :mod:`ganbench.nn.autoencoder` with a ``code_dim`` bottleneck and an ``mse`` or ``l1`` energy."""

    pack_unsupported: ClassVar[str | None] = (
        "its discriminator is an autoencoder whose energy is a per-sample reconstruction error")

    def __init__(self, code_dim: int = 64, energy: Energy = "mse", **kwargs: Any):
        super().__init__(**kwargs)
        if self.cfg.minibatch != "none":
            raise GanbenchError(f"model.minibatch={self.cfg.minibatch!r} is not supported by the autoencoder "
                                "discriminator; use model.minibatch none")

    def build_discriminator(self) -> nn.Module:
        h = self.cfg
        return autoencoder(self.resolved_arch, norm=h.d_norm, code_dim=h.code_dim, energy=h.energy,
                           **self.network_kwargs())

    def energies(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample energy and embedding of what D sees (instance noise included)."""
        return self.discriminator.energy_and_code(self.d_input(x))

    def d_energies(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Energies of a real batch and of a fresh generated batch (no graph into G), and the fakes."""
        with torch.no_grad():
            fake = self.generate(len(real), labels)
        return self.energies(real)[0], self.energies(fake)[0], fake

    def g_energies(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy and embedding of a fresh generated batch of ``g_batch_size`` samples, with graph into G."""
        return self.energies(self.generate(self.cfg.g_batch_size or len(real), labels))


class EBGAN(EnergyGAN):
    """Args (besides :class:`GANModule`'s): ``margin`` m of eq. 1; ``pt_weight`` of the pulling-away term
    (0 disables it, i.e. plain EBGAN); ``code_dim`` of the autoencoder bottleneck; ``energy`` ``mse`` or ``l1``."""

    family: ClassVar[str] = "ebgan"

    def __init__(self, margin: float = 1.0, pt_weight: float = 0.1, d_norm: Norm = "batch", g_norm: Norm = "batch",
                 **kwargs: Any):
        super().__init__(d_norm=d_norm, g_norm=g_norm, **kwargs)
        self.margin = margin

    def d_loss(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        e_real, e_fake, fake = self.d_energies(real, labels)
        margin = self.device_values.get("margin", self.margin)  # MAGAN's adapts: the device copy
        loss = d_ebgan(e_real, e_fake, margin) + self.penalty(real, fake, labels)
        return loss, {"energy_real": e_real.detach().mean(), "energy_fake": e_fake.detach().mean()}

    def g_loss(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        e_fake, code = self.g_energies(real, labels)
        loss = g_ebgan(e_fake)
        logs = {"energy_fake_g": e_fake.detach().mean()}
        if self.cfg.pt_weight > 0:
            pt = pullaway_term(code)
            loss = loss + self.cfg.pt_weight * pt
            logs["pullaway"] = pt.detach()
        return loss, logs


__all__ = ["EBGAN", "EnergyGAN"]

"""BEGAN — Berthelot, Schumm & Metz, "BEGAN: Boundary Equilibrium Generative Adversarial Networks", 2017.

D is an autoencoder with the L1 reconstruction energy ``L(v) = |v - D(v)|`` (eq. 1, η = 1, mean over
pixels). D minimizes ``L(x) - k_t·L(G(z))`` and G minimizes ``L(G(z))`` (eq. 4,
:func:`~ganbench.losses.d_began` / :func:`~ganbench.losses.g_began`). After every G iteration the
equilibrium variable follows the proportional control of eq. 4 (:func:`~ganbench.losses.began_k_update`):
``k_{t+1} = clip(k_t + λ_k(γ·L(x) - L(G(z_G))), 0, 1)`` with ``k_0 = 0``, where ``L(x)`` is the mean real
energy of the iteration's last D step and ``L(G(z_G))`` the mean energy of the G step's batch.
``train/began_k`` (k_{t+1}) and ``train/began_m_global`` (``M_global``, §3.4.1, on the same energies) are
logged at every logging step, with the two energies as ``train/began_energy_real`` and
``train/began_energy_fake``. ``k`` is a float64 number kept in the checkpoint, so a resumed run continues it.
Defaults: γ = 0.5, λ_k = 0.001, Adam(1e-4, β=(0.5, 0.999)), no normalization in either network.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ganbench.losses import began_convergence, began_k_update, d_began, g_began
from ganbench.models.ebgan import EnergyGAN
from ganbench.nn.autoencoder import Energy
from ganbench.nn.norms import Norm


class BEGAN(EnergyGAN):
    """Args (besides :class:`GANModule`'s): ``gamma`` γ (diversity ratio), ``lambda_k`` (the proportional
    gain), ``k_init`` k_0, ``code_dim`` (N_h) and ``energy`` of the autoencoder D."""

    family: ClassVar[str] = "began"
    paper_optimizer: ClassVar[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = (
        torch.optim.Adam, {"lr": 1e-4, "betas": (0.5, 0.999)})

    def __init__(self, gamma: float = 0.5, lambda_k: float = 0.001, k_init: float = 0.0, energy: Energy = "l1",
                 d_norm: Norm = "none", g_norm: Norm = "none", **kwargs: Any):
        super().__init__(energy=energy, d_norm=d_norm, g_norm=g_norm, **kwargs)
        self.k = float(k_init)
        self._energy_real: torch.Tensor | None = None
        self._energy_fake: torch.Tensor | None = None

    def d_loss(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        e_real, e_fake, fake = self.d_energies(real, labels)
        self._energy_real = e_real.detach().mean()
        loss = d_began(e_real, e_fake, self.device_values.get("began_k", self.k)) + self.penalty(real, fake, labels)
        return loss, {"energy_real": self._energy_real, "energy_fake": e_fake.detach().mean()}

    def g_loss(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        e_fake, _ = self.g_energies(real, labels)
        self._energy_fake = e_fake.detach().mean()
        return g_began(e_fake), {}

    def host_values(self) -> None:
        super().host_values()
        self.device_value("began_k", self.k)  # the D loss reads k_t from the device

    def after_g_step(self) -> None:
        """Proportional control of k (eq. 4) on the energies averaged over data-parallel ranks."""
        super().after_g_step()
        reduce = self.trainer.strategy.reduce
        e_real = reduce(self._energy_real.clone(), reduce_op="mean")
        e_fake = reduce(self._energy_fake.clone(), reduce_op="mean")
        gamma = self.cfg.gamma
        self.k = began_k_update(self.k, e_real, e_fake, gamma, self.cfg.lambda_k)
        if self.logging_step():
            f64 = {"dtype": torch.float64, "device": e_real.device}
            self.log_dict({"train/began_k": torch.tensor(self.k, **f64),
                           "train/began_m_global": began_convergence(e_real, e_fake, gamma),
                           "train/began_energy_real": e_real, "train/began_energy_fake": e_fake})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ganbench"]["began_k"] = self.k

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.k = float(checkpoint.get("ganbench", {}).get("began_k", self.cfg.k_init))


__all__ = ["BEGAN"]

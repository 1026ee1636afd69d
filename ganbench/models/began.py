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
In a population each replica has its own k (a ``(population,)`` float64 vector, logged as
``train/began_k/r<r>``) driven by its own energies.
Defaults: γ = 0.5, λ_k = 0.001, Adam(1e-4, β=(0.5, 0.999)), no normalization in either network.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ganbench.losses import began_convergence, began_k_update, d_began, g_began
from ganbench.models.ebgan import EnergyGAN
from ganbench.models.engine.batch import Batch
from ganbench.nn.autoencoder import Energy
from ganbench.nn.norms import Norm


class BEGAN(EnergyGAN):
    """Args (besides :class:`GANModule`'s): ``gamma`` γ (diversity ratio), ``lambda_k`` (the proportional
    gain), ``k_init`` k_0, ``code_dim`` (N_h) and ``energy`` of the autoencoder D."""

    family: ClassVar[str] = "began"
    paper_optimizer: ClassVar[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = (
        torch.optim.Adam, {"lr": 1e-4, "betas": (0.5, 0.999)})
    device_state: ClassVar[dict[str, str]] = {"began_k": "k"}  # the D loss reads k_t as declared state
    replica_entries: ClassVar[tuple[str, ...]] = ("began_k",)

    def __init__(self, gamma: float = 0.5, lambda_k: float = 0.001, k_init: float = 0.0, energy: Energy = "l1",
                 d_norm: Norm = "none", g_norm: Norm = "none", **kwargs: Any):
        super().__init__(energy=energy, d_norm=d_norm, g_norm=g_norm, **kwargs)
        self.k = self.replica_state(k_init)  # a float; a (population,) float64 vector in a population
        self._energy_real: torch.Tensor | None = None

    def d_objective(self, e_real: torch.Tensor, e_fake: torch.Tensor) -> torch.Tensor:
        return self.per_replica(d_began, e_real, e_fake, k=self.state_of("began_k"))

    def d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, logs = super().d_loss(batch)
        self._energy_real = logs["energy_real"]
        return loss, logs

    def g_objective(self, e_fake: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.per_replica(g_began, e_fake), {}

    def after_g_step(self) -> None:
        """Proportional control of k (eq. 4) on the energies averaged over data-parallel ranks; each
        replica's k on its own energies."""
        super().after_g_step()
        reduce = self.trainer.strategy.reduce
        e_real = reduce(self._energy_real.clone(), reduce_op="mean")
        e_fake = reduce(self._energy_fake.clone(), reduce_op="mean")
        gamma, lambda_k = self.cfg.gamma, self.cfg.lambda_k
        self.k = self.replica_update(lambda k, r, f: began_k_update(k, r, f, gamma, lambda_k), self.k, e_real, e_fake)
        if self.logging_step():
            self.log_state({"began_k": torch.as_tensor(self.k, dtype=torch.float64, device=e_real.device),
                            "began_m_global": self.replica_map(lambda r, f: began_convergence(r, f, gamma),
                                                               e_real, e_fake),
                            "began_energy_real": e_real, "began_energy_fake": e_fake})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ganbench"]["began_k"] = self.replica_entry(self.k)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.k = self.replica_state(checkpoint.get("ganbench", {}).get("began_k", self.cfg.k_init))


__all__ = ["BEGAN"]

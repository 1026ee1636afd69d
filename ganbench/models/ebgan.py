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
from ganbench.models.engine.batch import Batch
from ganbench.nn.autoencoder import Energy, autoencoder
from ganbench.nn.norms import Norm


class EnergyGAN(GANModule):
    """Shared by the autoencoder-discriminator families (EBGAN, MAGAN, BEGAN): the autoencoder D of
    :mod:`ganbench.nn.autoencoder` with a ``code_dim`` bottleneck and an ``mse`` or ``l1`` energy."""

    pack_unsupported: ClassVar[str | None] = (
        "its discriminator is an autoencoder whose energy is a per-sample reconstruction error")
    #: the levers on D's scores all apply, on the score −energy (:meth:`score_of`)
    score_levers_unsupported: ClassVar[dict[str, str] | None] = {}
    ada_unsupported: ClassVar[str | None] = (
        "its discriminator returns a non-negative reconstruction energy, so the sign of its score on the "
        "reals (ADA's r_t) is never positive and says nothing about overfitting")

    #: the losses are evaluated per replica, the draws come from the replicas' streams
    batched_overrides: ClassVar[frozenset[str]] = frozenset({"d_loss", "g_loss"})

    def __init__(self, code_dim: int = 64, energy: Energy = "mse", **kwargs: Any):
        super().__init__(**kwargs)
        if self.cfg.minibatch != "none":
            raise GanbenchError(f"model.minibatch={self.cfg.minibatch!r} is not supported by the autoencoder "
                                "discriminator; use model.minibatch none")
        self._energy_fake: torch.Tensor | None = None

    def build_discriminator(self) -> nn.Module:
        h = self.cfg
        return autoencoder(self.resolved_arch, norm=h.d_norm, code_dim=h.code_dim, energy=h.energy,
                           **self.network_kwargs())

    def energies(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample energy and embedding of what D sees (instance noise included)."""
        return self.discriminator.energy_and_code(self.d_input(x))

    def score_of(self, energy: torch.Tensor) -> torch.Tensor:
        """D's score of a sample of this energy: its negative (a low energy is what D takes as real)."""
        return -energy

    def d_score(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.score_of(self.energies(x)[0])

    def d_energies(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Energies of a real batch and of a fresh generated batch (no graph into G), the fakes and
        their latents (None unless zCR needs them)."""
        fake, z = self.d_fakes(len(real), labels)
        return self.energies(real)[0], self.energies(fake)[0], fake, z

    def g_energies(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Energy and embedding of a fresh generated batch of ``g_batch_size`` samples (with graph into
        G), the batch and its latents (None unless zCR needs them)."""
        fake, z = self.g_fakes(self.g_rows(real), labels)
        return *self.energies(fake), fake, z

    def d_objective(self, e_real: torch.Tensor, e_fake: torch.Tensor) -> torch.Tensor:
        """The family's per-replica D loss of the real and generated energies."""
        raise NotImplementedError

    def g_objective(self, e_fake: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The family's per-replica G loss of the generated energies that update G (and the batch's
        embeddings), and values to log."""
        raise NotImplementedError

    def d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`d_objective` plus the penalty and the levers on D's scores (CR, bCR, zCR, LeCam on the
        negative energies, :meth:`score_regularizers`), per replica."""
        real, labels = batch.x, batch.y
        e_real, e_fake, fake, z = self.d_energies(real, labels)
        losses = self.d_objective(e_real, e_fake) + self.penalty(real, fake, labels)
        regularizers, values = self.score_regularizers(real, fake, z, self.score_of(e_real), self.score_of(e_fake),
                                                       labels)
        losses = losses + regularizers
        return losses.sum(), {"energy_real": self.replica_means(e_real), "energy_fake": self.replica_means(e_fake),
                              "d_losses": losses.detach(), **values}

    def g_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`g_objective` of a fresh batch — with ``top_k`` of the k fakes of lowest energy (highest
        score) of each replica — less zCR's G term, per replica."""
        real, labels = batch.x, batch.y
        e_fake, code, fake, z = self.g_energies(real, labels)
        self._energy_fake = self.replica_means(e_fake)
        losses, logs = self.g_objective(self.top_k(e_fake), code)
        losses, values = self.g_regularized(losses, fake, z, labels)
        return losses.sum(), {**logs, **values, "g_losses": losses.detach()}


class EBGAN(EnergyGAN):
    """Args (besides :class:`GANModule`'s): ``margin`` m of eq. 1; ``pt_weight`` of the pulling-away term
    (0 disables it, i.e. plain EBGAN); ``code_dim`` of the autoencoder bottleneck; ``energy`` ``mse`` or ``l1``."""

    family: ClassVar[str] = "ebgan"

    def __init__(self, margin: float = 1.0, pt_weight: float = 0.1, d_norm: Norm = "batch", g_norm: Norm = "batch",
                 **kwargs: Any):
        super().__init__(d_norm=d_norm, g_norm=g_norm, **kwargs)
        self.margin = margin

    def d_objective(self, e_real: torch.Tensor, e_fake: torch.Tensor) -> torch.Tensor:
        return self.per_replica(d_ebgan, e_real, e_fake, margin=self.d_margin())

    def d_margin(self) -> float | torch.Tensor:
        """The margin m of the D loss (constant here; MAGAN's adapts)."""
        return self.margin

    def g_objective(self, e_fake: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = self.per_replica(g_ebgan, e_fake)
        logs = {"energy_fake_g": self._energy_fake}
        if self.cfg.pt_weight > 0:  # the pulling-away term couples the samples of each replica's whole batch
            pt = self.per_replica(pullaway_term, code)
            losses = losses + self.cfg.pt_weight * pt
            logs["pullaway"] = self.replica_log(pt)
        return losses, logs


__all__ = ["EBGAN", "EnergyGAN"]

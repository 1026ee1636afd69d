"""Loss-Sensitive GAN — Qi, "Loss-Sensitive Generative Adversarial Networks on Lipschitz Densities", IJCV 2019
(arXiv:1701.06264, 2017).

D is a learned loss function ``L_θ(x)`` (the raw output of an ordinary discriminator; it is not
constrained to be ≥ 0). It minimizes ``S(θ, φ*) = E[L_θ(x)] + λ·E[(Δ(x, G(z)) + L_θ(x) - L_θ(G(z)))⁺]``
(§3, :func:`~ganbench.losses.d_loss_sensitive`): a generated sample's loss must exceed a real
sample's by at least the margin ``Δ`` (:func:`~ganbench.losses.ls_margin`, the per-sample mean
absolute pixel difference between the i-th real and i-th generated sample of the batch). G minimizes
``T(θ*, φ) = E[L_θ(G(z))]`` (§3, :func:`~ganbench.losses.g_loss_sensitive`). L_θ is kept Lipschitz
(the Lipschitz-density assumption of the paper) by the one-sided gradient penalty ``lp`` of
:mod:`ganbench.regularizers` (``penalty``, ``penalty_weight``; ``gp`` is the two-sided alternative).
Defaults: λ = 1, ``penalty: lp`` with weight 10, no normalization in D (the penalty is per sample),
batch norm in G, Adam(2e-4, β=(0.5, 0.999)).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ganbench.losses import Objective, d_loss_sensitive, g_loss_sensitive, ls_margin
from ganbench.models.base import GANModule
from ganbench.models.engine.batch import Batch
from ganbench.nn.norms import Norm
from ganbench.regularizers import PenaltyName


class LossSensitiveGAN(GANModule):
    """Args (besides :class:`GANModule`'s): ``lam`` λ, the weight of the margin hinge in S(θ, φ)."""

    family: ClassVar[str] = "loss_sensitive"
    #: the step pieces written for a population: the D loss per replica (:meth:`per_replica`), the
    #: margin per sample, the penalty the base's (per replica), every draw from the replicas' streams;
    #: G's loss T(θ*, φ) = E[L_θ(G(z))] is the base's with ``objective.g`` = g_loss_sensitive
    batched_overrides: ClassVar[frozenset[str]] = frozenset({"d_loss"})
    #: every lever on D's scores applies, on the score −L_θ(x) (:meth:`score_of`; lower learned loss =
    #: more real): CR/bCR E[(L_θ(x) − L_θ(T(x)))²], zCR on L_θ(G(z)), LeCam on −L_θ against the other
    #: set's average, top-k keeps the k fakes with the lowest L_θ (T(θ*, φ) is a mean over fakes)
    score_levers_unsupported: ClassVar[dict[str, str] | None] = {}
    ada_unsupported: ClassVar[str | None] = (
        "its discriminator is a learned loss L_θ(x) that the objective only compares across samples (real "
        "against generated, by the margin Δ), so its sign on the reals (ADA's r_t) has no zero to overfit past")

    def __init__(self, lam: float = 1.0, penalty: PenaltyName = "lp", penalty_weight: float = 10.0,
                 d_norm: Norm = "none", g_norm: Norm = "batch", **kwargs: Any):
        super().__init__(penalty=penalty, penalty_weight=penalty_weight, d_norm=d_norm, g_norm=g_norm, **kwargs)
        self.objective = Objective(d_loss_sensitive, g_loss_sensitive)  # d needs the margin: see d_loss

    def score_of(self, d_out: torch.Tensor) -> torch.Tensor:
        """The realness of a sample, −L_θ(x): a lower learned loss is a more real sample (S(θ, φ*) lowers
        L_θ on real data and raises it on generated data by the margin Δ)."""
        return -d_out

    def d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real, labels = batch.x, batch.y
        fake, z = self.d_fakes(len(real), labels)
        l_real, l_fake = self.discriminate(real, labels), self.discriminate(fake, labels)
        delta = ls_margin(self.packed(real), self.packed(fake))  # Δ between packs (Δ per sample at pack 1)
        losses = (self.per_replica(self.objective.d, l_real, l_fake, delta, lam=self.cfg.lam)
                  + self.penalty(real, fake, labels))
        regularizers, values = self.score_regularizers(real, fake, z, self.score_of(l_real), self.score_of(l_fake),
                                                       labels)
        losses = losses + regularizers
        # per-sample values: training_step reduces them (per replica in a population) on the steps that log
        return losses.sum(), {"loss_real": l_real.detach(), "loss_fake": l_fake.detach(), "ls_margin": delta,
                              "d_losses": losses.detach(), **values}


__all__ = ["LossSensitiveGAN"]

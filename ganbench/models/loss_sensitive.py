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
from ganbench.nn.norms import Norm
from ganbench.regularizers import PenaltyName


class LossSensitiveGAN(GANModule):
    """Args (besides :class:`GANModule`'s): ``lam`` λ, the weight of the margin hinge in S(θ, φ)."""

    family: ClassVar[str] = "loss_sensitive"
    #: the step pieces written for a population: the D loss per replica (:meth:`per_replica`), the
    #: margin per sample, the penalty the base's (per replica), every draw from the replicas' streams;
    #: G's loss T(θ*, φ) = E[L_θ(G(z))] is the base's with ``objective.g`` = g_loss_sensitive
    batched_overrides: ClassVar[frozenset[str]] = frozenset({"d_loss"})
    #: the regularizers of D's scores (their model.* keys) and why one is not defined for this family's D
    #: (None: defined). D's per-sample score is the learned loss L_θ(x), lower = more real; the levers
    #: that rank or anchor scores read its realness :meth:`d_score` = −L_θ(x)
    score_levers: ClassVar[dict[str, str | None]] = {
        "cr_real": None,  # E[(L_θ(x) − L_θ(T(x)))²]: a transform of a real image keeps its loss
        "cr_fake": None,  # the same on G(z) (bCR)
        "zcr_dis": None,  # E[(L_θ(G(z)) − L_θ(G(z + Δz)))²]
        "zcr_gen": None,  # −E‖G(z) − G(z + Δz)‖² in G's loss: a term of G alone
        "lecam_weight": None,  # relu(−L_θ(x) − α_F)² + relu(α_R + L_θ(G(z)))², α the averages of −L_θ
        "top_k": None,  # T(θ*, φ) is a mean over fakes: the k fakes with the lowest L_θ update G
    }

    def __init__(self, lam: float = 1.0, penalty: PenaltyName = "lp", penalty_weight: float = 10.0,
                 d_norm: Norm = "none", g_norm: Norm = "batch", **kwargs: Any):
        super().__init__(penalty=penalty, penalty_weight=penalty_weight, d_norm=d_norm, g_norm=g_norm, **kwargs)
        self.objective = Objective(d_loss_sensitive, g_loss_sensitive)  # d needs the margin: see d_loss

    def d_score(self, d_out: torch.Tensor) -> torch.Tensor:
        """The realness of a sample, −L_θ(x): a lower learned loss is a more real sample (S(θ, φ*) lowers
        L_θ on real data and raises it on generated data by the margin Δ)."""
        return -d_out

    def d_loss(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            z, fake = self.fake_batch(len(real), labels, keep_z=bool(self.cfg.zcr_dis))
        l_real, l_fake = self.discriminate(real, labels), self.discriminate(fake, labels)
        delta = ls_margin(self.packed(real), self.packed(fake))  # Δ between packs (Δ per sample at pack 1)
        losses = (self.per_replica(self.objective.d, l_real, l_fake, delta, lam=self.cfg.lam)
                  + self.penalty(real, fake, labels))
        regularizers, values = self.score_regularizers(real, fake, z, l_real, l_fake, labels)
        losses = losses + regularizers
        # per-sample values: training_step reduces them (per replica in a population) on the steps that log
        return losses.sum(), {"loss_real": l_real.detach(), "loss_fake": l_fake.detach(), "ls_margin": delta,
                              "d_losses": losses.detach(), **values}


__all__ = ["LossSensitiveGAN"]

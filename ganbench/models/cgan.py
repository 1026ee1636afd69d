"""Class-conditional GANs; G always takes the class through conditional batch norm (de Vries et al. 2017).

* ``mode: projection`` — Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018: D adds
  ``<embed(y), φ(x)>`` to its score (eq. 3); hinge loss, spectral norm in D, n_dis = 5,
  Adam(2e-4, β=(0, 0.9)) and the ResNet networks of §5.
* ``mode: acgan`` — Odena, Olah & Shlens, "Conditional Image Synthesis with Auxiliary Classifier
  GANs", ICML 2017: D is unconditional and a linear classifier on its features predicts the class.
  With ``L_C`` the class cross-entropy on real and generated samples, D minimizes its adversarial
  loss + ``class_weight · L_C`` and G its adversarial loss + ``class_weight · L_C(fake)`` (eqs. 2-3).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ganbench import GanbenchError
from ganbench.losses import LossName
from ganbench.models.base import GANModule
from ganbench.models.engine.batch import Batch
from ganbench.nn import DISCRIMINATORS
from ganbench.nn.norms import Norm


def auxiliary_class_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-GAN class loss ``-E[log P(C = c | X)]`` (Odena et al. 2017, eq. 2, negated) on class logits (N, K)."""
    return F.cross_entropy(logits, labels)


def real_and_fake_class_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                             labels: torch.Tensor) -> torch.Tensor:
    """D's class loss ``L_C`` on the reals and on the fakes generated for the same classes (eq. 2)."""
    return auxiliary_class_loss(real_logits, labels) + auxiliary_class_loss(fake_logits, labels)


class CGAN(GANModule):
    family: ClassVar[str] = "cgan"
    image_arch: ClassVar[str] = "resnet"
    paper_optimizer: ClassVar[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = (
        torch.optim.Adam, {"lr": 2e-4, "betas": (0.0, 0.9)})
    #: the AC-GAN losses add their class terms per replica (:meth:`per_replica`) to the base pieces
    batched_overrides: ClassVar[frozenset[str]] = frozenset({"d_loss", "g_loss"})
    #: the levers on D's scores all apply: both modes take D's loss through the base's d_losses and G's
    #: through g_losses (the adversarial score is a logit; AC-GAN's class terms are added beside it)
    score_levers_unsupported: ClassVar[dict[str, str] | None] = {}

    def __init__(self, mode: Literal["projection", "acgan"] = "projection", class_weight: float = 1.0,
                 loss: LossName = "hinge", g_norm: Norm = "batch", d_norm: Norm = "spectral", n_critic: int = 5,
                 **kwargs: Any):
        """``mode``: how D uses the class; ``class_weight``: weight of the AC-GAN class loss."""
        if mode == "acgan" and kwargs.get("feature_matching", 0.0) > 0:
            raise GanbenchError("model.feature_matching cannot be combined with model.mode='acgan'; "
                                "use model.mode projection or model.feature_matching 0")
        super().__init__(conditional=True, loss=loss, g_norm=g_norm, d_norm=d_norm, n_critic=n_critic, **kwargs)
        if self.num_classes < 2:
            raise GanbenchError(f"model class cgan needs labelled data with >= 2 classes, got {self.num_classes}")

    def build_discriminator(self) -> nn.Module:
        if self.cfg.mode == "projection":
            return super().build_discriminator()
        kw = {**self.network_kwargs(), "num_classes": 0}
        disc = DISCRIMINATORS[self.resolved_arch](norm=self.cfg.d_norm, minibatch=self.cfg.minibatch, **kw)
        with torch.no_grad():
            dim = disc.eval().features(torch.zeros(2, *self.data_shape)).shape[1]
        disc.train().add_module("classifier", nn.Linear(dim, self.num_classes))
        return disc

    def scores(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """AC-GAN: D's score of ``x`` and its class logits (N, K), from one pass of D's features."""
        h = self.discriminator.features(self.d_input(x), labels)
        return self.discriminator.head(h, labels).float(), self.discriminator.classifier(h).float()

    def d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real, labels = batch.x, batch.y
        if self.cfg.mode == "projection":
            return super().d_loss(batch)
        fake, z = self.d_fakes(len(real), labels)  # generated for the real batch's classes
        (d_real, real_logits), (d_fake, fake_logits) = self.scores(real, labels), self.scores(fake, labels)
        losses, logs = self.d_losses(real, fake, z, labels, d_real, d_fake)
        cls = self.per_replica(real_and_fake_class_loss, real_logits, fake_logits, labels)
        losses = losses + self.cfg.class_weight * cls
        logs |= {"d_losses": losses.detach(), "d_class_loss": cls.detach(),
                 "d_class_acc": (real_logits.argmax(1) == labels).float()}
        return losses.sum(), logs

    def g_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real, labels = batch.x, batch.y
        if self.cfg.mode == "projection":
            return super().g_loss(batch)
        fake, fake_labels, z = self.g_batch(real, labels)
        d_fake, logits = self.scores(fake, fake_labels)
        losses, logs = self.g_losses(real, fake, fake_labels, z, d_fake=d_fake)
        cls = self.per_replica(auxiliary_class_loss, logits, fake_labels)
        losses = losses + self.cfg.class_weight * cls
        logs |= {"g_losses": losses.detach(), "g_class_loss": cls.detach()}
        return losses.sum(), logs


__all__ = ["CGAN", "auxiliary_class_loss", "real_and_fake_class_loss"]

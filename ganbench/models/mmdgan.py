"""MMD-GAN with a gradient-penalised kernel critic — Bińkowski, Sutherland, Arbel & Gretton, "Demystifying
MMD GANs", ICLR 2018 (the MMD GAN of Li et al. 2017 with a learned kernel on critic features).

The critic is an ordinary discriminator whose scalar head is replaced by a linear projection to
``feature_dim`` outputs: ``φ(x) = W·D.features(x)`` (16 outputs, as Bińkowski et al. use for their DCGAN
critic; ``feature_dim: 0`` keeps ``D.features`` as they are). The kernel on φ is a mixture of
rational-quadratic kernels with α ∈ {0.2, 0.5, 1, 2, 5} (§5, :func:`~ganbench.losses.mixture_kernel`;
``kernel: rbf`` gives the Gaussian mixture of Li et al. 2017). The critic maximizes the unbiased
``MMD²_u(φ(x), φ(G(z)))`` (:func:`~ganbench.losses.d_mmd`) minus the gradient penalty of Bińkowski et al.
(§4), ``(‖∇f(x̂)‖₂ - 1)²`` on interpolates ``x̂`` of the *witness function*
``f(x̂) = mean_i k(φ(x̂), φ(x_i)) - mean_j k(φ(x̂), φ(G(z_j)))`` (``penalty: gp``, weight 1; ``lp`` is the
one-sided version). G minimizes ``MMD²_u`` on the critic's features (:func:`~ganbench.losses.g_mmd`).
Defaults: n_critic 5, Adam(1e-4, β=(0.5, 0.9)), no normalization in the critic, batch norm in G.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn as nn

from ganbench import GanbenchError
from ganbench.losses import Kernel, d_mmd, g_mmd, mixture_kernel
from ganbench.models.base import GANModule
from ganbench.models.engine.batch import Batch
from ganbench.nn.norms import Norm, linear
from ganbench.nn.stacking import container
from ganbench.regularizers import PenaltyName


@container
class FeatureHead(nn.Module):
    """The critic's head: a linear map of the features to ``out`` dimensions (identity when ``out == 0``)."""

    def __init__(self, norm: str, in_features: int, out: int):
        super().__init__()
        self.proj = linear(norm, in_features, out) if out > 0 else nn.Identity()

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(h)


class MMDGAN(GANModule):
    """Args (besides :class:`GANModule`'s): ``kernel`` (``rq`` or ``rbf`` mixture) and ``feature_dim``."""

    family: ClassVar[str] = "mmdgan"
    #: the step pieces written for a population: the MMD² of each replica's own rows (:meth:`per_replica`),
    #: the witness and its penalty per replica, every draw from the replicas' streams
    batched_overrides: ClassVar[frozenset[str]] = frozenset({"d_loss", "g_loss"})
    #: the levers on D's scores that are not defined for this critic, and why. D returns a feature vector
    #: φ(x) and the losses are the kernel two-sample statistic MMD²_u of two sets of them: no sample has a
    #: scalar realness score. CR/bCR (E‖φ(x) − φ(T(x))‖²) and zCR (on φ(G(z)), and G's own term) apply
    score_levers_unsupported: ClassVar[dict[str, str] | None] = {
        "lecam_weight": "LeCam pulls a scalar realness score D(x) towards the moving average of the other "
                        "set's (relu(D(x) − α_F)², higher = more real); the critic's φ(x) is a feature vector "
                        "with no direction of realness, seen by the kernel only through differences φ(x) − φ(y)",
        "top_k": "top-k keeps the per-sample G losses of the k fakes D rates most real; G's loss MMD²_u is a "
                 "U-statistic over pairs of samples (k(G(z_i), G(z_j)) among fakes), not a mean of "
                 "per-sample terms, and φ ranks no sample",
    }
    ada_unsupported: ClassVar[str | None] = (
        "its critic returns a feature vector φ(x), which has no sign (ADA's r_t = E[sign D(x_real)])")
    paper_optimizer: ClassVar[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = (
        torch.optim.Adam, {"lr": 1e-4, "betas": (0.5, 0.9)})

    def __init__(self, kernel: Kernel = "rq", feature_dim: int = 16, penalty: PenaltyName = "gp",
                 penalty_weight: float = 1.0, n_critic: int = 5, d_norm: Norm = "none", g_norm: Norm = "batch",
                 **kwargs: Any):
        if kwargs.get("conditional") or kwargs.get("minibatch", "none") != "none":
            raise GanbenchError("model.conditional and model.minibatch are not supported by the MMD critic; "
                                "use model.conditional false and model.minibatch none")
        super().__init__(penalty=penalty, penalty_weight=penalty_weight, n_critic=n_critic, d_norm=d_norm,
                         g_norm=g_norm, **kwargs)
        mixture_kernel(torch.zeros(1, 1), torch.zeros(1, 1), kernel)  # GanbenchError on an unknown kernel

    def build_discriminator(self) -> nn.Module:
        d = super().build_discriminator()
        d.head = FeatureHead(self.cfg.d_norm, d.head.linear.in_features, self.cfg.feature_dim)
        return d

    def critic_features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) of what the critic sees (instance noise included), shape (N, feature_dim)."""
        return self.discriminate(x, None)

    def witness_penalty(self, real: torch.Tensor, fake: torch.Tensor, phi_real: torch.Tensor,
                        phi_fake: torch.Tensor) -> torch.Tensor:
        """Weighted penalty (``penalty``, every ``penalty_every`` D steps) on the witness function
        ``f(x) = mean_i k(φ(x), φ(x_i)) - mean_j k(φ(x), φ(G(z_j)))`` of the current batch instead of D;
        in a population each replica's witness of its own batch, one value per replica."""
        h, n = self.cfg, self.population
        if h.penalty == "none" or self._d_steps % h.penalty_every:
            return real.new_zeros(())
        weight = self.replica_value("penalty_weight", h.penalty_weight)

        def witness(x: torch.Tensor) -> torch.Tensor:
            return self.per_replica_rows(lambda phi, r, f: mixture_kernel(phi, r, h.kernel).mean(1)
                                         - mixture_kernel(phi, f, h.kernel).mean(1),
                                         self.discriminator(x), phi_real, phi_fake)

        value = self.penalty_fn(witness, self.packed(real), self.packed(fake), generator=self.rng,
                                replicas=n if n > 1 else None)
        self._penalty_value = value.detach()
        return weight * h.penalty_every * value

    def d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real = batch.x
        fake, z = self.d_fakes(len(real), None)
        phi_real, phi_fake = self.critic_features(real), self.critic_features(fake)
        mmd = self.per_replica(d_mmd, phi_real, phi_fake, kernel=self.cfg.kernel)  # -MMD² of each replica
        losses = mmd + self.witness_penalty(real, fake, phi_real, phi_fake)
        regularizers, values = self.score_regularizers(real, fake, z, phi_real, phi_fake, None)  # CR, zCR on φ
        losses = losses + regularizers
        return losses.sum(), {"mmd2": -mmd.detach(), "d_losses": losses.detach(), **values}

    def g_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real = batch.x
        fake, z = self.g_fakes(self.g_rows(real), None)
        losses = self.per_replica(g_mmd, self.critic_features(fake), self.critic_features(real), kernel=self.cfg.kernel)
        losses, logs = self.g_regularized(losses, fake, z, None)
        return losses.sum(), {"g_losses": losses.detach(), **logs}


__all__ = ["MMDGAN"]

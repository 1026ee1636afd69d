"""Unrolled GAN — Metz, Poole, Pfau & Sohl-Dickstein, "Unrolled Generative Adversarial Networks", ICLR 2017.

G descends the surrogate ``f_K(θ_G, θ_D) = f(θ_G, θ_D^K(θ_G, θ_D))`` (eq. 5-6): D's parameters after
K more optimizer steps on D's loss, taken on a copy of them with :func:`torch.func.functional_call`
and kept in the autograd graph (``create_graph=True``), so G's gradient includes how D would react
to it (the second term of eq. 7). D's real parameters, buffers and optimizer state are not touched
by the G update. The unrolled steps are plain SGD or Adam (the paper's choice), starting from D's
optimizer moments when it has them. Toy defaults (§3.1): ReLU MLPs, latent 256, Adam(1e-4, β1 = 0.5), K = 5.

A population unrolls its stacked D at once: each replica's unrolled loss is its own (evaluated per
replica, so the gradient of their sum is each replica's gradient), and the unrolled Adam steps read
each replica's moments and, where the population sets them per replica, its learning rate and betas.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch.func import functional_call

from ganbench import GanbenchError
from ganbench.models.base import GANModule
from ganbench.models.engine.batch import Batch
from ganbench.nn.norms import Norm
from ganbench.optim import PopulationAdam

Params = dict[str, torch.Tensor]
Hyper = float | torch.Tensor


def along_replicas(value: Hyper, p: torch.Tensor) -> Hyper:
    """A per-replica ``(N,)`` vector in ``p``'s dtype, broadcast over its leading replica axis; a number
    (or a 0-dim tensor) as it is."""
    if torch.is_tensor(value) and value.dim():
        return value.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))
    return value


class UnrolledGAN(GANModule):
    family: ClassVar[str] = "unrolled"
    image_arch: ClassVar[str] = "dcgan"
    paper_optimizer: ClassVar[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = (
        torch.optim.Adam, {"lr": 1e-4, "betas": (0.5, 0.999)})

    def __init__(self, unroll_steps: int = 5, unroll_optimizer: Literal["sgd", "adam"] = "adam",
                 unroll_lr: float | None = None, g_norm: Norm = "none", d_norm: Norm = "none", latent_dim: int = 256,
                 **kwargs: Any):
        """``unroll_steps``: K; ``unroll_optimizer``/``unroll_lr``: the unrolled update (lr: D's lr when None)."""
        if unroll_steps < 0:
            raise GanbenchError(f"model.unroll_steps must be >= 0, got {unroll_steps}")
        if unroll_steps and kwargs.get("feature_matching", 0.0) > 0:
            raise GanbenchError("model.feature_matching cannot be combined with model.unroll_steps > 0")
        super().__init__(g_norm=g_norm, d_norm=d_norm, latent_dim=latent_dim, **kwargs)

    batched_overrides: ClassVar[frozenset[str]] = frozenset({"g_loss"})

    def _d_state(self) -> tuple[Hyper, Hyper, Hyper, float, dict[str, Any]]:
        """The unrolled steps' learning rate and betas — ``(N,)`` float64 vectors where a population
        sets D's per replica (:class:`~ganbench.optim.PopulationAdam`) — D's ``eps`` and its optimizer's
        per-parameter state (empty outside a fit)."""
        if self._trainer is None:
            opt, group, state = None, dict(zip(("lr", "betas"), self.paper_optimizer[1].values())), {}
        else:
            opt = self.optimizers()[1].optimizer
            group, state = opt.param_groups[0], opt.state
        lr = group["lr"] if self.cfg.unroll_lr is None else self.cfg.unroll_lr
        (b1, b2), eps = group.get("betas", (0.9, 0.999)), group.get("eps", 1e-8)
        if isinstance(opt, PopulationAdam):
            lr = lr * opt.lr_ratio if self.cfg.unroll_lr is None else lr
            b1 = b1 if opt.beta1 is None else opt.beta1
            b2 = b2 if opt.beta2 is None else opt.beta2
        lr, b1, b2 = (x.to(self.fixed_z.device) if torch.is_tensor(x) else x for x in (lr, b1, b2))
        return lr, b1, b2, eps, state

    def unroll(self, real: torch.Tensor, labels: torch.Tensor | None, fake: torch.Tensor,
               fake_labels: torch.Tensor | None) -> Params:
        """θ_D^K: K differentiable updates of a copy of D's parameters on D's loss (eq. 4)."""
        h, disc = self.cfg, self.discriminator
        lr, b1, b2, eps, state = self._d_state()
        names = [n for n, _ in disc.named_parameters()]
        params = {n: p.detach().clone().requires_grad_(True) for n, p in disc.named_parameters()}
        buffers = {n: b.clone() for n, b in disc.named_buffers()}
        # the step count stays a (float64) tensor: read on the host it would be a sync and a value fixed
        # for every later step; as a 0-dim tensor it enters float32 arithmetic as a Python float does
        moments = {n: (state.get(p, {}).get("exp_avg", torch.zeros_like(p)),
                       state.get(p, {}).get("exp_avg_sq", torch.zeros_like(p)),
                       torch.as_tensor(state.get(p, {}).get("step", 0.0)).double())
                   for n, p in disc.named_parameters()}
        for _ in range(h.unroll_steps):
            theta = {**params, **buffers}
            loss = self.per_replica(self.objective.d, functional_call(disc, theta, (self.packed(real), labels)),
                                    functional_call(disc, theta, (self.packed(fake), fake_labels))).sum()
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True, allow_unused=True)
            for n, g in zip(names, grads):
                g = torch.zeros_like(params[n]) if g is None else g
                lr_n, b1_n, b2_n = (along_replicas(x, g) for x in (lr, b1, b2))
                if h.unroll_optimizer == "sgd":
                    params[n] = params[n] - lr_n * g
                    continue
                m, v, t = moments[n]
                m, v, t = b1_n * m + (1 - b1_n) * g, b2_n * v + (1 - b2_n) * g * g, t + 1
                moments[n] = (m, v, t)
                c1, c2 = along_replicas(1 - b1**t, g), along_replicas(1 - b2**t, g)  # bias corrections
                # + 1e-30 keeps d sqrt(v)/dv finite where a gradient is exactly zero
                params[n] = params[n] - lr_n * (m / c1) / ((v / c2 + 1e-30).sqrt() + eps)
        return {**params, **buffers}

    def g_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real, labels = batch.x, batch.y
        if self.cfg.unroll_steps == 0:
            return super().g_loss(batch)
        fake, fake_labels, _ = self.g_batch(real, labels)  # zCR's G term is refused: no latents kept
        theta = self.unroll(real, labels, fake, fake_labels)
        d_fake = functional_call(self.discriminator, theta, (self.d_input(fake), fake_labels))
        d_real = (functional_call(self.discriminator, theta, (self.d_input(real), labels))
                  if self.objective.g_needs_real else None)
        losses = self.per_replica(self.objective.g, d_fake, d_real)
        return losses.sum(), {"g_losses": losses.detach()}


__all__ = ["UnrolledGAN"]

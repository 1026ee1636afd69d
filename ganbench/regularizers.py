"""Discriminator regularizers: each takes the discriminator and returns an *unscaled* scalar.

``D`` is any callable ``D(x) -> Tensor`` of shape ``(N,)`` or ``(N, 1)``; a conditional
discriminator is passed as ``lambda x: disc(x, y)``. The caller multiplies by the weight (λ for
WGAN-GP and DRAGAN, γ/2 for R1/R2) and decides how often to apply it.

Gradient penalties are computed in float32 with autocast disabled, whatever precision the rest of
the step uses: the squared gradient norm overflows or loses all precision in half precision, which
makes WGAN-GP diverge to NaN under mixed precision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from ganbench import GanbenchError

Critic = Callable[[Tensor], Tensor]
PenaltyName = Literal["none", "gp", "dragan", "r1", "r2", "lp"]


def _full(x: Tensor) -> Tensor:
    """``x`` detached, half precision raised to float32 (float64 stays float64)."""
    x = x.detach()
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _input_gradients(D: Critic, x: Tensor) -> Tensor:
    """``∇_x Σ_i D(x)_i`` in float32 with autocast off, flattened to ``(N, -1)``, kept in the graph."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = _full(x).requires_grad_(True)
        out = D(x).float()
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.reshape(grad.shape[0], -1)


def _uniform(shape: tuple[int, ...], like: Tensor, generator: Any) -> Tensor:
    """``U[0, 1)`` draws from ``generator``: a ``torch.Generator``, None (the global one), or a
    population's :class:`~ganbench.nn.population.ReplicaRNG` (one stream per replica's rows)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return generator.rand(*shape, like=like)


def _mean(per_sample: Tensor, replicas: int | None) -> Tensor:
    """The mean over the batch; with ``replicas``, one mean per replica's rows (a ``(replicas,)`` vector)."""
    return per_sample.mean() if replicas is None else per_sample.reshape(replicas, -1).mean(1)


def _interpolate(real: Tensor, fake: Tensor, generator: Any) -> Tensor:
    """``α·real + (1-α)·fake`` with one ``α ~ U[0, 1)`` per sample."""
    real, fake = _full(real), _full(fake).to(_full(real).dtype)
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    alpha = _uniform(shape, real, generator)
    return alpha * real + (1.0 - alpha) * fake


def gradient_penalty(D: Critic, real: Tensor, fake: Tensor, center: float = 1.0,
                     generator: torch.Generator | None = None, replicas: int | None = None) -> Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017, eq. 3): ``E_x̂[(‖∇D(x̂)‖₂ - center)²]``.

    ``x̂ = αx + (1-α)G(z)`` with ``α ~ U[0, 1)`` drawn per sample from ``generator``. The graph is
    kept (``create_graph=True``) so the penalty back-propagates into D's parameters. ``replicas``
    (a population's folded batch) gives one value per replica.
    """
    norms = _input_gradients(D, _interpolate(real, fake, generator)).norm(2, dim=1)
    return _mean((norms - center).pow(2), replicas)


def dragan_penalty(D: Critic, real: Tensor, k: float = 1.0, c: float = 0.5,
                   generator: torch.Generator | None = None, replicas: int | None = None) -> Tensor:
    """DRAGAN penalty (Kodali et al. 2017, §4): ``E[(‖∇D(x̃)‖₂ - k)²]`` around the data.

    As in the authors' reference code, the real batch is perturbed to ``x_p = x + c·std(x)·u`` with
    ``u ~ U[0, 1)`` elementwise (``std`` the population std over the whole batch) and the penalty is
    evaluated at ``x̃ = αx + (1-α)x_p``, ``α ~ U[0, 1)`` per sample.
    """
    real = _full(real)
    u = _uniform(tuple(real.shape), real, generator)
    perturbed = real + c * _batch_std(real, replicas) * u
    return gradient_penalty(D, real, perturbed, center=k, generator=generator, replicas=replicas)


def _batch_std(real: Tensor, replicas: int | None) -> Tensor:
    """The population std over the whole batch, per replica's rows with ``replicas``."""
    n = replicas or 1
    if n == 1:
        return real.std(correction=0)
    rows = real.reshape(n, -1)
    std = rows.std(dim=1, correction=0)
    return std.repeat_interleave(real.shape[0] // n).reshape(-1, *([1] * (real.dim() - 1)))


def r1_penalty(D: Critic, real: Tensor, replicas: int | None = None) -> Tensor:
    """R1 penalty (Mescheder et al. 2018, eq. 9, without the γ/2): ``E_x[‖∇D(x)‖₂²]`` on real data."""
    return _mean(_input_gradients(D, real).pow(2).sum(dim=1), replicas)


def r2_penalty(D: Critic, fake: Tensor, replicas: int | None = None) -> Tensor:
    """R2 penalty (Mescheder et al. 2018, eq. 10, without the γ/2): ``E[‖∇D(G(z))‖₂²]`` on generated data."""
    return _mean(_input_gradients(D, fake).pow(2).sum(dim=1), replicas)


def lipschitz_penalty(D: Critic, real: Tensor, fake: Tensor, center: float = 1.0,
                      generator: torch.Generator | None = None, replicas: int | None = None) -> Tensor:
    """One-sided Lipschitz penalty (Petzka et al. 2018, WGAN-LP):
    ``E_x̂[max(0, ‖∇D(x̂)‖₂ - center)²]`` on the interpolates of :func:`gradient_penalty`.

    It only punishes gradients steeper than ``center``; it is the Lipschitz regularizer used with
    the Loss-Sensitive GAN (Qi 2017) in place of weight decay.
    """
    norms = _input_gradients(D, _interpolate(real, fake, generator)).norm(2, dim=1)
    return _mean(torch.relu(norms - center).pow(2), replicas)


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> None:
    """Clamp every parameter of ``module`` to ``[-c, c]`` in place (Arjovsky et al. 2017, Algorithm 1)."""
    for p in module.parameters():
        p.clamp_(-c, c)


def no_penalty(D: Critic, real: Tensor, fake: Tensor, generator: Any = None, replicas: int | None = None) -> Tensor:
    """The absent penalty: a float32 zero on ``real``'s device."""
    return torch.zeros(() if replicas is None else (replicas,), device=real.device, dtype=torch.float32)


def _gp(D: Critic, real: Tensor, fake: Tensor, generator: Any = None, replicas: int | None = None) -> Tensor:
    """``gradient_penalty(D, real, fake)``."""
    return gradient_penalty(D, real, fake, generator=generator, replicas=replicas)


def _dragan(D: Critic, real: Tensor, fake: Tensor, generator: Any = None, replicas: int | None = None) -> Tensor:
    """``dragan_penalty(D, real)``; ``fake`` is unused."""
    return dragan_penalty(D, real, generator=generator, replicas=replicas)


def _r1(D: Critic, real: Tensor, fake: Tensor, generator: Any = None, replicas: int | None = None) -> Tensor:
    """``r1_penalty(D, real)``; ``fake`` is unused."""
    return r1_penalty(D, real, replicas)


def _r2(D: Critic, real: Tensor, fake: Tensor, generator: Any = None, replicas: int | None = None) -> Tensor:
    """``r2_penalty(D, fake)``; ``real`` is unused."""
    return r2_penalty(D, fake, replicas)


def _lp(D: Critic, real: Tensor, fake: Tensor, generator: Any = None, replicas: int | None = None) -> Tensor:
    """``lipschitz_penalty(D, real, fake)``."""
    return lipschitz_penalty(D, real, fake, generator=generator, replicas=replicas)


# ------------------------------------------------------------------ regularizers of D's outputs
def _per_row(scores: Tensor) -> Tensor:
    """D's outputs as one row per sample, ``(R, k)``: a patch D's scores stay per patch."""
    return scores.float().reshape(scores.shape[0], -1)


def consistency_penalty(scores: Tensor, scores_transformed: Tensor, replicas: int | None = None) -> Tensor:
    """Consistency regularization, ``E‖D(x) − D(T(x))‖²`` (Zhang, Zhang, Odena & Lee 2020, "Consistency
    Regularization for Generative Adversarial Networks", eq. 1; the squared L2 over D's outputs of
    one sample). ``scores`` are D's outputs on a batch, ``scores_transformed`` on the same batch
    under a semantics-preserving transform ``T``; gradients flow through both, as in the paper's
    Algorithm 1. Balanced CR (bCR, Zhao et al. 2021) applies it to reals and to fakes; latent CR
    (zCR) to ``G(z)`` and ``G(z + Δz)`` — the caller chooses the pairs and the weights.
    ``replicas``: one mean per replica's rows."""
    diff = _per_row(scores) - _per_row(scores_transformed)
    return _mean(diff.pow(2).sum(1), replicas)


def latent_sensitivity(fake: Tensor, fake_perturbed: Tensor, replicas: int | None = None) -> Tensor:
    """``E‖G(z) − G(z + Δz)‖²`` over samples (Zhao, Singh, Zhang, Lee & Zhang 2021, "Improved
    Consistency Regularization for GANs", Algorithm 2): zCR subtracts ``λ_gen`` times it from G's
    loss so that G does not collapse nearby latents onto one output."""
    diff = (fake.float() - fake_perturbed.float()).reshape(fake.shape[0], -1)
    return _mean(diff.pow(2).sum(1), replicas)


def lecam_penalty(real_scores: Tensor, fake_scores: Tensor, anchor_real: Tensor, anchor_fake: Tensor,
                  replicas: int | None = None) -> Tensor:
    """LeCam regularization (Tseng, Jiang, Liu, Yang & Yang 2021, "Regularizing Generative
    Adversarial Networks under Limited Data", eq. 3, in the form of the authors' code,
    github.com/google/lecam-gan ``stylegan2/lecam_loss.py``):
    ``E[relu(D(x) − α_F)²] + E[relu(α_R − D(G(z)))²]``, with ``α_R``, ``α_F`` the moving averages of
    D's mean output on reals and fakes (:class:`LeCamAnchors`). The paper writes the squares without
    the ``relu``; the authors' code, whose results the paper reports, keeps only the part where D
    separates the sets beyond the anchors. ``anchor_*`` are scalars, or ``(replicas,)`` vectors of
    per-replica anchors."""
    n = replicas or 1
    real = _per_row(real_scores).reshape(n, -1)
    fake = _per_row(fake_scores).reshape(n, -1)
    a_real = anchor_real.reshape(-1, 1).float()
    a_fake = anchor_fake.reshape(-1, 1).float()
    value = torch.relu(real - a_fake).pow(2).mean(1) + torch.relu(a_real - fake).pow(2).mean(1)
    return value[0] if replicas is None else value


class LeCamAnchors(nn.Module):
    """The anchors ``α_R``, ``α_F`` of :func:`lecam_penalty`: exponential moving averages (``decay``,
    0.99 in the authors' code) of D's mean output on real and on fake samples, bias-corrected as
    TensorFlow's ``assign_moving_average(zero_debias=True)`` the authors use, so the first anchor is
    the first batch's mean. One pair per replica of a population; buffers, so checkpoints hold them
    and a resumed fit continues them exactly. :meth:`update` folds in the current batch first and
    returns the corrected anchors, as the reference does, without a host sync."""

    def __init__(self, replicas: int = 1, decay: float = 0.99) -> None:
        super().__init__()
        self.decay = float(decay)
        self.register_buffer("real", torch.zeros(replicas))
        self.register_buffer("fake", torch.zeros(replicas))
        self.register_buffer("steps", torch.zeros(()))

    @torch.no_grad()
    def update(self, real_scores: Tensor, fake_scores: Tensor) -> tuple[Tensor, Tensor]:
        n = len(self.real)
        real = _per_row(real_scores).reshape(n, -1).mean(1)
        fake = _per_row(fake_scores).reshape(n, -1).mean(1)
        self.real.mul_(self.decay).add_((1.0 - self.decay) * real)
        self.fake.mul_(self.decay).add_((1.0 - self.decay) * fake)
        self.steps.add_(1.0)
        correction = 1.0 - self.decay ** self.steps
        return self.real / correction, self.fake / correction


#: every penalty with the uniform signature ``(D, real, fake) -> Tensor``, keyed by :data:`PenaltyName`
PENALTIES: dict[str, Callable[[Critic, Tensor, Tensor], Tensor]] = {
    "none": no_penalty,
    "gp": _gp,
    "dragan": _dragan,
    "r1": _r1,
    "r2": _r2,
    "lp": _lp,
}


def get_penalty(name: str, key: str = "penalty") -> Callable[[Critic, Tensor, Tensor], Tensor]:
    """``PENALTIES[name]``, raising :class:`GanbenchError` naming ``key`` and the valid names otherwise."""
    try:
        return PENALTIES[name]
    except KeyError:
        raise GanbenchError(
            f"{key}={name!r} is not a penalty; choose one of: {', '.join(PENALTIES)}") from None

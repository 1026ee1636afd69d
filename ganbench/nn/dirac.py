"""The Dirac-GAN's networks (Mescheder, Geiger & Nowozin 2018, "Which Training Methods for GANs do
actually Converge?", §2): a generator that is one learnable constant, ``G(z) = θ`` for every ``z``,
and a linear discriminator without bias.

The paper's discriminator ``D_ψ(x) = ψ·x`` scores generated samples high and real ones low (its
objective is ``f(D(G(z))) + f(-D(x))``); ganbench's objectives score real samples high, so
:class:`DiracDiscriminator` returns ``-ψ·x``: its parameter ``ψ`` is the paper's ψ, and every loss of
:data:`ganbench.losses.LOSSES` then gives the paper's gradient vector field in ``(θ, ψ)``. The start
``(θ0, ψ0)`` is ``model.dirac_start``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ganbench import GanbenchError
from ganbench.nn.common import Discriminator


def _plain(key: str, value: str, what: str) -> None:
    if value != "none":
        raise GanbenchError(f"{key}={value!r}: the Dirac-GAN's {what} has nothing to normalize; use none")


class ConstantGenerator(nn.Module):
    """``G(z) = θ`` for every latent: one learnable value per data dimension, starting at ``start[0]``."""

    def __init__(self, latent_dim: int = 1, shape: tuple[int, ...] = (1,), width: int = 0, norm: str = "none",
                 num_classes: int = 0, start: tuple[float, float] = (1.0, 1.0)):
        super().__init__()
        _plain("model.g_norm", norm, "generator (one constant)")
        self.shape = tuple(shape)
        self.theta = nn.Parameter(torch.full(self.shape, float(start[0])))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.theta.unsqueeze(0).repeat(len(z), *([1] * len(self.shape)))


class _Linear(nn.Module):
    """``-ψ·h`` without bias: the head of :class:`DiracDiscriminator`."""

    def __init__(self, features: int, start: float):
        super().__init__()
        self.psi = nn.Parameter(torch.full((features,), float(start)))

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return -(h * self.psi).sum(1)


class DiracDiscriminator(Discriminator):
    """``D(x) = -ψ·x``, no bias (the paper's ``ψ·x`` with ganbench's sign, see the module), ψ starting at
    ``start[1]`` in every input dimension."""

    def __init__(self, shape: tuple[int, ...] = (1,), width: int = 0, norm: str = "none", num_classes: int = 0,
                 minibatch: str = "none", start: tuple[float, float] = (1.0, 1.0)):
        super().__init__()
        _plain("model.d_norm", norm, "discriminator (one linear map)")
        _plain("model.minibatch", minibatch, "discriminator (one linear map)")
        self.head = _Linear(math.prod(shape), start[1])

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1)


__all__ = ["ConstantGenerator", "DiracDiscriminator"]

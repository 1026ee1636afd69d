"""Fully connected networks for the toy 2-D mixtures (and, flattened, for small images).

The toy setting follows Metz et al. 2017 (Unrolled GAN): ReLU MLPs with a few hidden layers of
``width`` units; the generator has a linear output for vectors and Tanh for images. PacGAN's toy
experiments (Lin et al. 2018) use a discriminator of maxout units (:class:`MaxoutDiscriminator`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ganbench.nn.common import ConditionalNorm, Discriminator, DiscriminatorHead, Minibatch
from ganbench.nn.norms import feature_norm, linear
from ganbench.nn.stacking import container


@container
class MLPGenerator(nn.Module):
    def __init__(self, latent_dim: int = 2, shape: tuple[int, ...] = (2,), width: int = 128, depth: int = 3,
                 norm: str = "none", num_classes: int = 0):
        super().__init__()
        self.shape = tuple(shape)
        dims = [latent_dim] + [width] * depth
        self.layers = nn.ModuleList(linear(norm, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(ConditionalNorm(norm, width, num_classes, spatial=False) for _ in range(depth))
        self.out = linear(norm, width, math.prod(self.shape))
        self.act = nn.ReLU()

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = z
        for layer, norm in zip(self.layers, self.norms):
            h = self.act(norm(layer(h), y))
        x = self.out(h)
        if len(self.shape) > 1:
            x = torch.tanh(x)
        return x.view(len(z), *self.shape)


@container
class MLPDiscriminator(Discriminator):
    def __init__(self, shape: tuple[int, ...] = (2,), width: int = 128, depth: int = 3, norm: str = "none",
                 num_classes: int = 0, minibatch: Minibatch = "none"):
        super().__init__()
        dims = [math.prod(shape)] + [width] * depth
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers += [linear(norm, a, b)] + ([] if i == 0 else [feature_norm(norm, b, spatial=False)])
            layers += [nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)
        self.head = DiscriminatorHead(width, norm, num_classes, minibatch)

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x.flatten(1))


@container
class Maxout(nn.Module):
    """A maxout layer (Goodfellow et al. 2013): ``pieces`` affine maps per output unit, their maximum."""

    def __init__(self, in_features: int, out_features: int, pieces: int = 5, norm: str = "none"):
        super().__init__()
        self.pieces = pieces
        self.linear = linear(norm, in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).unflatten(-1, (-1, self.pieces)).amax(-1)


@container
class MaxoutDiscriminator(Discriminator):
    """``depth`` maxout layers of ``width`` units with ``pieces`` pieces each, then the linear head: the
    discriminator of PacGAN's 2-D experiments (3 layers, 200 units, 5 pieces, no batch norm)."""

    def __init__(self, shape: tuple[int, ...] = (2,), width: int = 200, depth: int = 3, pieces: int = 5,
                 norm: str = "none", num_classes: int = 0, minibatch: Minibatch = "none"):
        super().__init__()
        dims = [math.prod(shape)] + [width] * depth
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers += [Maxout(a, b, pieces, norm)] + ([] if i == 0 else [feature_norm(norm, b, spatial=False)])
        self.net = nn.Sequential(*layers)
        self.head = DiscriminatorHead(width, norm, num_classes, minibatch)

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x.flatten(1))

"""Convolutional networks whose resolution, width and normalization are parameters.

* ``CNNGenerator`` / ``CNNDiscriminator``: the "standard CNN" of Miyato et al. 2018 (SNGAN,
  Table 3): G projects z to a 4×4 map and doubles it with 4×4 stride-2 transposed convolutions;
  D alternates 3×3 stride-1 and 4×4 stride-2 convolutions with LeakyReLU(0.1).
* ``DCGANGenerator`` / ``DCGANDiscriminator``: Radford et al. 2016 guidelines: strided
  convolutions instead of pooling, no fully connected hidden layers, ReLU in G (Tanh output),
  LeakyReLU(0.2) in D, and no normalization on G's output layer nor on D's input layer.

The number of up/down-sampling stages follows from ``resolution`` (a power of two ≥ 8), so one
class serves 16×16, 32×32, 64×64, … instead of one file per size.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ganbench.nn.common import ConditionalNorm, Discriminator, DiscriminatorHead, Minibatch, power_of_two_levels
from ganbench.nn.norms import conv, deconv, feature_norm, linear
from ganbench.nn.stacking import container


def _channels(width: int, levels: int) -> list[int]:
    """Feature maps per stage, widest at 4×4: ``width·2^levels`` down to ``width`` (capped at 8·width)."""
    return [min(8 * width, width * 2 ** (levels - i)) for i in range(levels + 1)]


class _UpsamplingGenerator(nn.Module):
    """z → a 4×4 map (``stem``), then (norm → ReLU → ``up``) per stage, then norm → ReLU → ``out`` → tanh.
    Subclasses build ``norms`` (one per stage plus the last), ``ups``, ``out`` and ``act``."""

    def stem(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.stem(z)
        for norm, up in zip(self.norms, self.ups):
            h = up(self.act(norm(h, y)))
        return torch.tanh(self.out(self.act(self.norms[-1](h, y))))


@container
class CNNGenerator(_UpsamplingGenerator):
    """z (N, latent_dim) [+ labels] → images (N, C, R, R) in [-1, 1]."""

    def __init__(self, latent_dim: int = 128, shape: tuple[int, ...] = (3, 32, 32), width: int = 64,
                 norm: str = "batch", num_classes: int = 0, output_norm_free: bool = False):
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        levels = power_of_two_levels(resolution, type(self).__name__)
        ch = _channels(width, levels)
        self.ch0 = ch[0]
        self.fc = linear(norm, latent_dim, 4 * 4 * ch[0])
        self.norms = nn.ModuleList(ConditionalNorm(norm, c, num_classes) for c in ch)
        self.ups = nn.ModuleList(deconv(norm, ch[i], ch[i + 1], 4, 2, 1) for i in range(levels))
        self.out = conv(norm, ch[-1], channels, 3, 1, 1)
        self.act = nn.ReLU()

    def stem(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z).view(len(z), self.ch0, 4, 4)


@container
class CNNDiscriminator(Discriminator):
    """images (N, C, R, R) [+ labels] → scores (N,)."""

    def __init__(self, shape: tuple[int, ...] = (3, 32, 32), width: int = 64, norm: str = "spectral",
                 num_classes: int = 0, minibatch: Minibatch = "none"):
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        levels = power_of_two_levels(resolution, type(self).__name__)
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(levels):
            c = width * 2**i
            layers += [conv(norm, c_in, c, 3, 1, 1), *self._act(norm, c, first=i == 0),
                       conv(norm, c, c, 4, 2, 1), *self._act(norm, c)]
            c_in = c
        c = width * 2**levels
        layers += [conv(norm, c_in, c, 3, 1, 1), *self._act(norm, c)]
        self.net = nn.Sequential(*layers)
        self.head = DiscriminatorHead(4 * 4 * c, norm, num_classes, minibatch)

    @staticmethod
    def _act(norm: str, c: int, first: bool = False) -> list[nn.Module]:
        return ([] if first else [feature_norm(norm, c)]) + [nn.LeakyReLU(0.1)]

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).flatten(1)


@container
class DCGANGenerator(_UpsamplingGenerator):
    """Radford et al. 2016 generator: project z to 4×4, then 4×4 stride-2 transposed convolutions."""

    def __init__(self, latent_dim: int = 100, shape: tuple[int, ...] = (3, 64, 64), width: int = 64,
                 norm: str = "batch", num_classes: int = 0):
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        levels = power_of_two_levels(resolution, type(self).__name__)
        ch = _channels(width, levels - 1)
        self.project = deconv(norm, latent_dim, ch[0], 4, 1, 0, bias=False)
        self.norms = nn.ModuleList(ConditionalNorm(norm, c, num_classes) for c in ch)
        self.ups = nn.ModuleList(deconv(norm, ch[i], ch[i + 1], 4, 2, 1, bias=False) for i in range(levels - 1))
        self.out = deconv(norm, ch[-1], channels, 4, 2, 1)
        self.act = nn.ReLU()

    def stem(self, z: torch.Tensor) -> torch.Tensor:
        return self.project(z[:, :, None, None])


@container
class DCGANDiscriminator(Discriminator):
    """Radford et al. 2016 discriminator: 4×4 stride-2 convolutions with LeakyReLU(0.2)."""

    def __init__(self, shape: tuple[int, ...] = (3, 64, 64), width: int = 64, norm: str = "batch",
                 num_classes: int = 0, minibatch: Minibatch = "none"):
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        levels = power_of_two_levels(resolution, type(self).__name__)
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(levels):
            c = min(8 * width, width * 2**i)
            layers += [conv(norm, c_in, c, 4, 2, 1)]
            layers += ([] if i == 0 else [feature_norm(norm, c)]) + [nn.LeakyReLU(0.2)]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.head = DiscriminatorHead(4 * 4 * c_in, norm, num_classes, minibatch)

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).flatten(1)

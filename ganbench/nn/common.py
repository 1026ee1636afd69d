"""Pieces shared by every generator and discriminator."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

from ganbench import GanbenchError
from ganbench.nn.norms import feature_norm, linear, wrap
from ganbench.nn.stacking import container

Minibatch = Literal["none", "std", "discrimination"]


def power_of_two_levels(resolution: int, arch: str, bottom: int = 4, smallest: int = 8) -> int:
    """How many doublings take a ``bottom``×``bottom`` map to ``resolution``.

    Raises :class:`GanbenchError` naming ``data.resolution`` when the architecture cannot build it.
    """
    levels = 0
    r = resolution
    while r > bottom and r % 2 == 0:
        r //= 2
        levels += 1
    if r != bottom or resolution < smallest:
        valid = ", ".join(str(bottom * 2**k) for k in range(1, 7) if bottom * 2**k >= smallest)
        raise GanbenchError(
            f"data.resolution={resolution} cannot be built by the '{arch}' networks: they double a "
            f"{bottom}x{bottom} map, so the resolution must be one of {valid}, …"
        )
    return levels


@container
class ConditionalNorm(nn.Module):
    """A feature norm followed by a per-class gain and bias (conditional BN when ``norm='batch'``).

    ``h = norm(h) * (1 + gamma[y]) + beta[y]`` (de Vries et al. 2017; Miyato & Koyama 2018 use it in
    the generator of the projection cGAN). With ``num_classes == 0`` it is the plain norm.
    """

    def __init__(self, norm: str, channels: int, num_classes: int = 0, spatial: bool = True):
        super().__init__()
        self.norm = feature_norm(norm, channels, spatial)
        self.embed = nn.Embedding(num_classes, 2 * channels) if num_classes > 0 else None
        if self.embed is not None:
            nn.init.zeros_(self.embed.weight)
        self.spatial = spatial

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(h)
        if self.embed is None:
            return h
        if y is None:
            raise ValueError("this generator is class-conditional: pass labels y")
        gamma, beta = self.embed(y).chunk(2, dim=1)
        if self.spatial:
            gamma, beta = gamma[:, :, None, None], beta[:, :, None, None]
        return h * (1 + gamma) + beta


@container
class DiscriminatorHead(nn.Module):
    """The last layer of every discriminator: features ``h`` (N, F) → one score per sample.

    Optional minibatch features (Salimans et al. 2016 minibatch discrimination, or the minibatch
    standard deviation of Karras et al. 2018) are appended to ``h`` first. With ``num_classes > 0``
    the class projection of Miyato & Koyama (2018), ``<embed(y), h>``, is added to the score.
    """

    def __init__(self, in_features: int, norm: str, num_classes: int = 0, minibatch: Minibatch = "none"):
        super().__init__()
        extra = 0
        self.minibatch: nn.Module | None = None
        if minibatch == "discrimination":
            from ganbench.nn.layers import MinibatchDiscrimination

            self.minibatch = MinibatchDiscrimination(in_features)
            extra = self.minibatch.num_kernels
        elif minibatch == "std":
            from ganbench.nn.layers import MinibatchStdDev as Std

            self.minibatch = Std()
            extra = 1
        self.linear = linear(norm, in_features + extra, 1)
        self.embed = wrap(nn.Embedding(num_classes, in_features), norm) if num_classes > 0 else None

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h_all = self.minibatch(h) if self.minibatch is not None else h
        out = self.linear(h_all).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator is class-conditional: pass labels y")
            out = out + (self.embed(y) * h).sum(1)
        return out


class Discriminator(nn.Module):
    """Base of all discriminators: ``features(x, y)`` then ``head(h, y)``.

    Splitting the two lets feature matching (Salimans et al. 2016) and auxiliary classifiers use the
    penultimate features without a second forward pass.
    """

    head: DiscriminatorHead

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, y), y)


@torch.no_grad()
def normal_init(net: nn.Module, std: float) -> nn.Module:
    """Draw every weight of ``net``'s linear and convolution layers from N(0, std²) and zero their biases
    (DCGAN's and PacGAN's initialization); norm layers keep their identity start (scale 1, shift 0).
    A re-parametrized weight (spectral or weight norm) is initialized through its original tensor."""
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            for name, p in module.named_parameters():
                if name.rsplit(".", 1)[-1] == "bias":
                    p.zero_()
                elif p.dim() >= 2:
                    p.normal_(0.0, std)
    return net

"""ResNet generator and discriminator of Miyato et al. 2018 (SNGAN, Table 4; Gulrajani et al. 2017).

G: z → 4×4 map → ``log2(R/4)`` up-sampling residual blocks → norm, ReLU, 3×3 conv, Tanh.
D: an "optimized" first down-sampling block, then down-sampling blocks to 8×8, then two blocks at
8×8, ReLU and global sum pooling → linear (+ class projection).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ganbench.nn.common import ConditionalNorm, Discriminator, DiscriminatorHead, Minibatch, power_of_two_levels
from ganbench.nn.norms import conv, feature_norm, linear
from ganbench.nn.stacking import container


@container
class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: str, num_classes: int):
        super().__init__()
        self.n1, self.n2 = ConditionalNorm(norm, c_in, num_classes), ConditionalNorm(norm, c_out, num_classes)
        self.c1, self.c2 = conv(norm, c_in, c_out, 3, 1, 1), conv(norm, c_out, c_out, 3, 1, 1)
        self.skip = conv(norm, c_in, c_out, 1, 1, 0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.n1(x, y)), scale_factor=2)
        h = self.c2(F.relu(self.n2(self.c1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


@container
class DBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: str, down: bool, first: bool = False):
        super().__init__()
        self.c1, self.c2 = conv(norm, c_in, c_out, 3, 1, 1), conv(norm, c_out, c_out, 3, 1, 1)
        self.n1, self.n2 = feature_norm(norm, c_out), feature_norm(norm, c_out)
        self.skip = conv(norm, c_in, c_out, 1, 1, 0) if (down or c_in != c_out) else None
        self.down, self.first = down, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.c2(F.relu(self.n1(self.c1(h))))
        h = self.n2(h)
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:  # optimized block: pool, then 1×1 conv
            s = self.skip(F.avg_pool2d(s, 2))
        else:
            if self.skip is not None:
                s = self.skip(s)
            if self.down:
                s = F.avg_pool2d(s, 2)
        return h + s


@container
class ResNetGenerator(nn.Module):
    def __init__(self, latent_dim: int = 128, shape: tuple[int, ...] = (3, 32, 32), width: int = 256,
                 norm: str = "batch", num_classes: int = 0):
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        levels = power_of_two_levels(resolution, type(self).__name__)
        self.width = width
        self.fc = linear(norm, latent_dim, 4 * 4 * width)
        self.blocks = nn.ModuleList(GBlock(width, width, norm, num_classes) for _ in range(levels))
        self.norm = ConditionalNorm(norm, width, num_classes)
        self.out = conv(norm, width, channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z).view(len(z), self.width, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.norm(h, y))))


@container
class ResNetDiscriminator(Discriminator):
    def __init__(self, shape: tuple[int, ...] = (3, 32, 32), width: int = 128, norm: str = "spectral",
                 num_classes: int = 0, minibatch: Minibatch = "none"):
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        levels = power_of_two_levels(resolution, type(self).__name__, bottom=8, smallest=16)
        blocks = [DBlock(channels, width, norm, down=True, first=True)]
        blocks += [DBlock(width, width, norm, down=True) for _ in range(levels - 1)]
        blocks += [DBlock(width, width, norm, down=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.head = DiscriminatorHead(width, norm, num_classes, minibatch)

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

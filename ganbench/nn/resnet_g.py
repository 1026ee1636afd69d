"""ResNet image-to-image generator of CycleGAN (Zhu et al. 2017, appendix 7.2; Johnson et al. 2016).

``c7s1-w, d2w, d4w, R4w × n_blocks, u2w, uw, c7s1-C``: a 7×7 convolution with reflection padding, two
3×3 stride-2 convolutions, ``n_blocks`` residual blocks (two 3×3 reflection-padded convolutions each),
two 3×3 stride-½ (transposed) convolutions and a 7×7 convolution to the output channels, Tanh. Every
hidden convolution is followed by the norm (instance in the paper) and ReLU. The paper uses 6 blocks
for 128×128 images and 9 for 256×256 and higher; ``n_blocks=None`` follows that rule (6 below 256 px).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ganbench import GanbenchError
from ganbench.nn.norms import conv, deconv, feature_norm
from ganbench.nn.stacking import container


@container
class ResidualBlock(nn.Module):
    """``x + norm(conv(pad(relu(norm(conv(pad(x)))))))`` (He et al. 2016 as used by Johnson et al.)."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), conv(norm, channels, channels, 3), feature_norm(norm, channels), nn.ReLU(),
            nn.ReflectionPad2d(1), conv(norm, channels, channels, 3), feature_norm(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@container
class ResNetTranslator(nn.Module):
    """images (N, C_in, R, R) → images (N, C, R, R) in [-1, 1], ``R`` divisible by 4 and ≥ 8.

    Args:
        shape: output shape (C, R, R).
        width: channels of the first layer (64 in the paper).
        norm: normalization (instance in the paper).
        num_classes: unused; kept for the network signature.
        n_blocks: residual blocks; ``None`` = 6 below 256 px, 9 from 256 px (the paper's choice).
        in_channels: input channels (default ``C``).
    """

    def __init__(self, shape: tuple[int, ...] = (3, 256, 256), width: int = 64, norm: str = "instance",
                 num_classes: int = 0, n_blocks: int | None = None, in_channels: int | None = None):
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        if resolution % 4 or resolution < 8:
            raise GanbenchError(f"data.resolution={resolution} cannot be built by the CycleGAN ResNet generator: "
                                "it halves the image twice, so the resolution must be a multiple of 4 and >= 8")
        n_blocks = (9 if resolution >= 256 else 6) if n_blocks is None else n_blocks
        c_in = channels if in_channels is None else in_channels

        def block(layer: nn.Module, c: int) -> list[nn.Module]:
            return [layer, feature_norm(norm, c), nn.ReLU()]

        w = width
        self.net = nn.Sequential(
            nn.ReflectionPad2d(3), *block(conv(norm, c_in, w, 7), w),
            *block(conv(norm, w, 2 * w, 3, 2, 1), 2 * w),
            *block(conv(norm, 2 * w, 4 * w, 3, 2, 1), 4 * w),
            *(ResidualBlock(4 * w, norm) for _ in range(n_blocks)),
            *block(deconv(norm, 4 * w, 2 * w, 3, 2, 1, output_padding=1), 2 * w),
            *block(deconv(norm, 2 * w, w, 3, 2, 1, output_padding=1), w),
            nn.ReflectionPad2d(3), conv(norm, w, channels, 7), nn.Tanh())

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)

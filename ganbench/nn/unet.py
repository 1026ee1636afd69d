"""U-Net generator of Pix2Pix (Isola et al. 2017, §3.2.1 and appendix 6.1.1; Ronneberger et al. 2015).

An encoder of 4×4 stride-2 convolutions halves the image down to a 1×1 bottleneck (so the depth is
``log2(R)``: 8 levels at 256 px, 5 at 32 px); a decoder of 4×4 stride-2 transposed convolutions doubles
it back, and the decoder layer at each level also receives the encoder's feature map of the same
size (a skip connection: ``concat(h, skip)``), so low-level detail — edges, positions — need not pass
through the bottleneck.

Channels: encoder level ``i`` has ``min(8, 2ⁱ)·width`` (C64-C128-C256-C512-C512-… for width 64).
Encoder: LeakyReLU(0.2) before each conv except the first, a norm after each except the first and the
bottleneck. Decoder: ReLU, transposed conv, norm (not on the output layer), Tanh at the end.

Dropout is the generator's noise (§3.2.1): applied to the first ``n_dropout`` decoder layers after the
innermost one (the paper's CD512 ×3) and kept on at test time, as in the paper, so ``eval()`` does not
make G deterministic; ``dropout=0`` does.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ganbench.nn.common import power_of_two_levels
from ganbench.nn.norms import conv, deconv, feature_norm


class UNetGenerator(nn.Module):
    """images A (N, C_in, R, R) → images B (N, C, R, R) in [-1, 1].

    Args:
        shape: output shape (C, R, R), ``R`` a power of two ≥ 8.
        width: channels of the first encoder level (64 in the paper).
        norm: normalization (batch in the paper, which with batch size 1 acts as instance norm).
        num_classes: unused (the input image is the condition); kept for the network signature.
        dropout: dropout probability of the noisy decoder layers (0.5 in the paper).
        n_dropout: how many decoder layers after the innermost one get dropout (3 in the paper).
        in_channels: input channels (default ``C``).
    """

    def __init__(self, shape: tuple[int, ...] = (3, 256, 256), width: int = 64, norm: str = "batch",
                 num_classes: int = 0, dropout: float = 0.5, n_dropout: int = 3, in_channels: int | None = None):
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        levels = power_of_two_levels(resolution, type(self).__name__, bottom=1, smallest=8)
        ch = [min(8, 2**i) * width for i in range(levels)]
        c_in = channels if in_channels is None else in_channels
        self.downs = nn.ModuleList()
        for i in range(levels):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(conv(norm, c_in if i == 0 else ch[i - 1], ch[i], 4, 2, 1))
            if 0 < i < levels - 1:
                layers.append(feature_norm(norm, ch[i]))
            self.downs.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList()
        for i in reversed(range(levels)):  # decoder layer at encoder level i, innermost first
            c_up_in = ch[i] if i == levels - 1 else 2 * ch[i]
            c_up_out = ch[i - 1] if i > 0 else channels
            layers = [nn.ReLU(), deconv(norm, c_up_in, c_up_out, 4, 2, 1)]
            if i > 0:
                layers.append(feature_norm(norm, c_up_out))
            self.ups.append(nn.Sequential(*layers))
        self.dropout = dropout
        self.noisy = set(range(1, min(n_dropout, levels - 2) + 1)) if dropout > 0 else set()

    @property
    def levels(self) -> int:
        return len(self.downs)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        skips = []
        h = x
        for down in self.downs:
            h = down(h)
            skips.append(h)
        h = skips.pop()  # the 1×1 bottleneck
        for j, up in enumerate(self.ups):
            if j > 0:
                h = torch.cat([h, skips.pop()], dim=1)
            h = up(h)
            if j in self.noisy:
                h = F.dropout(h, self.dropout, training=True)  # noise, also at test time (§3.2.1)
        return torch.tanh(h)

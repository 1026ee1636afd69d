"""PatchGAN discriminator (Isola, Zhu, Zhou & Efros, "Image-to-Image Translation with Conditional
Adversarial Networks", CVPR 2017, §3.2.2 and appendix 6.1.2; also the D of CycleGAN, Zhu et al. 2017).

The 70×70 PatchGAN is C64-C128-C256-C512 followed by a 1-channel convolution: every convolution is
4×4 with padding 1, stride 2 except the last two (stride 1), no norm on C64, LeakyReLU(0.2). Its output
is a map of logits, one per overlapping image patch; the adversarial loss averages over the map.

**Receptive field.** With ``n`` stride-2 layers followed by the two stride-1 layers, a logit sees a
patch of side ``RF(n) = 9·2ⁿ − 2`` pixels (``RF(3) = 70``, ``RF(2) = 34``, ``RF(1) = 16``): walking back
from one output pixel, each stride-1 4×4 conv adds 3 (1 → 4 → 7) and each stride-2 4×4 conv maps
``r → 2r + 2``. **Output size.** A 4×4 conv with padding 1 maps a side ``s`` to ``⌊(s − 2)/stride⌋ + 1``,
so an ``R``×``R`` input (``R`` divisible by ``2ⁿ``) gives a ``(R/2ⁿ − 2)``×``(R/2ⁿ − 2)`` map
(256 px, n = 3: 30×30).

**Depth from resolution.** ``n_layers=None`` picks ``n = clamp(log2(R) − 3, 1, 3)``: the paper's 70×70
PatchGAN from 64 px up, and a 6×6 logit map with a receptive field of 34 px at 32 px and 16 px at 16 px.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ganbench import GanbenchError
from ganbench.nn.common import Discriminator, Minibatch
from ganbench.nn.norms import conv, feature_norm, wrap
from ganbench.nn.stacking import container


def patch_receptive_field(n_layers: int) -> int:
    """Side of the patch one logit sees: ``9·2ⁿ − 2`` (70 for the paper's ``n = 3``)."""
    return 9 * 2**n_layers - 2


def patch_layers_for(resolution: int) -> int:
    """The default number of stride-2 layers for an ``R``×``R`` input: ``clamp(log2(R) − 3, 1, 3)``."""
    return max(1, min(3, int(math.log2(resolution)) - 3))


@container
class PatchHead(nn.Module):
    """The last 4×4 stride-1 convolution to one logit per patch, plus an optional class projection
    per location (Miyato & Koyama 2018 applied to every patch): ``out[i,j] += <embed(y), h[:, i, j]>``."""

    def __init__(self, channels: int, norm: str, num_classes: int = 0):
        super().__init__()
        self.conv = conv(norm, channels, 1, 4, 1, 1)
        self.embed = wrap(nn.Embedding(num_classes, channels), norm) if num_classes > 0 else None

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(h)
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator is class-conditional: pass labels y")
            proj = (self.embed(y)[:, :, None, None] * h).sum(1, keepdim=True)
            out = out + nn.functional.avg_pool2d(proj, 4, 1, padding=1, count_include_pad=False)
        return out


@container
class PatchDiscriminator(Discriminator):
    """images (N, C, R, R) [+ labels] → patch logits (N, 1, R/2ⁿ − 2, R/2ⁿ − 2).

    Args:
        shape: input shape (C, R, R); Pix2Pix passes ``C = C_input + C_output`` (D sees both).
        width: channels of the first layer (64 in the paper); layer ``i`` has ``min(8, 2ⁱ)·width``.
        norm: normalization (the paper: batch for Pix2Pix, instance for CycleGAN); never on the first layer.
        num_classes: class projection per patch when > 0.
        minibatch: only ``none`` (minibatch features need one vector per sample, not a map).
        n_layers: stride-2 layers ``n``; ``None`` = :func:`patch_layers_for` the resolution.
    """

    def __init__(self, shape: tuple[int, ...] = (3, 256, 256), width: int = 64, norm: str = "batch",
                 num_classes: int = 0, minibatch: Minibatch = "none", n_layers: int | None = None):
        super().__init__()
        if minibatch != "none":
            raise GanbenchError(f"model.minibatch={minibatch!r} is not available with the patch discriminator "
                                "(it outputs a map of logits); use model.minibatch none")
        channels, resolution = shape[0], shape[-1]
        n = patch_layers_for(resolution) if n_layers is None else n_layers
        if resolution % 2**n or resolution // 2**n < 3:
            raise GanbenchError(f"data.resolution={resolution} is too small or not divisible for a PatchGAN with "
                                f"{n} stride-2 layers: it needs a multiple of {2**n} that is at least {3 * 2**n}")
        self.n_layers = n
        self.receptive_field = patch_receptive_field(n)
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(n + 1):  # n stride-2 layers, then the stride-1 C(8·width) layer
            c = min(8, 2**i) * width
            layers.append(conv(norm, c_in, c, 4, 2 if i < n else 1, 1, bias=i == 0 or norm != "batch"))
            layers += ([] if i == 0 else [feature_norm(norm, c)]) + [nn.LeakyReLU(0.2)]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.head = PatchHead(c_in, norm, num_classes)

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


class PairedPatchDiscriminator(Discriminator):
    """The conditional PatchGAN of Pix2Pix: ``D(x, a) = patch(concat(a, x))`` — D sees the input image
    ``a`` with the real or generated output ``x`` (Isola et al. 2017, eq. 1), so the condition is passed
    where other discriminators take labels, and penalties/feature matching work unchanged.

    Args:
        shape: output shape (C, R, R); ``in_channels`` the input image's channels (default C).
        Other arguments as :class:`PatchDiscriminator`.
    """

    def __init__(self, shape: tuple[int, ...] = (3, 256, 256), width: int = 64, norm: str = "batch",
                 in_channels: int | None = None, n_layers: int | None = None):
        super().__init__()
        c_in = shape[0] if in_channels is None else in_channels
        self.patch = PatchDiscriminator((shape[0] + c_in, *shape[1:]), width, norm, n_layers=n_layers)
        self.head = self.patch.head

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("the paired discriminator needs the input image: pass it as y")
        return self.patch.features(torch.cat([y, x], dim=1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, y))

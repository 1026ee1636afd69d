"""Autoencoder discriminators for the energy-based families (EBGAN, MAGAN, BEGAN).

The discriminator is an autoencoder ``Dec(Enc(x))`` and its output is a per-sample *energy*, the
reconstruction error ``D(x) = ‖Dec(Enc(x)) - x‖`` (Zhao et al. 2017, eq. 3 / §2.3; Berthelot et al.
2017, §3.1). Two energies exist, both averaged over the elements of a sample so that their scale does
not depend on the resolution: ``mse`` (EBGAN, MAGAN) and ``l1`` (BEGAN).

* :class:`ConvAutoencoder` — images: 3×3 convolutions with ELU and 4×4 stride-2 downsampling to a
  4×4 map, a linear bottleneck of ``code_dim`` units, then nearest-neighbour upsampling with 3×3
  convolutions back to the input resolution (the BEGAN layout, Berthelot et al. 2017 Fig. 1, with
  the strided convolutions of EBGAN's encoder). Resolution, width and norm are parameters.
* :class:`MLPAutoencoder` — 2-D toys (and flattened images): ``depth`` hidden ELU layers of
  ``width`` units in the encoder and in the decoder, around a ``code_dim`` bottleneck.

``features(x)`` is the encoder embedding ``Enc(x)`` (used by EBGAN's pulling-away term) and
``forward(x)`` the energy, so a penalty that takes D (:mod:`ganbench.regularizers`) sees the energy.
Both autoencoders compute every sample on its own and keep their parameters in ``encoder`` and
``decoder``, so a population stacks them (:func:`~ganbench.nn.stacking.container`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch.nn as nn
from torch import Tensor

from ganbench import GanbenchError
from ganbench.nn.common import Discriminator, power_of_two_levels
from ganbench.nn.norms import conv, feature_norm, linear
from ganbench.nn.stacking import container

Energy = Literal["mse", "l1"]

#: per-sample reconstruction energy ``(reconstruction, x) -> (N,)``, the mean over each sample's elements
ENERGIES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": lambda recon, x: (recon - x).pow(2).flatten(1).mean(1),
    "l1": lambda recon, x: (recon - x).abs().flatten(1).mean(1),
}


class AutoencoderDiscriminator(Discriminator):
    """``encoder`` → ``code`` → ``decoder``; the output is the per-sample reconstruction energy."""

    encoder: nn.Module
    decoder: nn.Module

    def __init__(self, shape: tuple[int, ...], energy: Energy, num_classes: int):
        super().__init__()
        if energy not in ENERGIES:
            raise GanbenchError(f"model.energy={energy!r} is not valid; choose one of: {', '.join(ENERGIES)}")
        if num_classes:
            raise GanbenchError("model.conditional=true is not supported by the autoencoder discriminator; "
                                "use model.conditional false")
        self.shape = tuple(shape)
        self.energy_fn = ENERGIES[energy]

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The embedding ``Enc(x)``, shape (N, code_dim)."""
        return self.encoder(x)

    def reconstruct(self, x: Tensor) -> Tensor:
        """``Dec(Enc(x))``, the same shape as ``x``."""
        return self.decoder(self.encoder(x)).view_as(x)

    def energy_and_code(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample energy (N,) and embedding (N, code_dim) from one encoder pass."""
        code = self.encoder(x)
        return self.energy_fn(self.decoder(code).view_as(x), x), code

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.energy_fn(self.reconstruct(x), x)


def _block(norm: str, c_in: int, c_out: int, k: int, stride: int, pad: int, normed: bool = True) -> list[nn.Module]:
    return [conv(norm, c_in, c_out, k, stride, pad), *([feature_norm(norm, c_out)] if normed else []), nn.ELU()]


@container
class ConvAutoencoder(AutoencoderDiscriminator):
    """Convolutional autoencoder discriminator for images (N, C, R, R), R a power of two ≥ 8."""

    def __init__(self, shape: tuple[int, ...] = (1, 32, 32), width: int = 64, norm: str = "none",
                 num_classes: int = 0, code_dim: int = 64, energy: Energy = "mse"):
        super().__init__(shape, energy, num_classes)
        channels, resolution = shape[0], shape[-1]
        levels = power_of_two_levels(resolution, type(self).__name__)
        ch = [min(8 * width, width * 2**i) for i in range(levels + 1)]
        enc: list[nn.Module] = _block(norm, channels, ch[0], 3, 1, 1, normed=False)
        for i in range(levels):
            enc += _block(norm, ch[i], ch[i], 3, 1, 1) + _block(norm, ch[i], ch[i + 1], 4, 2, 1)
        self.encoder = nn.Sequential(*enc, nn.Flatten(1), linear(norm, 16 * ch[-1], code_dim))
        dec: list[nn.Module] = [linear(norm, code_dim, 16 * ch[-1]), nn.Unflatten(1, (ch[-1], 4, 4))]
        for i in reversed(range(levels)):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), *_block(norm, ch[i + 1], ch[i], 3, 1, 1)]
        self.decoder = nn.Sequential(*dec, conv(norm, ch[0], channels, 3, 1, 1))


@container
class MLPAutoencoder(AutoencoderDiscriminator):
    """Fully connected autoencoder discriminator for vectors (N, d) or flattened images."""

    def __init__(self, shape: tuple[int, ...] = (2,), width: int = 128, norm: str = "none", num_classes: int = 0,
                 code_dim: int = 64, energy: Energy = "mse", depth: int = 2):
        super().__init__(shape, energy, num_classes)
        d = math.prod(shape)

        def mlp(a: int, b: int) -> nn.Sequential:
            dims = [a] + [width] * depth
            layers: list[nn.Module] = []
            for i, (p, q) in enumerate(zip(dims[:-1], dims[1:])):
                layers += [linear(norm, p, q), *([] if i == 0 else [feature_norm(norm, q, spatial=False)]), nn.ELU()]
            return nn.Sequential(*layers, linear(norm, width, b))

        self.encoder = nn.Sequential(nn.Flatten(1), mlp(d, code_dim))
        self.decoder = mlp(code_dim, d)


#: autoencoder discriminator per resolved architecture (``cnn`` for images, ``mlp`` for vectors)
AUTOENCODERS: dict[str, type[AutoencoderDiscriminator]] = {"cnn": ConvAutoencoder, "mlp": MLPAutoencoder}


def autoencoder(arch: str, **kwargs) -> AutoencoderDiscriminator:
    """``AUTOENCODERS[arch](**kwargs)``, raising :class:`GanbenchError` naming ``model.arch`` otherwise."""
    if arch not in AUTOENCODERS:
        raise GanbenchError(f"model.arch={arch!r} has no autoencoder discriminator; choose one of: auto, "
                            f"{', '.join(AUTOENCODERS)}")
    return AUTOENCODERS[arch](**kwargs)


__all__ = ["AUTOENCODERS", "ENERGIES", "AutoencoderDiscriminator", "ConvAutoencoder", "Energy", "MLPAutoencoder",
           "autoencoder"]

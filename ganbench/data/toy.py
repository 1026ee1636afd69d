"""Two-dimensional toy distributions used to study mode collapse.

* ``ring8``: a mixture of 8 isotropic Gaussians with means evenly spaced on a circle of radius 2 and
  standard deviation 0.02 (Metz et al. 2017, "Unrolled Generative Adversarial Networks", Sec. 3.1).
* ``ring8_pacgan``: the ring of PacGAN's 2-D experiments (Lin et al. 2018, Sec. 5.1; their
  ``synthetic_data_experiments/2DRing_GAN&PacGAN/config.py``, lines 6-7): 8 Gaussians at
  ``(cos 2 pi k / 8, sin 2 pi k / 8)`` (radius 1) with standard deviation 0.01.
* ``grid25``: a mixture of 25 isotropic Gaussians on the grid ``{-4, -2, 0, 2, 4}^2`` with standard
  deviation 0.05 (Srivastava et al. 2017, "VEEGAN", Sec. 5.1); PacGAN's grid is the same
  (``2DGrid_GAN&PacGAN/config.py``, lines 5-7).
* ``swissroll``: the 2-D swiss roll of scikit-learn's ``make_swiss_roll`` (the ``(x, z)`` coordinates,
  ``t = 1.5 pi (1 + 2u)``, ``(x, z) = (t cos t, t sin t)``) divided by 7.5 so that it lies in about
  ``[-2, 2]^2``, as in the toy experiments of Gulrajani et al. 2017 ("Improved Training of Wasserstein
  GANs", released code). Its default noise std is scikit-learn's 0.25 scaled the same way (0.25 / 7.5).
* ``dirac``: a point mass at a location on the line (1-D; 0 by default), the data of the Dirac-GAN of
  Mescheder et al. 2018 ("Which Training Methods for GANs do actually Converge?", §2); with a std it
  is a Gaussian there.

Every sample is drawn with an explicit ``torch.Generator`` so a seed fixes it exactly.
"""

from __future__ import annotations

import math

import torch

#: The divisor that maps scikit-learn's swiss roll (radius up to 4.5 pi) to about [-2, 2].
SWISSROLL_SCALE = 7.5


class ToyMixture:
    """A mixture of isotropic Gaussians with equal weights.

    Args:
        centers: (K, 2) mode means.
        std: the standard deviation of every mode along each axis.
    """

    dim = 2

    def __init__(self, centers: torch.Tensor, std: float) -> None:
        if centers.ndim != 2 or centers.shape[1] != 2:
            raise ValueError(f"centers must have shape (K, 2), got {tuple(centers.shape)}")
        self.centers = centers.to(torch.float32)
        self.std = float(std)

    @property
    def num_modes(self) -> int:
        """The number of mixture components K."""
        return int(self.centers.shape[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` points.

        Returns:
            ``(x, mode)``: x (n, 2) float32 and the index (n,) long of the mode each point was drawn from.
        """
        mode = torch.randint(0, self.num_modes, (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator)
        return self.centers[mode] + self.std * noise, mode

    def __repr__(self) -> str:
        return f"ToyMixture(num_modes={self.num_modes}, std={self.std})"


class SwissRoll:
    """The 2-D swiss roll (scikit-learn ``make_swiss_roll``, ``(x, z)`` coordinates) divided by 7.5.

    It has no modes: :meth:`sample` labels every point 0.

    Args:
        std: Gaussian noise std added to each coordinate after scaling.
    """

    def __init__(self, std: float = 0.25 / SWISSROLL_SCALE) -> None:
        self.std = float(std)

    num_modes = 0
    dim = 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` points; returns ``(x (n, 2) float32, zeros (n,) long)``."""
        t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=generator, dtype=torch.float64))
        x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / SWISSROLL_SCALE
        x = x.to(torch.float32) + self.std * torch.randn(n, 2, generator=generator)
        return x, torch.zeros(n, dtype=torch.long)

    def __repr__(self) -> str:
        return f"SwissRoll(std={self.std})"


class DiracMass:
    """A point mass at ``location`` on the line (plus Gaussian noise of ``std``, 0 by default): samples of
    shape ``(n, 1)``, every one labelled mode 0."""

    num_modes = 1
    dim = 1

    def __init__(self, location: float = 0.0, std: float = 0.0) -> None:
        self.location = float(location)
        self.std = float(std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` points ``(n, 1)`` float32 and zeros ``(n,)`` long."""
        x = torch.full((n, 1), self.location)
        if self.std:
            x = x + self.std * torch.randn(n, 1, generator=generator)
        return x, torch.zeros(n, dtype=torch.long)

    def __repr__(self) -> str:
        return f"DiracMass(location={self.location}, std={self.std})"


def ring8(std: float = 0.02, radius: float = 2.0) -> ToyMixture:
    """8 Gaussians on a circle of radius 2, std 0.02 (Metz et al. 2017). Mode k sits at angle 2 pi k / 8."""
    angles = torch.arange(8, dtype=torch.float64) * (2.0 * math.pi / 8)
    centers = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return ToyMixture(centers.to(torch.float32), std)


def grid25(std: float = 0.05, spacing: float = 2.0) -> ToyMixture:
    """25 Gaussians on the grid {-4, -2, 0, 2, 4}^2, std 0.05 (Srivastava et al. 2017).

    Mode ``5 i + j`` sits at ``(-4 + 2 i, -4 + 2 j)``.
    """
    axis = (torch.arange(5, dtype=torch.float32) - 2) * spacing
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    return ToyMixture(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1), std)


Toy = ToyMixture | SwissRoll | DiracMass


# The data sets' constructors, ``(std or None for the default, location) -> distribution``: what the
# ``toy`` of an entry of ``ganbench.data.DATASETS`` holds.
def make_ring8(std: float | None = None, location: float = 0.0) -> ToyMixture:
    return ring8() if std is None else ring8(std)


def make_ring8_pacgan(std: float | None = None, location: float = 0.0) -> ToyMixture:
    return ring8(0.01 if std is None else std, radius=1.0)


def make_grid25(std: float | None = None, location: float = 0.0) -> ToyMixture:
    return grid25() if std is None else grid25(std)


def make_swissroll(std: float | None = None, location: float = 0.0) -> SwissRoll:
    return SwissRoll() if std is None else SwissRoll(std)


def make_dirac(std: float | None = None, location: float = 0.0) -> DiracMass:
    return DiracMass(location, std or 0.0)


def make_toy(name: str, std: float | None = None, location: float = 0.0) -> Toy:
    """Build the toy distribution of data set ``name`` (its entry in ``ganbench.data.DATASETS``); ``std``
    overrides its default noise std; ``location``: the point mass's place (``dirac``)."""
    from ganbench.data.catalog import DATASETS, names  # the table imports this module

    make = DATASETS[name].toy if name in DATASETS else None
    if make is None:
        raise ValueError(f"unknown toy distribution {name!r}; valid: {names(lambda info: info.toy is not None)}")
    return make(std, location)

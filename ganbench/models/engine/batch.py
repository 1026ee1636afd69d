"""What one D step reads from the loader: a typed batch."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """One D step's slice of the loader's batch (in a population, every replica's rows of it).

    Attributes:
        x: the real samples D sees — images, 2-D points, or the target image B of a translation pair.
        y: their class labels, for a class-conditional model (None otherwise).
        cond: the input image A a translation family (Pix2Pix, CycleGAN) maps from (None otherwise).
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    cond: torch.Tensor | None = None

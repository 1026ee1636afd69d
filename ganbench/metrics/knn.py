"""k-nearest-neighbour metrics: density and coverage (Naeem, Oh, Uh, Choi & Yoo 2020, "Reliable
Fidelity and Diversity Metrics for Generative Models", ICML, sec. 3, k = 5).

With real features X_1..X_N, generated features Y_1..Y_M and NND_k(X_i) the distance from X_i to its
k-th nearest *other* real sample,

    density  = 1/(kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, NND_k(X_i))]
    coverage = 1/N    Σ_i 1[∃ j: Y_j ∈ B(X_i, NND_k(X_i))]

Balls are open (``distance < radius``), as in the authors' reference implementation
(github.com/clovaai/generative-evaluation-prdc, ``prdc/prdc.py``, ``compute_density`` and
``compute_coverage``): a real set measured against itself then has coverage 1 and, when no two
distances tie, density exactly 1 (each ball holds its centre and k - 1 neighbours). That package
is not a dependency: it needs scikit-learn and builds the full N x M distance matrix; here the same
counts come from ``torch.cdist`` over row chunks, in float64, on whatever device the features are.
"""

from __future__ import annotations

import torch
from torch import Tensor

DC_NEIGHBORHOOD = 5
"""k of density and coverage (Naeem et al. 2020 use k = 5)."""

CHUNK_ELEMENTS = 1 << 23
"""Distances held at once (64 MiB in float64): rows per chunk = this // the other set's size."""


def _rows(other: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, other))


def knn_radii(points: Tensor, k: int) -> Tensor:
    """Distance from each row of ``points`` to its k-th nearest other row (the row itself, at
    distance 0, is the smallest of its distances and is skipped)."""
    if not 1 <= k < len(points):
        raise ValueError(f"knn_radii: k = {k} needs at least {k + 1} points, got {len(points)}")
    return torch.cat([torch.cdist(rows, points).kthvalue(k + 1, dim=1).values
                      for rows in points.split(_rows(len(points)))])


def density_coverage(real: Tensor, fake: Tensor, k: int = DC_NEIGHBORHOOD) -> tuple[float, float]:
    """(density, coverage) of generated features ``fake`` (M, d) against real features ``real``
    (N, d), N > k, computed in float64 (see the module docstring)."""
    real = real.detach().double()
    fake = fake.detach().double().to(real.device)
    if len(fake) == 0:
        raise ValueError("density_coverage: no generated features")
    radii = knn_radii(real, k)
    inside = covered = 0
    step = _rows(len(fake))
    for rows, r in zip(real.split(step), radii.split(step)):
        within = torch.cdist(rows, fake) < r[:, None]  # (rows, M): Y_j inside the ball of X_i
        inside += int(within.sum())
        covered += int(within.any(dim=1).sum())
    return inside / (k * len(fake)), covered / len(real)

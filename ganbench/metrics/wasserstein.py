"""Wasserstein estimates between sample sets: sliced W2 and exact W1.

The critic estimate E[D(x)] - E[D(G(z))] of a WGAN is computed by the training module itself.
"""

from __future__ import annotations

import numpy as np
import ot
import torch
from torch import Tensor


def _flatten(x: Tensor) -> Tensor:
    return x.detach().reshape(x.shape[0], -1).double()


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_projections: int = 128, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance SW_2(x, y) between two sample sets (Bonneel et al. 2015).

    SW_2^2 = E_theta[W_2^2(theta^T x, theta^T y)] with theta uniform on the unit sphere S^{d-1},
    estimated with ``n_projections`` random directions; each 1-D W_2 between equal-size empirical
    measures is the RMS difference of the sorted projections. Samples are flattened to vectors
    (pixels or features). When the sets differ in size, the larger one is subsampled (without
    replacement, with ``generator``) to the size of the smaller. Returns SW_2 (not squared).

    For two Gaussians in R^d that differ by a shift of length delta, SW_2 = delta / sqrt(d)
    because E[theta_1^2] = 1/d.
    """
    xf, yf = _flatten(x), _flatten(y)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"sliced_wasserstein: dimensions differ ({xf.shape[1]} vs {yf.shape[1]})")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    n = min(xf.shape[0], yf.shape[0])
    if xf.shape[0] > n:
        xf = xf[torch.randperm(xf.shape[0], generator=generator, device=gen_device)[:n].to(xf.device)]
    if yf.shape[0] > n:
        yf = yf[torch.randperm(yf.shape[0], generator=generator, device=gen_device)[:n].to(yf.device)]
    theta = torch.randn(xf.shape[1], n_projections, generator=generator, dtype=torch.float64, device=gen_device).to(
        xf.device
    )
    theta = theta / theta.norm(dim=0, keepdim=True)
    px = torch.sort(xf @ theta, dim=0).values
    py = torch.sort(yf @ theta.to(yf.device), dim=0).values
    return float(((px - py) ** 2).mean().sqrt())


def w1_exact(x: Tensor, y: Tensor) -> float:
    """Exact 1-Wasserstein distance between two uniform empirical measures, via POT's ``ot.emd2``.

    Ground cost is the Euclidean distance; the optimal transport plan is solved as a linear
    program (network simplex). Cost is O(n^3) in the worst case: meant for a few thousand 2-D
    toy points, not for images.
    """
    xn = _flatten(x).cpu().numpy()
    yn = _flatten(y).cpu().numpy()
    a = np.full(xn.shape[0], 1.0 / xn.shape[0])
    b = np.full(yn.shape[0], 1.0 / yn.shape[0])
    cost = ot.dist(xn, yn, metric="euclidean")
    return float(ot.emd2(a, b, cost, numItermax=1_000_000))

"""Layers that implement GAN training tricks.

* :class:`MinibatchDiscrimination` (Salimans et al. 2016, §3.2),
* :class:`MinibatchStdDev` (Karras et al. 2018, §3),
* :class:`VirtualBatchNorm` (Salimans et al. 2016, §3.5) with its :func:`reference_pass`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch import Tensor


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, §3.2).

    With a learned tensor ``T ∈ R^{A×B×C}`` (A = ``in_features``, B = ``num_kernels``,
    C = ``kernel_dim``), each sample's features ``f(x_i) ∈ R^A`` give ``M_i = f(x_i)·T ∈ R^{B×C}``;
    ``c_b(x_i, x_j) = exp(-‖M_{i,b} - M_{j,b}‖₁)`` and ``o(x_i)_b = Σ_{j=1..n} c_b(x_i, x_j)`` (the sum
    includes ``j = i``, as in the paper). The output is ``[f(x_i), o(x_i)]``, shape
    ``(N, in_features + num_kernels)``.
    """

    def __init__(self, in_features: int, num_kernels: int = 100, kernel_dim: int = 5):
        super().__init__()
        self.in_features, self.num_kernels, self.kernel_dim = in_features, num_kernels, kernel_dim
        self.T = nn.Parameter(torch.empty(in_features, num_kernels * kernel_dim))
        nn.init.normal_(self.T, std=0.05)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (N, in_features) → (N, in_features + num_kernels)."""
        m = (x @ self.T).view(x.shape[0], self.num_kernels, self.kernel_dim)
        l1 = (m[:, None] - m[None, :]).abs().sum(-1)  # (N, N, B)
        o = torch.exp(-l1).sum(1)
        return torch.cat([x, o], dim=1)


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, §3): one extra feature of batch diversity.

    The batch is split into groups of ``G = min(group_size, N)`` samples (the largest such size that
    divides N when ``N`` is not a multiple); sample ``i`` belongs to group ``i mod (N/G)`` as in the
    reference implementation. Per group, the standard deviation of every feature over its ``G``
    members, ``sqrt(Var + 1e-8)`` (population variance), is averaged over all features and appended
    to each member: as one extra constant feature map for ``(N, C, H, W)`` inputs (C+1 channels), or
    as one extra feature for ``(N, F)`` inputs (F+1 features).
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8):
        super().__init__()
        self.group_size, self.eps = group_size, eps

    def _group(self, n: int) -> int:
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        return g

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        g = self._group(n)
        y = x.reshape(g, n // g, *x.shape[1:])
        std = (y.var(dim=0, correction=0) + self.eps).sqrt()  # (N/G, ...)
        std = std.reshape(n // g, -1).mean(1)  # one value per group
        std = std.repeat(g)  # sample i takes group i mod (N/G)
        shape = (n, 1, *x.shape[2:])
        return torch.cat([x, std.view(n, *([1] * (x.dim() - 1))).expand(shape)], dim=1)


class VirtualBatchNorm(nn.Module):
    """Virtual batch normalization (Salimans et al. 2016, §3.5).

    Each example ``x`` is normalized with the statistics of a fixed reference batch ``R`` combined
    with ``x`` itself, the reference weighted ``N_ref/(N_ref+1)`` and ``x`` weighted ``1/(N_ref+1)``
    (as in the authors' code): per channel,
    ``μ = (N_ref·μ_R + μ_x)/(N_ref+1)``, ``σ² = (N_ref·E_R[r²] + E_x[x²])/(N_ref+1) - μ²``, where
    ``μ_x``, ``E_x`` run over the example's own spatial positions (just the value itself for
    ``(N, C)`` inputs). Then ``y = γ(x - μ)/sqrt(σ² + eps) + β``. An example's output therefore does
    not depend on the other examples of its batch.

    The reference statistics come from a forward pass of the reference batch under
    :func:`reference_pass`, which also normalizes that batch with its own statistics. Repeat the
    reference pass after each parameter update so they reflect the current layers below.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.recording = False
        self.detach_reference = True
        self.ref_mean: Tensor | None = None
        self.ref_meansq: Tensor | None = None
        self.ref_count = 0

    def _affine(self, x: Tensor, mean: Tensor, meansq: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        var = (meansq - mean * mean).clamp_min(0.0)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        return out * self.weight.view(shape) + self.bias.view(shape)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"VirtualBatchNorm({self.num_features}) expects (N, {self.num_features}) or "
                             f"(N, {self.num_features}, H, W) inputs, got {tuple(x.shape)}")
        dims = [0] + list(range(2, x.dim()))
        keep = (1, -1) + (1,) * (x.dim() - 2)
        if self.recording:
            mean = x.mean(dim=dims).view(keep)
            meansq = x.pow(2).mean(dim=dims).view(keep)
            if self.detach_reference:
                self.ref_mean, self.ref_meansq = mean.detach(), meansq.detach()
            else:
                self.ref_mean, self.ref_meansq = mean, meansq
            self.ref_count = x.shape[0]
            return self._affine(x, mean, meansq)
        if self.ref_mean is None or self.ref_meansq is None:
            raise RuntimeError("VirtualBatchNorm has no reference statistics: run the model on a reference "
                               "batch inside `with reference_pass(model):` first")
        spatial = list(range(2, x.dim()))
        own_mean = x.mean(dim=spatial, keepdim=True) if spatial else x
        own_meansq = x.pow(2).mean(dim=spatial, keepdim=True) if spatial else x.pow(2)
        new = 1.0 / (self.ref_count + 1.0)
        mean = new * own_mean + (1.0 - new) * self.ref_mean
        meansq = new * own_meansq + (1.0 - new) * self.ref_meansq
        return self._affine(x, mean, meansq)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


@contextmanager
def reference_pass(model: nn.Module, detach: bool = True) -> Iterator[nn.Module]:
    """Make every :class:`VirtualBatchNorm` in ``model`` record reference statistics.

    Usage: ``with reference_pass(D): D(ref_batch)`` and then ``D(x)``. With ``detach=True`` the
    recorded statistics are constants for later passes (so several backward passes can use them);
    ``detach=False`` keeps them in the graph, so gradients also flow through the reference batch as
    in the original implementation (the graph must then be rebuilt before every backward).
    """
    layers = [m for m in model.modules() if isinstance(m, VirtualBatchNorm)]
    for m in layers:
        m.recording, m.detach_reference = True, detach
    try:
        yield model
    finally:
        for m in layers:
            m.recording = False

"""Fréchet distance between Gaussians fitted to features, and streaming feature moments.

The Fréchet (2-Wasserstein) distance between N(mu1, Sigma1) and N(mu2, Sigma2) is

    d^2 = ||mu1 - mu2||^2 + Tr(Sigma1 + Sigma2 - 2 (Sigma1 Sigma2)^{1/2})

(Dowson & Landau 1982; used as FID by Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update
Rule Converge to a Local Nash Equilibrium", eq. 6). Only the trace of the matrix square root is
needed, and Tr((Sigma1 Sigma2)^{1/2}) is the sum of the square roots of the eigenvalues of
Sigma1 Sigma2 (the same computation torch-fidelity and torchmetrics perform).

Under the name ``fid`` this number is reported only for the TF-ported Inception-v3 features; with any
other feature network it is reported as ``fd_<net>``.

Its sampling error is reported beside it as the standard deviation of the FDs of ``FD_SUBSETS``
disjoint subsets of the generated samples (sample ``g`` belongs to subset ``g mod FD_SUBSETS``),
each against the full reference statistics: the spread of an FD measured on ``n / FD_SUBSETS``
samples, larger than that of the FD on all ``n``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance

ArrayLike = np.ndarray | Tensor

FD_SUBSETS = 5
"""Disjoint subsets of the generated samples whose FDs give the spread reported beside FD."""


def _as_float64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance d^2 between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    Heusel et al. 2017, eq. 6. The trace of the matrix square root is the sum of the square roots
    of the eigenvalues of sigma1 @ sigma2 (real and non-negative for covariance matrices; the tiny
    imaginary parts that round-off creates are discarded).
    """
    m1, s1, m2, s2 = (_as_float64(a) for a in (mu1, sigma1, mu2, sigma2))
    if m1.ndim != 1 or m1.shape != m2.shape or s1.shape != (m1.size, m1.size) or s1.shape != s2.shape:
        raise ValueError(
            f"frechet_distance: shapes do not match: mu {m1.shape}/{m2.shape}, sigma {s1.shape}/{s2.shape}"
        )
    diff = m1 - m2
    eig = np.linalg.eigvals(s1 @ s2).astype(np.complex128)
    tr_covmean = np.sqrt(eig).real.sum()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def mean_and_covariance(features: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean and unbiased covariance (divisor N-1) of an (N, d) feature matrix, in float64."""
    f = features.detach().double()
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


class FrechetToReference:
    """Fréchet distances of several Gaussians to one reference N(mu_r, sigma_r), in float64.

    With R = sigma_r^{1/2} (the symmetric PSD square root, from one ``eigh``), sigma @ sigma_r = (sigma R) R
    has the eigenvalues of R @ sigma @ R, which is symmetric PSD: Tr((sigma sigma_r)^{1/2}) is the sum of
    the square roots of its ``eigvalsh``. A symmetric eigensolver per distance, and one for the
    reference, instead of a general ``eigvals`` per distance: several times faster for d = 2048,
    which matters for the subsets of FD's spread. Computed on the reference's device.
    """

    def __init__(self, mu: Tensor, sigma: Tensor) -> None:
        self.mu, self.sigma = mu.detach().double(), sigma.detach().double()
        w, v = torch.linalg.eigh(self.sigma)
        self.root = (v * w.clamp(min=0).sqrt()) @ v.T
        self.trace = self.sigma.trace()

    def __call__(self, mu: Tensor, sigma: Tensor) -> float:
        mu = mu.detach().double().to(self.mu.device)
        sigma = sigma.detach().double().to(self.mu.device)
        diff = mu - self.mu
        eig = torch.linalg.eigvalsh(self.root @ sigma @ self.root).clamp(min=0)
        return float(diff @ diff + sigma.trace() + self.trace - 2 * eig.sqrt().sum())


def subset_fds(features: Tensor, mu: Tensor, sigma: Tensor, subsets: int = FD_SUBSETS) -> list[float]:
    """FD of each of ``subsets`` disjoint subsets of an (N, d) feature matrix against N(mu, sigma):
    row ``g`` belongs to subset ``g mod subsets`` (as in ``SubsetMoments``)."""
    fd = FrechetToReference(mu, sigma)
    return [fd(*mean_and_covariance(features[j::subsets])) for j in range(subsets)]


def spread(values: list[float]) -> float:
    """Standard deviation (divisor n, numpy's default; torch-fidelity's IS and KID spreads use it too)."""
    return float(np.std(np.asarray(values, dtype=np.float64)))


class SubsetMoments(Metric):
    """Feature moments of ``subsets`` disjoint subsets of the generated samples, streamed.

    ``update(features, index)`` adds each row to subset ``index mod subsets``, where ``index`` is the
    row's global sample number (so subsets stay disjoint, and of sizes that differ by at most one,
    however the samples are split into batches and DDP ranks). The state is a fixed-size float64 sum
    per subset (Σf, Σffᵀ, n), summed across ranks; ``compute`` returns the subsets' means (s, d)
    and unbiased covariances (s, d, d).
    """

    full_state_update = False

    def __init__(self, num_features: int, subsets: int = FD_SUBSETS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.subsets = subsets
        d = int(num_features)
        self.add_state("sums", torch.zeros(subsets, d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(subsets, d, d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(subsets, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, features: Tensor, index: Tensor) -> None:
        f = features.detach().double()
        which = index.to(f.device) % self.subsets
        for j in range(self.subsets):
            part = f[which == j]
            self.sums[j] += part.sum(dim=0)
            self.outer[j] += part.T @ part
            self.counts[j] += len(part)

    def compute(self) -> tuple[Tensor, Tensor]:
        n = self.counts.double()
        mu = self.sums / n[:, None]
        sigma = (self.outer - n[:, None, None] * mu[:, :, None] * mu[:, None, :]) / (n - 1)[:, None, None]
        return mu, sigma


class FeaturePassthrough(torch.nn.Module):
    """The ``feature=`` module given to torchmetrics' image metrics: features are extracted once upstream.

    ganbench runs its feature network once per batch and feeds the resulting (N, d) matrix to FID,
    KID, IS and precision/recall alike, so the torchmetrics metric's own "network" is the identity.
    ``num_features`` spares torchmetrics its dummy forward pass.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected features of shape (N, {self.num_features}), got {tuple(features.shape)}")
        return features


def streaming_fd(num_features: int, **kwargs) -> FrechetInceptionDistance:
    """A torchmetrics ``FrechetInceptionDistance`` over precomputed features of width ``num_features``.

    Its state is three fixed-size float64 sums per side (sum of features, sum of outer products,
    count), reduced by summation across DDP ranks, so memory does not grow with the number of
    samples. ``reset_real_features=False`` keeps injected reference statistics across resets.
    """
    return FrechetInceptionDistance(
        feature=FeaturePassthrough(num_features), reset_real_features=False, normalize=False, **kwargs
    )


def set_real_statistics(
    metric: FrechetInceptionDistance, mu: Tensor, sigma: Tensor, n: int, include: bool = True
) -> None:
    """Write reference (real-data) moments into a torchmetrics FID state.

    The state holds sum_i f_i = n mu and sum_i f_i f_i^T = (n-1) Sigma + n mu mu^T, from which
    torchmetrics recovers exactly ``mu`` and ``sigma``. Under DDP, call with ``include=True`` on
    global rank 0 only (the others get zeros), so the cross-rank sum counts the reference once.
    """
    mu = mu.detach().double().to(metric.real_features_sum.device)
    sigma = sigma.detach().double().to(metric.real_features_sum.device)
    if include:
        metric.real_features_sum = mu * n
        metric.real_features_cov_sum = sigma * (n - 1) + n * torch.outer(mu, mu)
        metric.real_features_num_samples = torch.tensor(n, dtype=torch.long, device=mu.device)
    else:
        metric.real_features_sum = torch.zeros_like(mu)
        metric.real_features_cov_sum = torch.zeros_like(sigma)
        metric.real_features_num_samples = torch.tensor(0, dtype=torch.long, device=mu.device)

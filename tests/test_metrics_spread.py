"""Sampling error of FD, KID and IS: the spread over subsets, checked against computations by hand
on the same features."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ganbench.metrics.frechet import (
    FD_SUBSETS,
    FrechetToReference,
    SubsetMoments,
    frechet_distance,
    mean_and_covariance,
    spread,
    subset_fds,
)
from ganbench.metrics.image import StreamingImageMetrics, fidelity_metrics
from ganbench.metrics.reference import ReferenceStats


def scipy_fd(a: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Heusel et al. 2017 eq. 6 with scipy's matrix square root, for the rows of ``a``."""
    m, s = a.mean(0), np.cov(a, rowvar=False)
    return float(((m - mu) ** 2).sum() + np.trace(s + sigma - 2 * scipy.linalg.sqrtm(s @ sigma).real))


def features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ a + shift


def test_subset_fds_are_the_fds_of_every_fifth_sample_and_their_spread_is_numpys_std():
    real, fake = features(400, 6, 0), features(103, 6, 1, shift=0.3)  # 103: subsets of 21 and 20
    mu, sigma = mean_and_covariance(real)
    by_hand = [scipy_fd(np.stack([fake[g].numpy() for g in range(103) if g % 5 == j]), mu.numpy(), sigma.numpy())
               for j in range(5)]
    fds = subset_fds(fake, mu, sigma)
    assert FD_SUBSETS == 5 and fds == pytest.approx(by_hand, rel=1e-9)
    mean = sum(by_hand) / 5
    assert spread(fds) == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in by_hand) / 5), rel=1e-9)
    assert len(set(fds)) == 5  # the subsets differ, so the spread is a real one
    assert spread(fds) > 0


def test_identical_subsets_have_no_spread():
    real, base = features(300, 4, 2), features(40, 4, 3, shift=0.5)
    mu, sigma = mean_and_covariance(real)
    tiled = base.repeat_interleave(FD_SUBSETS, dim=0)  # samples 5i .. 5i+4 are all base[i]: every subset is base
    fds = subset_fds(tiled, mu, sigma)
    assert fds[0] > 0.1 and fds == [fds[0]] * 5
    assert spread(fds) == 0.0


def test_streamed_subset_moments_match_the_subsets_whatever_the_batches():
    fake = features(103, 5, 4)
    m = SubsetMoments(5)
    # batches of uneven sizes, out of order, each numbered by its first global sample
    for start, stop in ((60, 103), (0, 17), (17, 60)):
        m.update(fake[start:stop].float(), torch.arange(start, stop))
    mus, sigmas = m.compute()
    assert m.counts.tolist() == [21, 21, 21, 20, 20]
    for j in range(5):
        mu, sigma = mean_and_covariance(fake.float()[j::5])
        torch.testing.assert_close(mus[j], mu, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(sigmas[j], sigma, rtol=1e-9, atol=1e-10)


def test_tiled_samples_have_no_fd_spread_in_either_suite():
    real, base = features(300, 4, 5).float(), features(40, 4, 6, shift=0.5).float()
    mu, sigma = mean_and_covariance(real)
    ref = ReferenceStats(mu, sigma, real, {})
    tiled = base.repeat_interleave(FD_SUBSETS, dim=0)
    full = fidelity_metrics(tiled, torch.zeros(200, 2), ref, ["fd"])
    assert full["fd"] > 0.1 and full["fd_std"] == 0.0
    suite = StreamingImageMetrics(4, 2, n_fake=200, n_real=300, metrics=["fd"])
    suite.set_reference(ref)
    for chunk in tiled.split(64):  # batches that cut across the tiles: the sums differ only in their order
        suite.update(chunk, torch.zeros(len(chunk), 2))
    streamed = suite.compute()
    assert streamed["fd"] == pytest.approx(full["fd"], rel=1e-6)
    assert streamed["fd_std"] <= 1e-9 * streamed["fd"]


def test_streamed_is_spread_is_numpys_std_over_torchmetrics_splits():
    logits = 3 * torch.randn(25, 6, generator=torch.Generator().manual_seed(7))
    suite = StreamingImageMetrics(3, 6, n_fake=25, n_real=25, metrics=["is"])
    suite.update(torch.zeros(25, 3), logits)
    torch.manual_seed(11)
    out = suite.compute()
    torch.manual_seed(11)  # torchmetrics shuffles with the global generator, then cuts torch.chunk(10) pieces:
    shuffled = logits[torch.randperm(25)]  # ceil(25 / 10) = 3 samples each, so eight of 3 and one of 1
    scores = []
    for part in shuffled.double().split(3):
        logp = part.log_softmax(dim=1)
        scores.append(math.exp((logp.exp() * (logp - logp.exp().mean(0).log())).sum(1).mean()))
    assert len(scores) == 9
    assert out["is"] == pytest.approx(np.mean(scores), rel=1e-5)
    assert out["is_std"] == pytest.approx(np.std(scores), rel=1e-5)  # divisor 9, as torch-fidelity's
    assert np.std(scores, ddof=1) / np.std(scores) > 1.05  # torch's own default would have been told apart


def test_frechet_to_reference_equals_the_general_formula():
    real, fake = features(500, 16, 8), features(120, 16, 9, shift=0.2)
    mu_r, sigma_r = mean_and_covariance(real)
    mu_f, sigma_f = mean_and_covariance(fake)
    to_ref = FrechetToReference(mu_r, sigma_r)
    assert to_ref(mu_f, sigma_f) == pytest.approx(frechet_distance(mu_f, sigma_f, mu_r, sigma_r), rel=1e-10)
    assert to_ref(mu_r, sigma_r) == pytest.approx(0.0, abs=1e-9)
    # a rank-deficient reference (fewer samples than dimensions), as with Inception's 2048-d features
    mu_s, sigma_s = mean_and_covariance(real[:10])
    assert FrechetToReference(mu_s, sigma_s)(mu_f, sigma_f) == pytest.approx(
        scipy_fd(fake.numpy(), mu_s.numpy(), sigma_s.numpy()), rel=1e-6)

"""`ganbench evaluate` against an independent float64 implementation (numpy/scipy) of FD, KID, IS,
improved precision/recall, density/coverage and the spreads of FD and IS, on the features evaluate
measured: the real ones from the reference cache file it saved, the generated ones from the same
samples (same latent seed) through the same net."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ganbench.commands import evaluate
from ganbench.data import GANDataModule
from ganbench.metrics import load_feature_net
from ganbench.metrics.features import DomainCNN, cache_root, save_domain_net
from ganbench.metrics.frechet import mean_and_covariance
from ganbench.metrics.image import fidelity_metrics
from ganbench.metrics.reference import ReferenceStats
from ganbench.metrics.sampling import generate
from ganbench.models import load_module
from tests.test_metrics_commands import make_ckpt


def fd64(a: np.ndarray, b: np.ndarray) -> float:
    """Heusel et al. 2017 eq. 6 with scipy's matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def kid64(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with the kernel (xᵀy/d + 1)³ over all samples (Bińkowski et al. 2018, eq. 3)."""
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    m, n = len(a), len(b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def is64(logits: np.ndarray, splits: int, seed: int) -> list[float]:
    """exp(E KL(p(y|x) || p(y))) of each split of the samples shuffled with ``seed`` (Salimans 2016)."""
    x = logits[np.random.RandomState(seed).permutation(len(logits))]
    logp = x - scipy.special.logsumexp(x, axis=1, keepdims=True)
    scores = []
    n = len(x)
    for i in range(splits):
        part = logp[i * n // splits:(i + 1) * n // splits]
        logq = np.log(np.exp(part).mean(0))
        scores.append(math.exp((np.exp(part) * (part - logq)).sum(1).mean()))
    return scores


def pr64(fake: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019: a sample is inside a set's manifold when it lies within the distance
    of some member to that member's k-th nearest neighbour (itself excluded)."""
    dist = lambda x, y: np.sqrt(np.maximum(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1), 0))  # noqa: E731
    radius_real = np.sort(dist(real, real), axis=1)[:, k]
    radius_fake = np.sort(dist(fake, fake), axis=1)[:, k]
    precision = (dist(fake, real) <= radius_real[None, :]).any(1).mean()
    recall = (dist(real, fake) <= radius_fake[None, :]).any(1).mean()
    return float(precision), float(recall)


def dc64(fake: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    """Naeem et al. 2020: counts of generated samples strictly inside each real sample's ball of radius
    its distance to its k-th nearest other real sample."""
    dist = lambda x, y: np.sqrt(np.maximum(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1), 0))  # noqa: E731
    radius_real = np.sort(dist(real, real), axis=1)[:, k]
    inside = dist(real, fake) < radius_real[:, None]
    return float(inside.sum() / (k * len(fake))), float(inside.any(1).mean())


def test_evaluate_agrees_with_independent_float64_implementations(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_domain_net(DomainCNN(1, 8, 10), "digits", accuracy=0.0)
    ckpt = make_ckpt(tmp_path, GANDataModule("digits", resolution=16, batch_size=16))
    n = 120  # = n_real <= 1000: every KID subset holds all samples, so KID is the full-sample unbiased MMD²
    assert evaluate.main(["--ckpt", str(ckpt), "--n-fake", str(n), "--metrics", "fd", "kid", "is", "pr"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"]["kid_subset_size"] == n and out["protocol"]["is_splits"] == 10

    (stats,) = (cache_root() / "stats").glob("digits-train-digits-*.pt")  # the reference features evaluate saved
    real = torch.load(stats, weights_only=True)["features"].double().numpy()
    net = load_feature_net("digits")
    fake_images = torch.cat(list(generate(load_module(ckpt).eval(), n, 250, 0, True)))
    extracted = net.extract(fake_images)
    fake, logits = extracted["features"].double().numpy(), extracted["logits"].double().numpy()
    assert real.shape == fake.shape == (n, 128)

    m = out["metrics"]
    assert m["fd_digits_120"] == pytest.approx(fd64(fake, real), rel=1e-6)
    assert m["kid_digits_120"] == pytest.approx(kid64(fake, real), rel=1e-6)
    assert m["is_digits_120"] == pytest.approx(np.mean(is64(logits, 10, 2020)), rel=1e-9)
    assert (m["precision_digits_120"], m["recall_digits_120"]) == pytest.approx(pr64(fake, real, 3), abs=1e-6)
    assert (m["density_digits_120"], m["coverage_digits_120"]) == pytest.approx(dc64(fake, real, 5), abs=1e-12)
    # spreads: FD over the 5 disjoint subsets g mod 5 (24 samples each), IS over its 10 splits (numpy's
    # std, divisor n); every one of KID's 100 subsets holds all 120 samples, so they agree to round-off
    fds = [fd64(fake[j::5], real) for j in range(5)]
    assert m["fd_digits_120_std_5x24"] == pytest.approx(float(np.std(fds)), rel=1e-6)
    assert m["is_digits_120_std_10x12"] == pytest.approx(float(np.std(is64(logits, 10, 2020))), rel=1e-9)
    assert m["kid_digits_120_std_100x120"] <= 1e-9 * abs(m["kid_digits_120"])

    # this tiny G's samples lie outside every real ball (0/0): the same code path on two halves of the
    # saved real features gives precision and recall strictly between 0 and 1
    a, b = torch.from_numpy(real[:60]), torch.from_numpy(real[60:])
    mu, sigma = mean_and_covariance(a)
    values = fidelity_metrics(b.float(), torch.zeros(60, 10), ReferenceStats(mu, sigma, a.float(), {}), ["pr", "fd"])
    expected = pr64(b.float().double().numpy(), a.float().double().numpy(), 3)
    assert 0 < min(expected) < 1  # neither all nor none of the samples inside
    assert (values["precision"], values["recall"]) == pytest.approx(expected, abs=1e-6)  # counts / 60, float32
    density, coverage = dc64(b.float().double().numpy(), a.float().double().numpy(), 5)
    assert 0 < coverage < 1 and density > 0
    assert (values["density"], values["coverage"]) == pytest.approx((density, coverage), abs=1e-12)
    assert values["fd"] == pytest.approx(fd64(b.float().double().numpy(), a.float().double().numpy()), rel=1e-6)

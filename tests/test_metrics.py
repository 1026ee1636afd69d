"""Closed-form and reference checks of the metric functions."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.testing import assert_close
from torchmetrics.image.inception import InceptionScore

from ganbench.metrics import (
    FeaturePassthrough,
    PrecisionRecall,
    ReferenceStats,
    StreamingImageMetrics,
    fidelity_metrics,
    frechet_distance,
    mean_and_covariance,
    metric_keys,
    mode_metrics,
    set_real_statistics,
    sliced_wasserstein,
    streaming_fd,
    toy_scatter,
    w1_exact,
)
from ganbench.metrics.sampling import slerp, truncate_latent


def scipy_fid(mu1, s1, mu2, s2) -> float:
    """The reference formula (Heusel et al. 2017 / TTUR's fid.py) with scipy.linalg.sqrtm."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ a + shift


def test_frechet_distance_matches_scipy_sqrtm_reference():
    x, y = features(500, 16, 0), features(400, 16, 1, shift=0.3)
    mx, sx = mean_and_covariance(x)
    my, sy = mean_and_covariance(y)
    ref = scipy_fid(mx.numpy(), sx.numpy(), my.numpy(), sy.numpy())
    assert frechet_distance(mx, sx, my, sy) == pytest.approx(ref, rel=1e-6)
    # numpy's own mean/cov (what torch-fidelity uses) give the same statistics
    assert_close(sx, torch.from_numpy(np.cov(x.numpy(), rowvar=False)), rtol=1e-12, atol=1e-12)


def test_frechet_distance_of_identical_statistics_is_zero():
    x = features(300, 8, 2)
    mu, sigma = mean_and_covariance(x)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    # ||mu1-mu2||^2 + sum(v1 + v2 - 2 sqrt(v1 v2)) = 5 + (1 + 1 + 4) = 11
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(11.0, rel=1e-12)


def test_frechet_distance_closed_form_for_commuting_full_covariances():
    # Sigma1 = 2 Sigma, Sigma2 = 8 Sigma share eigenvectors: Tr(S1 + S2 - 2 (S1 S2)^1/2) = (2 + 8 - 8) Tr(S)
    g = torch.Generator().manual_seed(3)
    a = torch.randn(5, 5, generator=g, dtype=torch.float64)
    s = (a @ a.T + torch.eye(5, dtype=torch.float64)).numpy()
    mu = np.zeros(5)
    assert frechet_distance(mu, 2 * s, mu + 2.0, 8 * s) == pytest.approx(5 * 4.0 + 2 * np.trace(s), rel=1e-9)


def test_streaming_fd_equals_batch_formula_and_injected_reference_is_exact():
    real, fake = features(600, 12, 4), features(500, 12, 5, shift=0.5)
    m = streaming_fd(12)
    mu_r, sig_r = mean_and_covariance(real)
    set_real_statistics(m, mu_r, sig_r, len(real))
    for chunk in fake.float().split(64):
        m.update(chunk, real=False)
    mu_f, sig_f = mean_and_covariance(fake.float())
    expected = scipy_fid(mu_f.numpy(), sig_f.numpy(), mu_r.numpy(), sig_r.numpy())
    assert float(m.compute()) == pytest.approx(expected, rel=1e-6)
    # same numbers when the real side is streamed instead of injected
    m2 = streaming_fd(12)
    for chunk in real.float().split(100):
        m2.update(chunk, real=True)
    for chunk in fake.float().split(64):
        m2.update(chunk, real=False)
    assert float(m2.compute()) == pytest.approx(float(m.compute()), rel=1e-6)


def test_fd_state_is_fixed_size_whatever_the_number_of_samples():
    def state_shapes(n: int) -> dict:
        m = streaming_fd(10)
        for chunk in torch.randn(n, 10).split(256):
            m.update(chunk, real=False)
        return {k: tuple(getattr(m, k).shape) for k in m._defaults}

    small, large = state_shapes(100), state_shapes(20_000)
    assert (
        small
        == large
        == {
            "real_features_sum": (10,),
            "real_features_cov_sum": (10, 10),
            "real_features_num_samples": (),
            "fake_features_sum": (10,),
            "fake_features_cov_sum": (10, 10),
            "fake_features_num_samples": (),
        }
    )


def test_fd_reset_keeps_injected_reference():
    m = streaming_fd(4)
    set_real_statistics(m, torch.zeros(4), torch.eye(4), 100)
    m.update(torch.randn(50, 4), real=False)
    m.reset()
    assert int(m.real_features_num_samples) == 100 and int(m.fake_features_num_samples) == 0


@pytest.mark.parametrize("splits", [1, 10])
def test_inception_score_of_uniform_predictions_is_one(splits):
    isc = InceptionScore(feature=FeaturePassthrough(10), splits=splits)
    isc.update(torch.zeros(200, 10))  # equal logits: p(y|x) uniform
    assert float(isc.compute()[0]) == pytest.approx(1.0, abs=1e-6)


def test_inception_score_of_confident_evenly_spread_classes_is_the_class_count():
    k = 10
    logits = torch.full((500, k), -1e4)
    logits[torch.arange(500), torch.arange(500) % k] = 0.0  # one-hot p(y|x); marginal uniform
    isc = InceptionScore(feature=FeaturePassthrough(k), splits=1)
    isc.update(logits)
    assert float(isc.compute()[0]) == pytest.approx(float(k), rel=1e-6)
    # torch-fidelity's implementation (used by `ganbench evaluate`) agrees
    ref = ReferenceStats(torch.zeros(3), torch.eye(3), torch.randn(20, 3), {})
    out = fidelity_metrics(torch.randn(500, 3), logits, ref, metrics=["is"], is_splits=1)
    assert out["is"] == pytest.approx(float(k), rel=1e-6)


def test_torchmetrics_and_torch_fidelity_agree_on_fd():
    real, fake = features(800, 6, 6).float(), features(700, 6, 7, shift=0.2).float()
    mu, sigma = mean_and_covariance(real)
    ref = ReferenceStats(mu, sigma, real, {})
    suite = StreamingImageMetrics(6, 4, n_fake=700, n_real=800, metrics=["fd", "kid", "pr"])
    suite.set_reference(ref)
    for chunk in fake.split(128):
        suite.update(chunk, torch.zeros(len(chunk), 4))
    streamed = suite.compute()
    full = fidelity_metrics(fake, torch.zeros(700, 4), ref, metrics=["fd", "kid", "pr"])
    assert sorted(streamed) == sorted(full) == ["coverage", "density", "fd", "fd_std", "kid", "kid_std", "precision",
                                                "recall"]
    assert streamed["fd"] == pytest.approx(full["fd"], rel=1e-6)
    assert streamed["fd_std"] == pytest.approx(full["fd_std"], rel=1e-6)  # the same 5 subsets of 140
    assert streamed["precision"] == full["precision"] and streamed["recall"] == full["recall"]
    assert streamed["density"] == full["density"] and streamed["coverage"] == full["coverage"]
    assert 0 < full["coverage"] < 1 and full["density"] > 0
    # KID: both are unbiased MMD^2 estimates over random subsets of 700 of the same features
    assert streamed["kid"] == pytest.approx(full["kid"], abs=5e-3)


def test_precision_recall_on_hand_made_sets():
    # real: 0, 1, ..., 9 on a line; fake: 0..4 (inside the real support) and 100..104 (far away)
    real = torch.arange(10.0).unsqueeze(1)
    fake = torch.cat([torch.arange(5.0), 100.0 + torch.arange(5.0)]).unsqueeze(1)
    pr = PrecisionRecall(neighborhood=3)
    pr.update(real, real=True)
    pr.update(fake, real=False)
    p, r = pr.compute()
    # precision: the 5 inside fakes lie in real balls (they coincide with real points), the far ones do not
    assert float(p) == 0.5
    # recall: 3rd-NN radii of fakes 0..4 are 3, 2, 2, 2, 3, so their balls cover [-3, 7]: reals 0..7 -> 8/10
    assert float(r) == pytest.approx(0.8, rel=1e-6)


def test_sliced_wasserstein_of_shifted_gaussians_matches_analytic_value():
    g = torch.Generator().manual_seed(0)
    d, delta, n = 4, 2.0, 20_000
    x = torch.randn(n, d, generator=g)
    y = torch.randn(n, d, generator=g)
    y[:, 0] += delta
    swd = sliced_wasserstein(x, y, n_projections=512, generator=g)
    # SW_2 = delta * sqrt(E[theta_1^2]) = delta / sqrt(d) = 1.0
    assert swd == pytest.approx(delta / math.sqrt(d), abs=0.03)
    assert sliced_wasserstein(x, x, 16, g) == 0.0


def test_sliced_wasserstein_in_one_dimension_is_exact_w2():
    x = torch.tensor([[0.0], [1.0], [2.0]])
    y = torch.tensor([[3.0], [1.5], [0.5]])
    # sorted pairs (0,0.5) (1,1.5) (2,3): W2^2 = (0.25 + 0.25 + 1) / 3 = 0.5
    assert sliced_wasserstein(x, y, n_projections=3) == pytest.approx(math.sqrt(0.5), rel=1e-12)


def test_w1_exact_equals_hand_computed_matching():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[0.0, 0.1], [2.0, 0.0], [0.0, 3.0]])
    # optimal matching: (0,0)-(0,0.1): 0.1; (1,0)-(2,0): 1; (0,1)-(0,3): 2 -> mean 3.1 / 3
    assert w1_exact(x, y) == pytest.approx(3.1 / 3, rel=1e-9)
    assert w1_exact(x, x) == pytest.approx(0.0, abs=1e-12)


def ring(k: int = 8, radius: float = 2.0) -> torch.Tensor:
    a = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return torch.stack([radius * torch.cos(a), radius * torch.sin(a)], 1)


def test_mode_metrics_on_hand_made_samples():
    centers, std = ring(), 0.02
    # 3 of 8 modes hit: 6, 3 and 1 high-quality samples, plus 2 far-off samples
    pts = [centers[0]] * 6 + [centers[2] + torch.tensor([0.05, 0.0], dtype=torch.float64)] * 3 + [centers[5]]
    pts += [torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([5.0, 5.0], dtype=torch.float64)]
    out = mode_metrics(torch.stack(pts), centers, std, threshold=3.0)
    assert out["modes_covered"] == 3.0
    assert out["high_quality_frac"] == pytest.approx(10 / 12, rel=1e-12)
    p = np.array([0.6, 0.3, 0.1])
    expected_kl = float((p * np.log(8 * p)).sum())  # the five empty bins contribute ~1e-10 * log(1e-9)
    assert out["kl_to_uniform"] == pytest.approx(expected_kl, abs=1e-6)


def test_mode_metrics_uniform_coverage_has_zero_kl():
    centers = ring()
    out = mode_metrics(centers.repeat(5, 1), centers, 0.02)
    assert out == {"modes_covered": 8.0, "high_quality_frac": 1.0, "kl_to_uniform": pytest.approx(0.0, abs=1e-9),
                   "reverse_kl": pytest.approx(0.0, abs=1e-12)}


def test_toy_scatter_writes_a_png(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = ring().repeat(50, 1) + 0.02 * torch.randn(400, 2, generator=g, dtype=torch.float64)
    path = toy_scatter(real, real[:200], tmp_path / "toy.png", centers=ring())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metric_keys_carry_their_protocol():
    assert metric_keys("fmnist", 10000, ["fd", "is", "kid", "pr", "swd"]) == {
        "fd": "fd_fmnist_10k",
        "fd_std": "fd_fmnist_10k_std_5x2k",  # spread over 5 disjoint subsets of 2000
        "is": "is_fmnist_10k",
        "is_std": "is_fmnist_10k_std_10x1k",  # over the 10 splits of 1000
        "kid": "kid_fmnist_10k",
        "kid_std": "kid_fmnist_10k_std_100x1k",  # over the 100 subsets of 1000
        "precision": "precision_fmnist_10k",
        "recall": "recall_fmnist_10k",
        "density": "density_fmnist_10k",
        "coverage": "coverage_fmnist_10k",
        "swd_pixels": "swd_pixels_10k_128p",
        "swd_features": "swd_fmnist_10k_128p",
    }
    assert metric_keys("inception", 5000, ["fd"]) == {"fd": "fid_inception_5k", "fd_std": "fid_inception_5k_std_5x1k"}
    assert metric_keys("digits", 10000, ["swd"], 64, swd_samples=4096) == {
        "swd_pixels": "swd_pixels_4096_64p", "swd_features": "swd_digits_4096_64p"}
    assert metric_keys("digits", 2500, ["fd"], 64) == {"fd": "fd_digits_2500", "fd_std": "fd_digits_2500_std_5x500"}
    # KID's subsets hold min(1000, n_fake, n_real) samples; FD's spread needs subsets of 2 samples
    assert metric_keys("digits", 120, ["kid"], n_real=80) == {"kid": "kid_digits_120",
                                                              "kid_std": "kid_digits_120_std_100x80"}
    assert metric_keys("digits", 9, ["fd"]) == {"fd": "fd_digits_9"}


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    assert_close(slerp(a, b, 0.0), a, rtol=1e-5, atol=1e-5)
    assert_close(slerp(a, b, 1.0), b, rtol=1e-5, atol=1e-5)
    # unit vectors stay on the sphere halfway
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    assert_close(slerp(an, bn, 0.5).norm(dim=1), torch.ones(4), rtol=1e-5, atol=1e-5)


def test_truncation_bounds_every_entry():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1000, 16, generator=g)
    t = truncate_latent(z, 0.5, g)
    assert float(t.abs().max()) <= 0.5 and torch.equal(t[z.abs() <= 0.5], z[z.abs() <= 0.5])


def test_streaming_metrics_with_a_seed_depend_on_the_samples_only_and_leave_the_global_stream():
    """KID's subsets (1000 of 1500) and IS's split order are random in torchmetrics: with ``seed`` two
    different global random states give the same values and the global state is not moved; without it
    they differ (so the check can fail)."""
    from ganbench.metrics import StreamingImageMetrics
    from ganbench.metrics.reference import ReferenceStats

    g = torch.Generator().manual_seed(0)
    real = torch.randn(1500, 8, generator=g)
    fake, logits = torch.randn(1500, 8, generator=g) + 0.3, 4 * torch.randn(1500, 10, generator=g)
    ref = ReferenceStats(real.double().mean(0), torch.cov(real.double().T), real, {})

    def measure(seed):  # a fresh suite each time: torchmetrics caches a computed value until the next update
        suite = StreamingImageMetrics(8, 10, 1500, 1500, ["kid", "is"])
        suite.set_reference(ref)
        suite.update(fake, logits)
        return suite.compute(seed=seed)

    seeded, free = [], []
    for state in (1, 2):
        torch.manual_seed(state)
        before = torch.get_rng_state()
        seeded.append(measure(7))
        assert torch.equal(torch.get_rng_state(), before)
        free.append(measure(None))
    assert seeded[0] == seeded[1]
    assert free[0]["kid"] != free[1]["kid"] and free[0]["is"] != free[1]["is"]

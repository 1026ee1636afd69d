"""Every objective in ganbench.losses against values computed by hand."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
from torch.testing import assert_close

from ganbench import GanbenchError
from ganbench import losses as L

REAL = torch.tensor([1.0, -2.0], dtype=torch.float64)
FAKE = torch.tensor([0.5, -1.0], dtype=torch.float64)


def sp(v: float) -> float:
    """softplus by hand."""
    return math.log1p(math.exp(v))


def close(actual: torch.Tensor, expected: float) -> None:
    assert actual.shape == ()
    assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=1e-12, atol=1e-12)


def test_table_has_exactly_the_literal_names() -> None:
    assert set(L.LOSSES) == set(get_args(L.LossName))
    assert set(L.FDIVERGENCES) == set(get_args(L.FDivergenceName))
    assert L.LOSSES["hinge"] == L.Objective(L.d_hinge, L.g_hinge)
    assert {name for name, obj in L.LOSSES.items() if obj.g_needs_real} == {"softmax"}


def test_unknown_loss_is_a_one_line_user_error() -> None:
    with pytest.raises(GanbenchError, match=r"^loss='nope' is not a loss; choose one of: ns, minimax, hinge"):
        L.get_objective("nope")
    with pytest.raises(GanbenchError, match="divergence='tv'"):
        L.d_fgan(REAL, FAKE, divergence="tv")
    with pytest.raises(GanbenchError, match="kernel='poly'.*rq, rbf"):
        L.mmd2_unbiased(REAL[:, None], FAKE[:, None], kernel="poly")


def test_ns_and_minimax() -> None:
    d = (sp(-1.0) + sp(2.0)) / 2 + (sp(0.5) + sp(-1.0)) / 2
    close(L.d_ns(REAL, FAKE), d)
    close(L.d_minimax(REAL, FAKE), d)
    close(L.g_ns(FAKE), (sp(-0.5) + sp(1.0)) / 2)
    close(L.g_minimax(FAKE), -(sp(0.5) + sp(-1.0)) / 2)
    # minimax G loss is mean log(1 - sigmoid(l))
    close(L.g_minimax(FAKE), sum(math.log(1 - 1 / (1 + math.exp(-v))) for v in (0.5, -1.0)) / 2)
    # (N, 1) outputs give the same value as (N,)
    close(L.d_ns(REAL[:, None], FAKE[:, None]), d)


def test_one_sided_label_smoothing_target() -> None:
    t = 0.9
    real_part = sum(t * sp(-v) + (1 - t) * sp(v) for v in (1.0, -2.0)) / 2
    close(L.d_ns(REAL, FAKE, real_target=t), real_part + (sp(0.5) + sp(-1.0)) / 2)


def test_ns_is_stable_for_huge_logits() -> None:
    big = torch.tensor([200.0, -200.0], dtype=torch.float64)
    close(L.g_ns(big), 100.0)  # softplus(-200) ≈ 0, softplus(200) = 200
    close(L.g_minimax(big), -100.0)


def test_vanishing_gradient_of_minimax_vs_ns() -> None:
    logit = torch.tensor([-10.0], dtype=torch.float64, requires_grad=True)
    (g_mm,) = torch.autograd.grad(L.g_minimax(logit), logit)
    (g_ns,) = torch.autograd.grad(L.g_ns(logit), logit)
    sig = 1 / (1 + math.exp(10.0))  # sigmoid(-10) = 4.5398e-05
    # d/dl [-softplus(l)] = -sigmoid(l): vanishes as D(G(z)) → 0
    close(g_mm[0], -sig)
    assert abs(g_mm.item()) < 1e-4
    # d/dl [softplus(-l)] = -sigmoid(-l) = -(1 - sigmoid(l)) ≈ -1
    close(g_ns[0], -(1 - sig))


def test_hinge_wasserstein_ls() -> None:
    close(L.d_hinge(REAL, FAKE), (0.0 + 3.0) / 2 + (1.5 + 0.0) / 2)
    close(L.g_hinge(FAKE), 0.25)
    close(L.d_wasserstein(REAL, FAKE), -0.25 - (-0.5))
    close(L.g_wasserstein(FAKE), 0.25)
    close(L.d_ls(REAL, FAKE), 0.5 * (0 + 9) / 2 + 0.5 * (0.25 + 1) / 2)
    close(L.g_ls(FAKE), 0.5 * (0.25 + 4) / 2)
    # the a=-1, b=1, c=0 coding of Mao et al.
    close(L.d_ls(REAL, FAKE, a=-1.0, b=1.0), 0.5 * (0 + 9) / 2 + 0.5 * (2.25 + 0) / 2)
    close(L.g_ls(FAKE, c=0.0), 0.5 * (0.25 + 1) / 2)


def test_softmax_gan() -> None:
    lse = math.log(math.exp(1.0) + math.exp(-2.0) + math.exp(0.5) + math.exp(-1.0))
    close(L.d_softmax(REAL, FAKE), -(1.0 - 2.0) / 2 + lse)
    close(L.g_softmax(FAKE, REAL), -(1.0 - 2.0 + 0.5 - 1.0) / 4 + lse)
    # same thing as cross-entropy of the batch softmax against the targets
    logp = torch.log_softmax(torch.cat([REAL, FAKE]), 0)
    close(L.d_softmax(REAL, FAKE), float(-(logp[:2] * 0.5).sum()))
    close(L.g_softmax(FAKE, REAL), float(-(logp * 0.25).sum()))
    with pytest.raises(ValueError, match="real="):
        L.g_softmax(FAKE)


# Nowozin et al. 2016, Table 2, written out with math
HAND = {
    "kl": (lambda v: v, lambda t: math.exp(t - 1)),
    "reverse_kl": (lambda v: -math.exp(-v), lambda t: -1 - math.log(-t)),
    "js": (lambda v: math.log(2) - math.log(1 + math.exp(-v)), lambda t: -math.log(2 - math.exp(t))),
    "pearson": (lambda v: v, lambda t: t * t / 4 + t),
    "hellinger": (lambda v: 1 - math.exp(-v), lambda t: t / (1 - t)),
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_fgan_matches_table_2(name: str) -> None:
    act, conj = HAND[name]
    d = -(sum(act(v) for v in (1.0, -2.0)) / 2 - sum(conj(act(v)) for v in (0.5, -1.0)) / 2)
    g = -sum(act(v) for v in (0.5, -1.0)) / 2
    obj = L.LOSSES[f"fgan_{name}"]
    close(obj.d(REAL, FAKE), d)
    close(obj.g(FAKE), g)
    close(L.d_fgan(REAL, FAKE, divergence=name), d)
    fd = L.FDIVERGENCES[name]
    v = torch.linspace(-3, 3, 13, dtype=torch.float64)
    assert_close(fd.conjugate_of_activation(v), fd.conjugate(fd.activation(v)), rtol=1e-12, atol=1e-12)


def test_fgan_js_is_the_gan_discriminator_loss_minus_2_log_2() -> None:
    close(L.LOSSES["fgan_js"].d(REAL, FAKE), float(L.d_ns(REAL, FAKE)) - 2 * math.log(2))
    # and stays finite where exp(t) of the plain composition would overflow 2 - e^t
    assert torch.isfinite(L.d_fgan(torch.tensor([50.0]), torch.tensor([60.0]), "js")).item() is True


def test_ebgan_and_pullaway() -> None:
    real_e = torch.tensor([0.5, 1.5], dtype=torch.float64)
    fake_e = torch.tensor([0.2, 3.0], dtype=torch.float64)
    close(L.d_ebgan(real_e, fake_e, margin=1.0), 1.0 + (0.8 + 0.0) / 2)
    close(L.g_ebgan(fake_e), 1.6)
    close(L.pullaway_term(torch.eye(3, dtype=torch.float64)), 0.0)
    close(L.pullaway_term(torch.tensor([[1.0, 2.0]] * 4, dtype=torch.float64)), 1.0)
    # cos² = 1/2 between the two: (0.5 + 0.5) / (2·1)
    close(L.pullaway_term(torch.tensor([[1.0, 0.0], [3.0, 3.0]], dtype=torch.float64)), 0.5)
    # embeddings of any shape are flattened per sample
    close(L.pullaway_term(torch.eye(4, dtype=torch.float64).reshape(4, 2, 2)), 0.0)


def test_began() -> None:
    real_e = torch.tensor([0.5, 1.5], dtype=torch.float64)
    fake_e = torch.tensor([0.2, 3.0], dtype=torch.float64)
    close(L.d_began(real_e, fake_e, k=0.25), 1.0 - 0.25 * 1.6)
    close(L.g_began(fake_e), 1.6)
    k = L.began_k_update(0.25, real_e, fake_e, gamma=0.5, lambda_k=0.1)
    assert isinstance(k, float)
    assert k == pytest.approx(0.25 + 0.1 * (0.5 * 1.0 - 1.6), abs=1e-15)
    assert L.began_k_update(0.01, real_e, fake_e, gamma=0.5, lambda_k=1.0) == 0.0
    assert L.began_k_update(0.99, real_e, fake_e, gamma=10.0, lambda_k=1.0) == 1.0
    close(L.began_convergence(real_e, fake_e, gamma=0.5), 1.0 + abs(0.5 - 1.6))


def test_began_k_stays_in_unit_interval() -> None:
    g = torch.Generator().manual_seed(0)
    k, ks = 0.0, []
    for step in range(200):
        # first G lags (fake energies high: k falls), then G leads (fake energies low: k rises)
        real_e = torch.rand(8, generator=g, dtype=torch.float64) * 3
        fake_e = torch.rand(8, generator=g, dtype=torch.float64) * 3 + (1.0 if step < 100 else -2.0)
        new = L.began_k_update(k, real_e, fake_e, gamma=0.7, lambda_k=0.5)
        raw = k + 0.5 * (0.7 * real_e.mean().item() - fake_e.mean().item())
        assert new == min(1.0, max(0.0, raw))
        k = new
        ks.append(k)
    assert all(0.0 <= v <= 1.0 for v in ks)
    assert min(ks) == 0.0 and max(ks) == 1.0  # both clips were hit


def test_magan_margin_rule() -> None:
    assert L.magan_margin_update(2.0, 1.0, 1.5) == 1.0  # real below margin and below fake: shrink
    assert L.magan_margin_update(2.0, 1.0, 0.5) == 2.0  # real above fake: keep
    assert L.magan_margin_update(2.0, 3.0, 5.0) == 2.0  # real above margin: keep
    assert L.magan_margin_update(2.0, torch.tensor(1.25), torch.tensor(4.0)) == 1.25


def test_loss_sensitive() -> None:
    real_l = torch.tensor([0.5, 1.5], dtype=torch.float64)
    fake_l = torch.tensor([0.2, 3.0], dtype=torch.float64)
    delta = torch.tensor([1.0, 0.5], dtype=torch.float64)
    close(L.d_loss_sensitive(real_l, fake_l, delta, lam=2.0), 1.0 + 2.0 * (1.3 + 0.0) / 2)
    close(L.d_loss_sensitive(real_l, fake_l, 0.0, lam=1.0), 1.0 + (0.3 + 0.0) / 2)
    close(L.g_loss_sensitive(fake_l), 1.6)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 0.0], [3.0, 6.0]])
    assert torch.equal(L.ls_margin(x, y), torch.tensor([1.5, 1.0]))
    assert torch.equal(L.ls_margin(x.view(2, 1, 1, 2), y.view(2, 1, 1, 2)), torch.tensor([1.5, 1.0]))


def mmd2_loops(x: torch.Tensor, y: torch.Tensor, k) -> float:
    """The unbiased MMD² written as three double loops."""
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def rq(a: torch.Tensor, b: torch.Tensor) -> float:
    d2 = float(((a - b) ** 2).sum())
    return sum((1 + d2 / (2 * al)) ** -al for al in (0.2, 0.5, 1.0, 2.0, 5.0))


def rbf(a: torch.Tensor, b: torch.Tensor) -> float:
    d2 = float(((a - b) ** 2).sum())
    return sum(math.exp(-d2 / (2 * s * s)) for s in (1.0, 2.0, 4.0, 8.0, 16.0))


@pytest.mark.parametrize(("kernel", "k"), [("rq", rq), ("rbf", rbf)])
def test_mmd2_equals_double_loop(kernel: str, k) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.5
    close(L.mmd2_unbiased(x, y, kernel=kernel), mmd2_loops(x, y, k))
    close(L.d_mmd(x, y, kernel=kernel), -mmd2_loops(x, y, k))
    close(L.g_mmd(y, x, kernel=kernel), mmd2_loops(x, y, k))


def test_mmd2_tiny_closed_form() -> None:
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    e = math.exp
    expected = e(-0.5) + e(-2.0) - 2 * (1 + e(-2.0) + 2 * e(-0.5)) / 4
    close(L.mmd2_unbiased(x, y, kernel="rbf", sigmas=(1.0,)), expected)
    # rational quadratic with α = 1: k = 1 / (1 + d²/2)
    expected_rq = 1 / 1.5 + 1 / 3 - 2 * (1 + 1 / 3 + 2 / 1.5) / 4
    close(L.mmd2_unbiased(x, y, kernel="rq", alphas=(1.0,)), expected_rq)


def test_mmd2_matches_the_population_value_for_gaussians() -> None:
    # For N(0, I_d) against N(μ, I_d) and k = exp(-‖a-b‖²/(2σ²)):
    # MMD² = 2(σ²/(σ²+2))^{d/2}(1 - exp(-‖μ‖²/(2(σ²+2)))), and 0 for μ = 0.
    g = torch.Generator().manual_seed(0)
    n, d, s = 1500, 2, 1.0
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    mu = torch.tensor([1.0, 1.0], dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64) + mu
    pop = 2 * (s * s / (s * s + 2)) ** (d / 2) * (1 - math.exp(-2.0 / (2 * (s * s + 2))))
    same = L.mmd2_unbiased(x, x2, kernel="rbf", sigmas=(s,))
    shifted = L.mmd2_unbiased(x, y, kernel="rbf", sigmas=(s,))
    assert_close(same, torch.tensor(0.0, dtype=torch.float64), rtol=0, atol=3e-3)
    # the estimator's standard deviation is ≈ 5e-4 under the null and ≈ 9e-3 here (n = 1500)
    assert_close(shifted, torch.tensor(pop, dtype=torch.float64), rtol=0, atol=3e-2)
    assert pop == pytest.approx(2 / 3 * (1 - math.exp(-1 / 3)), abs=1e-15)


def test_mmd_gradient_is_finite_at_coincident_points() -> None:
    x = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    y = torch.ones(3, 2, dtype=torch.float64)
    L.g_mmd(x, y).backward()
    assert torch.isfinite(x.grad).all().item() is True

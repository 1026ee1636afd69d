"""Gradient penalties on critics whose input gradient is known in closed form."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from ganbench import GanbenchError
from ganbench import regularizers as R

W_BIG = torch.tensor([1.0, -2.0, 0.5, 2.0, 0.0, 1.0], dtype=torch.float64)  # ‖w‖ = √10.25 = 3.2016
W_SMALL = torch.tensor([0.1, 0.2, -0.2, 0.0, 0.4, 0.0], dtype=torch.float64)  # ‖w‖ = 0.5


def linear_critic(w: torch.Tensor):
    """D(x) = w·flatten(x): ∇_x D = w for every x."""
    return lambda x: x.flatten(1) @ w.to(x.dtype)


def images(seed: int, n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 2, 3, generator=g, dtype=torch.float64)


def close(actual: torch.Tensor, expected: torch.Tensor | float) -> None:
    assert actual.shape == ()
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert_close(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("w", [W_BIG, W_SMALL])
def test_penalties_of_a_linear_critic(w: torch.Tensor) -> None:
    D, real, fake = linear_critic(w), images(0), images(1)
    norm = w.norm()
    lam, gamma = 10.0, 5.0
    close(lam * R.gradient_penalty(D, real, fake), lam * (norm - 1) ** 2)
    close(R.gradient_penalty(D, real, fake, center=0.0), norm**2)
    close(gamma / 2 * R.r1_penalty(D, real), gamma / 2 * norm**2)
    close(R.r2_penalty(D, fake), norm**2)
    close(R.dragan_penalty(D, real), (norm - 1) ** 2)
    close(R.dragan_penalty(D, real, k=2.0, c=3.0), (norm - 2) ** 2)
    close(R.lipschitz_penalty(D, real, fake), torch.clamp(norm - 1, min=0) ** 2)
    for name, expected in {"none": 0.0, "gp": (norm - 1) ** 2, "dragan": (norm - 1) ** 2, "r1": norm**2,
                           "r2": norm**2, "lp": torch.clamp(norm - 1, min=0) ** 2}.items():
        close(R.PENALTIES[name](D, real, fake).double(), expected)


def test_lp_is_zero_for_a_gentle_critic_and_gp_is_not() -> None:
    D, real, fake = linear_critic(W_SMALL), images(0), images(1)
    close(R.lipschitz_penalty(D, real, fake), 0.0)
    close(R.gradient_penalty(D, real, fake), 0.25)


@pytest.mark.parametrize("name", ["gp", "dragan", "r1", "lp"])
def test_penalty_gradient_wrt_the_critic_weights(name: str) -> None:
    w = W_BIG.clone().requires_grad_(True)
    penalty = R.PENALTIES[name](lambda x: x.flatten(1) @ w, images(2), images(3))
    (grad,) = torch.autograd.grad(penalty, w)
    norm = W_BIG.norm()
    expected = 2 * W_BIG if name == "r1" else 2 * (norm - 1) * W_BIG / norm
    assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_gp_uses_per_sample_interpolates() -> None:
    # D(x) = ½‖x‖²: ∇D(x̂) = x̂, so the penalty is E[(‖αx + (1-α)y‖ - 1)²] with α drawn per sample
    real, fake = images(4, n=5), images(5, n=5)
    pen = R.gradient_penalty(lambda x: 0.5 * x.flatten(1).pow(2).sum(1), real, fake,
                             generator=torch.Generator().manual_seed(7))
    alpha = torch.rand(5, 1, 1, 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x_hat = alpha * real + (1 - alpha) * fake
    close(pen, ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean())


def test_r1_of_a_quadratic_critic_is_the_mean_squared_norm_of_the_data() -> None:
    real = images(6)
    expected = real.flatten(1).pow(2).sum(1).mean()
    close(R.r1_penalty(lambda x: 0.5 * x.flatten(1).pow(2).sum(1), real), expected)


def test_conditional_critic_through_a_lambda() -> None:
    y = torch.tensor([0, 1, 1, 0])
    table = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 3.0, 0, 0, 0, 0]], dtype=torch.float64)
    D = lambda x: (x.flatten(1) * table[y]).sum(1)  # ‖∇‖ = 1 for class 0, 3 for class 1
    close(R.r1_penalty(D, images(0)), (1 + 9 + 9 + 1) / 4)
    close(R.gradient_penalty(D, images(0), images(1)), (0 + 4 + 4 + 0) / 4)


def test_penalties_run_in_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    disc = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    real = torch.randn(4, 1, 2, 3)
    fake_bf16 = torch.randn(4, 1, 2, 3).to(torch.bfloat16)  # a generator output under autocast
    for name in ["gp", "dragan", "r1", "r2", "lp", "none"]:
        torch.manual_seed(1)
        reference = R.PENALTIES[name](disc, real, fake_bf16.float())
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pen = R.PENALTIES[name](disc, real, fake_bf16)
        assert pen.dtype == torch.float32
        # computed under bf16 autocast, the same penalty differs from the float32 one by ~3e-4 (relative)
        assert_close(pen, reference, rtol=1e-6, atol=1e-7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert disc(real).dtype == torch.bfloat16  # autocast was really on outside the penalty
        r1 = R.r1_penalty(disc, real.to(torch.bfloat16))
    assert r1.dtype == torch.float32
    assert_close(r1, R.r1_penalty(disc, real.to(torch.bfloat16).float()), rtol=1e-6, atol=1e-7)


def test_penalty_backpropagates_into_module_parameters() -> None:
    lin = nn.Linear(6, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(W_BIG)
    D = lambda x: lin(x.flatten(1))
    R.gradient_penalty(D, images(0), images(1)).backward()
    norm = W_BIG.norm()
    assert_close(lin.weight.grad[0], 2 * (norm - 1) * W_BIG / norm, rtol=1e-12, atol=1e-12)


def test_clip_weights() -> None:
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.02, 0.009], [-0.3, 0.01, -0.01]]))
        lin.bias.copy_(torch.tensor([0.0, 2.0]))
    R.clip_weights_(lin, 0.01)
    assert torch.equal(lin.weight, torch.tensor([[0.01, -0.01, 0.009], [-0.01, 0.01, -0.01]]))
    assert torch.equal(lin.bias, torch.tensor([0.0, 0.01]))
    assert all(bool(((p >= -0.01) & (p <= 0.01)).all()) for p in lin.parameters())


def test_table_and_error() -> None:
    assert set(R.PENALTIES) == set(get_args(R.PenaltyName))
    zero = R.PENALTIES["none"](linear_critic(W_BIG), images(0), images(1))
    assert zero.dtype == torch.float32 and zero.shape == () and zero.item() == 0.0
    with pytest.raises(GanbenchError, match=r"^penalty='wgp' is not a penalty; choose one of: none, gp, "):
        R.get_penalty("wgp")

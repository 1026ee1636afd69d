"""Training tricks (ganbench.tricks) and trick layers (ganbench.nn.layers) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from ganbench import GanbenchError
from ganbench.losses import d_ns
from ganbench.nn.layers import MinibatchDiscrimination, MinibatchStdDev, VirtualBatchNorm, reference_pass
from ganbench.tricks import (
    HistoricalAverage,
    add_instance_noise,
    feature_matching_loss,
    instance_noise_sigma,
    smoothed_real_target,
)

# ----------------------------------------------------------------------------- instance noise


@pytest.mark.parametrize(("step", "sigma"), [(0, 0.2), (25, 0.15), (50, 0.1), (99, 0.002), (100, 0.0),
                                             (1000, 0.0)])
def test_linear_instance_noise_schedule(step: int, sigma: float) -> None:
    assert instance_noise_sigma(step, 0.2, 100) == pytest.approx(sigma, abs=1e-15)


@pytest.mark.parametrize(("step", "sigma"), [(0, 0.2), (50, 0.02), (25, 0.2 * 0.01**0.25), (100, 0.0)])
def test_exponential_instance_noise_schedule(step: int, sigma: float) -> None:
    assert instance_noise_sigma(step, 0.2, 100, schedule="exponential") == pytest.approx(sigma, abs=1e-15)


def test_instance_noise_off_and_bad_schedule() -> None:
    assert instance_noise_sigma(0, 0.2, 0) == 0.0
    assert instance_noise_sigma(10, 0.0, 100) == 0.0
    msg = r"^schedule='cosine' is not a noise schedule; choose one of: linear, exponential$"
    with pytest.raises(GanbenchError, match=msg):
        instance_noise_sigma(0, 0.1, 10, schedule="cosine")


def test_add_instance_noise() -> None:
    x = torch.arange(6.0).view(2, 3)
    noisy = add_instance_noise(x, 0.5, generator=torch.Generator().manual_seed(3))
    expected = x + 0.5 * torch.randn(2, 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(noisy, expected)
    assert add_instance_noise(x, 0.0) is x


# ----------------------------------------------------------------------------- feature matching, smoothing


def test_feature_matching_loss_and_its_gradient() -> None:
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)  # mean [2, 3]
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)  # mean [1, 1]
    loss = feature_matching_loss(real, fake)
    assert loss.item() == 5.0  # 1² + 2²
    loss.backward()
    assert real.grad is None  # the real side is a constant target
    # d/df_i ‖m_r - m_f‖² = -2(m_r - m_f)/N
    assert torch.equal(fake.grad, torch.tensor([[-1.0, -2.0], [-1.0, -2.0]]))


def test_feature_matching_flattens_feature_maps() -> None:
    real = torch.ones(3, 2, 2, 2)
    fake = torch.zeros(3, 2, 2, 2)
    assert feature_matching_loss(real, fake).item() == 8.0


def test_label_smoothing_changes_d_ns_to_the_target_09_closed_form() -> None:
    t = smoothed_real_target(0.1)
    assert t == 0.9
    real = torch.tensor([2.0, -1.0], dtype=torch.float64)
    fake = torch.tensor([0.0], dtype=torch.float64)
    sp = lambda v: math.log1p(math.exp(v))
    # BCE with target t: -(t log σ(l) + (1-t) log(1-σ(l))) = t·softplus(-l) + (1-t)·softplus(l)
    expected = (0.9 * sp(-2) + 0.1 * sp(2) + 0.9 * sp(1) + 0.1 * sp(-1)) / 2 + sp(0.0)
    assert_close(d_ns(real, fake, real_target=t), torch.tensor(expected, dtype=torch.float64),
                 rtol=1e-12, atol=1e-12)
    assert smoothed_real_target(0.0) == 1.0
    with pytest.raises(GanbenchError, match="label_smoothing=1.5"):
        smoothed_real_target(1.5)


# ----------------------------------------------------------------------------- historical averaging


def small_linear() -> nn.Linear:
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
        lin.bias.copy_(torch.tensor([0.5]))
    return lin


def test_historical_average_penalty() -> None:
    lin, ha = small_linear(), HistoricalAverage()
    assert ha.penalty(lin).item() == 0.0  # no history yet
    ha.update(lin)
    assert ha.penalty(lin).item() == 0.0  # θ̄ = θ after one update
    with torch.no_grad():
        for p in lin.parameters():
            p.add_(1.0)
    assert ha.penalty(lin).item() == 3.0  # three parameters, each 1 away from the mean
    ha.update(lin)  # θ̄ = (θ0 + θ1)/2, θ = θ1: each parameter 0.5 away
    assert ha.penalty(lin).item() == 0.75
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[4.0, 0.0]]))
    # θ̄ = [[1.5, -1.5]], [1.0]: (4 - 1.5)² + (0 + 1.5)² + (1.5 - 1.0)²
    pen = ha.penalty(lin)
    assert pen.item() == 6.25 + 2.25 + 0.25
    pen.backward()
    assert torch.equal(lin.weight.grad, torch.tensor([[5.0, 3.0]]))  # 2(θ - θ̄)
    assert torch.equal(lin.bias.grad, torch.tensor([1.0]))


def test_historical_average_checkpoint_round_trip() -> None:
    lin, ha = small_linear(), HistoricalAverage()
    ha.update(lin)
    with torch.no_grad():
        lin.weight.mul_(3.0)
    ha.update(lin)
    restored = HistoricalAverage()
    restored.load_state_dict(ha.state_dict())
    assert restored.count == 2
    assert restored.penalty(lin).item() == ha.penalty(lin).item() == 1.0 + 4.0  # (3-2)² + (-6+4)²
    restored.update(lin)  # θ̄ = (θ0 + 2θ1)/3 = [[7/3, -14/3]]
    assert_close(restored.penalty(lin), torch.tensor((2 / 3) ** 2 + (4 / 3) ** 2), rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------- minibatch discrimination


def scalar_mbd() -> MinibatchDiscrimination:
    """One input feature, one kernel of dimension 1, T = 1: M_i = x_i."""
    layer = MinibatchDiscrimination(1, num_kernels=1, kernel_dim=1)
    with torch.no_grad():
        layer.T.fill_(1.0)
    return layer


def test_minibatch_discrimination_values_depend_on_the_rest_of_the_batch() -> None:
    layer = scalar_mbd()
    e = math.exp
    out = layer(torch.tensor([[0.0], [1.0], [3.0]]))
    assert_close(out[:, 0], torch.tensor([0.0, 1.0, 3.0]))
    assert_close(out[0, 1], torch.tensor(1 + e(-1) + e(-3)), rtol=1e-6, atol=0)
    # the same first sample in another batch: o(x_0) changes
    out2 = layer(torch.tensor([[0.0], [2.0], [3.0]]))
    assert_close(out2[0, 1], torch.tensor(1 + e(-2) + e(-3)), rtol=1e-6, atol=0)
    assert out2[0, 1].item() != out[0, 1].item()
    assert layer(torch.tensor([[5.0]]))[0, 1].item() == 1.0  # alone: only exp(0)


def test_minibatch_discrimination_shape_and_l1_over_kernel_dim() -> None:
    layer = MinibatchDiscrimination(8, num_kernels=16, kernel_dim=3)
    x = torch.randn(5, 8)
    out = layer(x)
    assert out.shape == (5, 8 + 16) and layer.num_kernels == 16
    assert torch.equal(out[:, :8], x)
    m = (x @ layer.T).view(5, 16, 3)
    expected = torch.stack([sum(torch.exp(-(m[i] - m[j]).abs().sum(-1)) for j in range(5)) for i in range(5)])
    assert_close(out[:, 8:], expected, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- minibatch stddev


def test_minibatch_stddev_feature_maps() -> None:
    x = torch.zeros(4, 2, 2, 2, dtype=torch.float64)
    x[2] = 2.0  # group {0, 2}: every feature has population variance 1
    x[3, 0] = 4.0  # group {1, 3}: channel 0 has variance 4, channel 1 variance 0
    out = MinibatchStdDev(group_size=2)(x)
    assert out.shape == (4, 3, 2, 2)
    assert torch.equal(out[:, :2], x)
    eps = 1e-8
    g02 = math.sqrt(1 + eps)
    g13 = (4 * math.sqrt(4 + eps) + 4 * math.sqrt(eps)) / 8
    expected = torch.tensor([g02, g13, g02, g13], dtype=torch.float64).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    assert_close(out[:, 2:], expected, rtol=1e-12, atol=1e-12)


def test_minibatch_stddev_vectors_and_uneven_batches() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 3.0], [2.0, 6.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
                     dtype=torch.float64)
    # N = 6, group_size 4 → groups of 3: {0, 2, 4} and {1, 3, 5}
    out = MinibatchStdDev(group_size=4)(x)
    assert out.shape == (6, 3)
    var_a = torch.tensor([[0.0, 0.0], [2.0, 6.0], [0.0, 0.0]], dtype=torch.float64).var(0, correction=0)
    var_b = torch.tensor([[1.0, 3.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64).var(0, correction=0)
    a, b = (var_a + 1e-8).sqrt().mean().item(), (var_b + 1e-8).sqrt().mean().item()
    assert_close(out[:, 2], torch.tensor([a, b, a, b, a, b], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # sqrt(8/9) and sqrt(72/9) averaged: the population std by hand
    assert a == pytest.approx((math.sqrt(8 / 9 + 1e-8) + math.sqrt(8 + 1e-8)) / 2, abs=1e-12)


# ----------------------------------------------------------------------------- virtual batch norm


def test_vbn_closed_form_on_vectors() -> None:
    vbn = VirtualBatchNorm(1, eps=0.0).double()
    with reference_pass(vbn):
        ref_out = vbn(torch.tensor([[0.0], [2.0]], dtype=torch.float64))  # mean 1, E[r²] = 2, var 1
    assert torch.equal(ref_out, torch.tensor([[-1.0], [1.0]], dtype=torch.float64))
    # x = 4 with weight 1/3: μ = (2·1 + 4)/3 = 2, E[x²] = (2·2 + 16)/3 = 20/3, σ² = 20/3 - 4 = 8/3
    out = vbn(torch.tensor([[4.0]], dtype=torch.float64))
    assert_close(out, torch.tensor([[2.0 / math.sqrt(8 / 3)]], dtype=torch.float64), rtol=1e-14, atol=0)
    with torch.no_grad():
        vbn.weight.fill_(3.0)
        vbn.bias.fill_(-1.0)
    assert_close(vbn(torch.tensor([[4.0]], dtype=torch.float64)),
                 torch.tensor([[3 * 2.0 / math.sqrt(8 / 3) - 1]], dtype=torch.float64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("shape", [(3,), (3, 4, 4)])
def test_vbn_output_of_an_example_does_not_depend_on_its_batch(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1) if len(shape) == 3 else nn.Linear(3, 3),
                          VirtualBatchNorm(3), nn.ReLU())
    with reference_pass(model):
        model(torch.randn(7, *shape))
    x = torch.randn(5, *shape)
    batch_out = model(x)
    for i in range(5):
        alone = model(x[i:i + 1])
        others = torch.cat([torch.randn(3, *shape) * 10, x[i:i + 1], torch.randn(2, *shape)])
        assert_close(alone[0], batch_out[i], rtol=1e-6, atol=1e-6)
        assert_close(model(others)[3], batch_out[i], rtol=1e-6, atol=1e-6)


def test_vbn_needs_a_reference_pass() -> None:
    vbn = VirtualBatchNorm(2)
    with pytest.raises(RuntimeError, match="reference_pass"):
        vbn(torch.zeros(3, 2))
    model = nn.Sequential(nn.Sequential(vbn))  # found when nested
    with reference_pass(model):
        assert vbn.recording is True
        model(torch.randn(4, 2))
    assert vbn.recording is False
    assert vbn.ref_count == 4
    assert vbn(torch.zeros(3, 2)).shape == (3, 2)


@pytest.mark.parametrize("detach", [True, False])
def test_vbn_reference_gradient(detach: bool) -> None:
    vbn = VirtualBatchNorm(2)
    ref = torch.randn(6, 2, requires_grad=True)
    with reference_pass(vbn, detach=detach):
        vbn(ref)
    vbn(torch.randn(3, 2)).pow(2).sum().backward()
    assert (ref.grad is None) is detach
    assert vbn.weight.grad.shape == (2,)

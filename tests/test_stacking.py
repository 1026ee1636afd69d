"""Stacked forms are found by registration: a new network batches once its class is registered."""

import copy

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import orthogonal

from ganbench import GanbenchError
from ganbench.nn import stacking
from ganbench.nn.stacking import container, stack_modules


class TwoLayers(nn.Module):
    """A network defined outside ganbench's own: row-wise code, every parameter in a child module."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.ReLU())
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inner(x)) * 2


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(stacking, "LAYERS", dict(stacking.LAYERS))
    return stacking.LAYERS


def test_an_unregistered_network_refuses_and_a_registered_one_computes_each_replica(registry):
    nets = []
    for r in range(3):
        torch.manual_seed(r)
        nets.append(TwoLayers())
    with pytest.raises(GanbenchError, match="TwoLayers cannot be batched .*no stacked form registered"):
        stack_modules(nets)
    container(TwoLayers)
    stacked = stack_modules([copy.deepcopy(n) for n in nets])
    x = torch.randn(3 * 4, 3)
    ref = torch.cat([n(x[4 * r:4 * r + 4]) for r, n in enumerate(nets)])
    torch.testing.assert_close(stacked(x), ref, rtol=1e-5, atol=1e-6)


def test_a_container_with_its_own_parameters_refuses(registry):
    class Scaled(TwoLayers):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

    container(Scaled)
    with pytest.raises(GanbenchError, match="Scaled holds its own parameters"):
        stack_modules([Scaled(), Scaled()])


def test_a_reparametrization_without_a_stacked_form_refuses_naming_it():
    layers = [orthogonal(nn.Linear(3, 3)) for _ in range(2)]
    with pytest.raises(GanbenchError, match="_Orthogonal re-parametrization cannot be batched .*no stacked form"):
        stack_modules(layers)

"""Stacked forms: how N networks of the same architecture (each built from its own seed) become one
population module (:mod:`ganbench.nn.population`) computing all of them on folded batches.

Every module type has its stacked form registered next to where it is defined: torch's layers that
hold parameters or reduce over the batch here, beside their population layers; ganbench's networks with
the :func:`container` decorator (their own code is row-wise, their parameters sit in child modules); a
weight re-parametrization in :data:`PARAMETRIZATIONS`. :func:`stack_modules` looks the type up, so a new
norm or network gets its population form by registering one, not by editing this module.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm, _WeightNorm

from ganbench import GanbenchError
from ganbench.nn.population import (
    BatchedSpectralNorm,
    BatchedWeightNorm,
    PopulationBatchNorm,
    PopulationConv2d,
    PopulationEmbedding,
    PopulationGroupNorm,
    PopulationInstanceNorm2d,
    PopulationLayerNorm,
    PopulationLinear,
)


def _stack_weighted(mods: Sequence[nn.Linear | nn.Conv2d | nn.ConvTranspose2d | nn.Embedding]) -> nn.Module:
    """A linear, convolution or embedding layer of every replica, with its weight re-parametrization
    batched (the stacked form registered for it in :data:`PARAMETRIZATIONS`)."""
    m0 = mods[0]
    if isinstance(m0, nn.Embedding) and (m0.padding_idx is not None or m0.max_norm is not None or m0.sparse
                                         or m0.scale_grad_by_freq):
        raise GanbenchError("model.population > 1: an embedding with padding_idx, max_norm, sparse or "
                            "scale_grad_by_freq cannot be batched")
    form = None
    if parametrize.is_parametrized(m0, "weight"):
        chain = list(m0.parametrizations.weight)  # type: ignore[union-attr]
        if len(chain) != 1:
            raise GanbenchError("model.population > 1: a weight with several re-parametrizations cannot be batched")
        form = PARAMETRIZATIONS.get(type(chain[0]))
        refusal = form.refuses(chain[0]) if form is not None else "it has no stacked form registered"
        if refusal is not None:
            raise GanbenchError(f"model.population > 1: the {type(chain[0]).__name__} re-parametrization cannot "
                                f"be batched ({refusal})")
        weights = [form.weight(m.parametrizations.weight) for m in mods]  # type: ignore[union-attr]
    else:
        weights = [m.weight.detach() for m in mods]
    if isinstance(m0, nn.Conv2d | nn.ConvTranspose2d) and m0.padding_mode != "zeros":
        raise GanbenchError(f"model.population > 1: {m0.padding_mode} padding cannot be batched")
    layer: nn.Module
    if isinstance(m0, nn.Embedding):
        layer = PopulationEmbedding(torch.stack(weights))
    else:
        bias = torch.stack([m.bias.detach() for m in mods]) if m0.bias is not None else None
        layer = (PopulationLinear(torch.stack(weights), bias) if isinstance(m0, nn.Linear)
                 else PopulationConv2d(torch.stack(weights), bias, m0))
    if form is not None:
        form.attach(layer, [m.parametrizations.weight for m in mods], weights)  # type: ignore[union-attr]
    return layer


class StackedParametrization:
    """How N copies of one weight re-parametrization become one over the stacked weight: ``weight``
    reads a replica's unconstrained weight from its ``ParametrizationList``, ``attach`` registers the
    batched parametrization on the population layer and copies every replica's state into it, and
    ``refuses`` says why a particular instance cannot be batched (None: it can)."""

    def __init__(self, weight: Callable[[Any], torch.Tensor], attach: Callable[[nn.Module, list, list], None],
                 refuses: Callable[[nn.Module], str | None] = lambda p: None) -> None:
        self.weight, self.attach, self.refuses = weight, attach, refuses


def _attach_spectral(layer: nn.Module, chains: list, weights: list[torch.Tensor]) -> None:
    sn = [c[0] for c in chains]
    parametrize.register_parametrization(
        layer, "weight", BatchedSpectralNorm(torch.stack([s._u for s in sn]), torch.stack([s._v for s in sn]),
                                             eps=sn[0].eps, dim=sn[0].dim, n_power_iterations=sn[0].n_power_iterations),
        unsafe=True)  # unsafe: no trial forward, which would run a power iteration now


def _attach_weight_norm(layer: nn.Module, chains: list, weights: list[torch.Tensor]) -> None:
    parametrize.register_parametrization(layer, "weight", BatchedWeightNorm(), unsafe=True)
    with torch.no_grad():  # the exact g and v of every replica (right_inverse would recompute g)
        layer.parametrizations.weight.original0.copy_(
            torch.stack([c.original0.detach() for c in chains]))  # type: ignore[union-attr]
        layer.parametrizations.weight.original1.copy_(torch.stack(weights))  # type: ignore[union-attr]


#: weight re-parametrizations (the type of one entry of a ``ParametrizationList``) → their stacked form
PARAMETRIZATIONS: dict[type, StackedParametrization] = {
    _SpectralNorm: StackedParametrization(lambda chain: chain.original.detach(), _attach_spectral),
    _WeightNorm: StackedParametrization(
        lambda chain: chain.original1.detach(), _attach_weight_norm,
        lambda p: None if p.dim == 0 else f"weight norm over dim {p.dim}; populations batch dim 0"),
}

#: module types → how N of them (same architecture, own weights) become one population module. The
#: torch layers that hold parameters or reduce over the batch are registered here, next to their
#: population forms; ganbench's networks register themselves where they are defined
#: (:func:`container`, :func:`rowwise`, :func:`stacked_form`)
LAYERS: dict[type, Callable[[Sequence[Any]], nn.Module]] = {
    nn.Linear: _stack_weighted,
    nn.Conv2d: _stack_weighted,
    nn.ConvTranspose2d: _stack_weighted,
    nn.Embedding: _stack_weighted,  # class-conditional norms and projections: one table per replica
    nn.BatchNorm1d: PopulationBatchNorm,
    nn.BatchNorm2d: PopulationBatchNorm,
    nn.LayerNorm: PopulationLayerNorm,
    nn.GroupNorm: PopulationGroupNorm,
    nn.InstanceNorm2d: PopulationInstanceNorm2d,
}


def stacked_form(cls: type, how: Callable[[Sequence[Any]], nn.Module]) -> None:
    """Register how N modules of type ``cls`` become one population module."""
    LAYERS[cls] = how


def _shared(mods: Sequence[nn.Module]) -> nn.Module:
    """A module without parameters that treats every row on its own: all replicas share it."""
    return copy.deepcopy(mods[0])


def rowwise(cls: type) -> type:
    """Class decorator: ``cls`` has no parameters and treats every row on its own, so one copy serves
    every replica of a population."""
    stacked_form(cls, _shared)
    return cls


def container(cls: type) -> type:
    """Class decorator: ``cls``'s own code is row-wise and all its parameters sit in child modules, so
    its population form is a copy whose children are stacked (:func:`stack_modules`)."""
    stacked_form(cls, _stack_children)
    return cls


def stack_modules(mods: Sequence[nn.Module]) -> nn.Module:
    """One module computing all of ``mods`` (same architecture, own weights) on folded batches, built
    by the stacked form registered for their type (:data:`LAYERS`)."""
    m0 = mods[0]
    base = type(m0).__bases__[0] if parametrize.is_parametrized(m0) else type(m0)
    how = LAYERS.get(base)
    if how is None:
        raise GanbenchError(f"model.population > 1: {type(m0).__name__} cannot be batched (it has no stacked form "
                            "registered in ganbench.nn.stacking; populations batch the MLP, CNN, DCGAN and ResNet "
                            "networks with norm none, batch, layer, instance, spectral or weight)")
    return how(mods)


def _stack_children(mods: Sequence[nn.Module]) -> nn.Module:
    """A container of every replica: a copy of the first whose child modules are stacked."""
    m0 = mods[0]
    if getattr(m0, "minibatch", None) is not None:
        raise GanbenchError("model.population > 1: minibatch features couple the samples of a batch and "
                            "cannot be batched yet; use model.minibatch none")
    if next(m0.named_parameters(recurse=False), None) is not None or next(m0.named_buffers(recurse=False), None):
        raise GanbenchError(f"model.population > 1: {type(m0).__name__} holds its own parameters")
    out = copy.copy(m0)
    out.__dict__ = dict(m0.__dict__)
    out._parameters, out._buffers = {}, {}
    out._modules = {name: (None if child is None else stack_modules([m._modules[name] for m in mods]))
                    for name, child in m0._modules.items()}
    return out


for _cls in (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Flatten, nn.Unflatten, nn.Upsample,
             nn.ReflectionPad2d):
    rowwise(_cls)
for _cls in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
    container(_cls)

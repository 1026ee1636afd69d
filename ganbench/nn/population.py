"""Populations: N independent replicas of a network as one module with a leading replica axis.

A population of N fits is not N modules: every parameter gets a leading axis of size N and each
layer computes all replicas at once (a batched matmul for linear layers; per-replica statistics
for batch and layer norm; a batched power iteration for spectral norm). Activations keep the
ordinary ``(batch, features)`` layout with the replicas *folded* into the batch: rows
``[r·B, (r+1)·B)`` belong to replica ``r``. So the containers of ganbench's networks (an MLP
generator's loop, a discriminator's ``features``/``head``) run unchanged, and only the layers that
hold parameters or reduce over the batch are replaced.

:func:`stack_modules` builds the population from N ordinary networks — each built from its own
seed — copying their parameters and buffers, so replica ``r`` starts exactly where an ordinary fit
with that seed starts. The replicas share no parameter, so a loss that is the *sum* of the
per-replica losses gives each replica exactly the gradient of its own fit.

:class:`ReplicaRNG` gives each replica its own ``torch.Generator``: latents, labels, instance noise
and the penalties' random interpolation are drawn per replica, so replica ``r`` sees the random
numbers of an ordinary fit with seed ``seed + r``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from ganbench import GanbenchError


class ReplicaRNG:
    """One ``torch.Generator`` per replica; draws come back folded, ``(N·n, *shape)``.

    With one replica a draw is exactly ``torch.randn(n, *shape, generator=g)``: an ordinary fit
    runs through the same calls.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def _draw(self, fn: Callable[..., torch.Tensor], rows: int, shape: tuple[int, ...], **kw: Any) -> torch.Tensor:
        n = len(self.generators)
        if rows % n:
            raise ValueError(f"{rows} rows cannot be split evenly over {n} replicas")
        per = rows // n
        draws = [fn((per, *shape), generator=g, **kw) for g in self.generators]
        return draws[0] if n == 1 else torch.cat(draws)

    def randn(self, rows: int, *shape: int, like: torch.Tensor) -> torch.Tensor:
        return self._draw(torch.randn, rows, shape, device=like.device, dtype=like.dtype)

    def rand(self, rows: int, *shape: int, like: torch.Tensor) -> torch.Tensor:
        return self._draw(torch.rand, rows, shape, device=like.device, dtype=like.dtype)

    def randint(self, high: int, rows: int, device: torch.device) -> torch.Tensor:
        return self._draw(lambda size, generator, **kw: torch.randint(high, size, generator=generator, **kw),
                          rows, (), device=device)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(x.shape[0], *x.shape[1:], like=x)

    def rand_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.rand(x.shape[0], *x.shape[1:], like=x)

    def state_dict(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def load_state_dict(self, states: list[torch.Tensor]) -> None:
        if len(states) != len(self.generators):
            raise GanbenchError(f"the checkpoint holds {len(states)} replica random streams, this run has "
                                f"{len(self.generators)} (model.population)")
        for g, s in zip(self.generators, states):
            g.set_state(s)


def replica_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(N·B, ...)`` → ``(N, B, ...)``: the replica axis unfolded from the batch."""
    return x.reshape(n, x.shape[0] // n, *x.shape[1:])


# --------------------------------------------------------------------------------------- layers
class BatchedSpectralNorm(nn.Module):
    """Spectral normalization of N weight matrices ``(N, out, in)`` at once (Miyato et al. 2018).

    The same arithmetic as ``torch.nn.utils.parametrizations.spectral_norm`` — one power iteration
    per forward in training mode, ``u``/``v`` kept as buffers, ``σ = uᵀ W v`` — with ``bmm`` over
    the replicas. Registered with :func:`torch.nn.utils.parametrize.register_parametrization`.
    """

    def __init__(self, u: torch.Tensor, v: torch.Tensor, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("_u", u.clone())
        self.register_buffer("_v", v.clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self._u.copy_(F.normalize(torch.bmm(weight, self._v.unsqueeze(2)).squeeze(2), dim=1, eps=self.eps))
                self._v.copy_(F.normalize(torch.bmm(weight.transpose(1, 2), self._u.unsqueeze(2)).squeeze(2),
                                          dim=1, eps=self.eps))
        u, v = self._u.clone(), self._v.clone()
        sigma = (u * torch.bmm(weight, v.unsqueeze(2)).squeeze(2)).sum(1)
        return weight / sigma[:, None, None]

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


class BatchedWeightNorm(nn.Module):
    """Weight normalization ``w = g · v / ‖v‖`` (Salimans & Kingma 2016) of N matrices at once."""

    def forward(self, weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
        return weight_v * (weight_g / weight_v.norm(dim=2, keepdim=True))

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return weight.norm(dim=2, keepdim=True), weight


class PopulationLinear(nn.Module):
    """N linear layers: weight ``(N, out, in)``, bias ``(N, out)``; ``x`` is ``(N·B, in)``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.replicas = weight.shape[0]  # not read from self.weight: each read of a
        # spectrally normalized weight runs a power iteration
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone()) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = replica_rows(x, self.replicas)
        w = self.weight.transpose(1, 2)
        out = torch.baddbmm(self.bias.unsqueeze(1), h, w) if self.bias is not None else torch.bmm(h, w)
        return out.reshape(x.shape[0], -1)


class PopulationBatchNorm1d(nn.Module):
    """Batch norm over each replica's own rows (statistics per replica), as ``nn.BatchNorm1d``."""

    def __init__(self, mods: Sequence[nn.BatchNorm1d]) -> None:
        super().__init__()
        m0 = mods[0]
        self.eps, self.momentum = m0.eps, m0.momentum
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in mods]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in mods]))
        self.register_buffer("running_mean", torch.stack([m.running_mean for m in mods]))
        self.register_buffer("running_var", torch.stack([m.running_var for m in mods]))
        self.register_buffer("num_batches_tracked", mods[0].num_batches_tracked.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        h = replica_rows(x, n)
        if self.training:
            mean = h.mean(1)
            var = h.var(1, unbiased=False)
            with torch.no_grad():
                b = h.shape[1]
                self.num_batches_tracked += 1
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * (b / max(b - 1, 1)), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        out = (h - mean[:, None]) * torch.rsqrt(var[:, None] + self.eps) * self.weight[:, None] + self.bias[:, None]
        return out.reshape(x.shape)


class PopulationLayerNorm(nn.Module):
    """Layer norm over each sample's features with a per-replica gain and bias, as ``nn.LayerNorm``."""

    def __init__(self, mods: Sequence[nn.LayerNorm]) -> None:
        super().__init__()
        self.normalized_shape, self.eps = mods[0].normalized_shape, mods[0].eps
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in mods]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in mods]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        h = replica_rows(F.layer_norm(x, self.normalized_shape, eps=self.eps), n)
        return (h * self.weight[:, None] + self.bias[:, None]).reshape(x.shape)


def _stack_linear(mods: Sequence[nn.Linear]) -> nn.Module:
    m0 = mods[0]
    kind = None
    if parametrize.is_parametrized(m0, "weight"):
        (p,) = m0.parametrizations.weight  # type: ignore[union-attr]
        kind = type(p).__name__
        if kind == "_SpectralNorm":
            weights = [m.parametrizations.weight.original.detach() for m in mods]  # type: ignore[union-attr]
        elif kind == "_WeightNorm":
            weights = [m.parametrizations.weight.original1.detach() for m in mods]  # type: ignore[union-attr]
        else:
            raise GanbenchError(f"model.population > 1: the {kind} re-parametrization cannot be batched")
    else:
        weights = [m.weight.detach() for m in mods]
    bias = torch.stack([m.bias.detach() for m in mods]) if m0.bias is not None else None
    layer = PopulationLinear(torch.stack(weights), bias)
    if kind == "_SpectralNorm":
        sn = [m.parametrizations.weight[0] for m in mods]  # type: ignore[union-attr]
        parametrize.register_parametrization(
            layer, "weight", BatchedSpectralNorm(torch.stack([s._u for s in sn]), torch.stack([s._v for s in sn]),
                                                 eps=sn[0].eps),
            unsafe=True)  # unsafe: no trial forward, which would run a power iteration now
    elif kind == "_WeightNorm":
        parametrize.register_parametrization(layer, "weight", BatchedWeightNorm(), unsafe=True)
        with torch.no_grad():  # the exact g and v of every replica (right_inverse would recompute g)
            layer.parametrizations.weight.original0.copy_(
                torch.stack([m.parametrizations.weight.original0.detach() for m in mods]))  # type: ignore[union-attr]
            layer.parametrizations.weight.original1.copy_(torch.stack(weights))  # type: ignore[union-attr]
    return layer


#: layers that hold parameters or reduce over the batch → their population version
LAYERS: dict[type, Callable[[Sequence[Any]], nn.Module]] = {
    nn.Linear: _stack_linear,
    nn.BatchNorm1d: PopulationBatchNorm1d,
    nn.LayerNorm: PopulationLayerNorm,
}

#: modules without parameters that treat every row on its own: shared by all replicas as they are
ROWWISE: tuple[type, ...] = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity)


def _containers() -> tuple[type, ...]:
    """Modules whose own code is row-wise and whose parameters all sit in child modules."""
    from ganbench.nn.common import ConditionalNorm, DiscriminatorHead
    from ganbench.nn.mlp import Maxout, MaxoutDiscriminator, MLPDiscriminator, MLPGenerator

    return (nn.Sequential, nn.ModuleList, MLPGenerator, MLPDiscriminator, Maxout, MaxoutDiscriminator,
            DiscriminatorHead, ConditionalNorm)


def stack_modules(mods: Sequence[nn.Module]) -> nn.Module:
    """One module computing all of ``mods`` (same architecture, own weights) on folded batches."""
    m0 = mods[0]
    base = type(m0).__bases__[0] if parametrize.is_parametrized(m0) else type(m0)
    if base in LAYERS:
        return LAYERS[base](mods)
    if isinstance(m0, ROWWISE):
        return copy.deepcopy(m0)
    if not isinstance(m0, _containers()):
        raise GanbenchError(f"model.population > 1: {type(m0).__name__} cannot be batched (populations "
                            "batch MLP networks with norm none, batch, layer, spectral or weight)")
    if getattr(m0, "embed", None) is not None:
        raise GanbenchError("model.population > 1: class-conditional networks cannot be batched yet")
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


STACKED = ("generator.", "discriminator.", "ema_generator.")


#: state of per-replica vectors ``(N,)`` (LeCam's anchors, ADA's probability): one entry per replica,
#: a ``(1,)`` vector in an ordinary fit
PER_REPLICA: tuple[str, ...] = ("lecam.", "ada.")


def unstack_state(state: dict[str, torch.Tensor], replica: int,
                  stacked: tuple[str, ...] = STACKED) -> dict[str, torch.Tensor]:
    """Replica ``replica``'s slice of a population's state dict: the tensors of the stacked networks
    (keys under ``stacked``) lose their replica axis, per-replica vectors (:data:`PER_REPLICA`) keep
    their entry as a ``(1,)`` vector; everything else (fixed latents, counters) stays."""
    def one(k: str, v: torch.Tensor) -> torch.Tensor:
        if v.dim() == 0:
            return v
        if k.startswith(stacked):
            return v[replica]
        if k.startswith(PER_REPLICA):
            return v[replica:replica + 1]
        return v
    return {k: one(k, v) for k, v in state.items()}

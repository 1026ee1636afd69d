"""Training tricks that are not layers (Salimans et al. 2016; Sønderby et al. 2017).

The layer tricks (minibatch discrimination, minibatch standard deviation, virtual batch norm) are
in :mod:`ganbench.nn.layers`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch
import torch.nn as nn
from torch import Tensor

from ganbench import GanbenchError

NoiseSchedule = Literal["linear", "exponential"]


def instance_noise_sigma(step: int, sigma0: float, anneal_steps: int, schedule: str = "linear",
                         final_ratio: float = 0.01) -> float:
    """Standard deviation at ``step`` of the annealed instance noise of Sønderby et al. 2017.

    * ``"linear"``: ``σ0·(1 - step/anneal_steps)`` until ``anneal_steps``, then 0;
    * ``"exponential"``: ``σ0·final_ratio^(step/anneal_steps)`` until ``anneal_steps`` (it has fallen
      to ``σ0·final_ratio`` there), then 0.

    ``anneal_steps <= 0`` or ``sigma0 == 0`` switches the noise off (0 at every step).
    """
    if schedule not in get_args(NoiseSchedule):
        valid = ", ".join(get_args(NoiseSchedule))
        raise GanbenchError(f"schedule={schedule!r} is not a noise schedule; choose one of: {valid}")
    if anneal_steps <= 0 or step >= anneal_steps or sigma0 == 0:
        return 0.0
    frac = max(step, 0) / anneal_steps
    if schedule == "linear":
        return sigma0 * (1.0 - frac)
    return sigma0 * math.exp(frac * math.log(final_ratio))


def add_instance_noise(x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """``x + σ·ε`` with ``ε ~ N(0, I)`` (instance noise, Sønderby et al. 2017), applied to real and generated
    inputs of D alike so their distributions overlap. ``sigma <= 0`` returns ``x`` itself."""
    if sigma <= 0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + sigma * noise


def feature_matching_loss(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """Feature matching (Salimans et al. 2016, §3.1): ``‖E_x f(x) - E_z f(G(z))‖₂²``.

    ``f`` are intermediate discriminator features, flattened per sample; the real side is detached
    so the loss only trains the generator.
    """
    real_mean = real_features.detach().reshape(real_features.shape[0], -1).mean(0)
    fake_mean = fake_features.reshape(fake_features.shape[0], -1).mean(0)
    return (real_mean - fake_mean).pow(2).sum()


def smoothed_real_target(smoothing: float) -> float:
    """One-sided label smoothing (Salimans et al. 2016, §3.4): the real target ``1 - smoothing``.

    The fake target stays 0; pass the result as ``real_target`` to :func:`ganbench.losses.d_ns`.
    """
    if not 0.0 <= smoothing < 1.0:
        raise GanbenchError(f"label_smoothing={smoothing} must be in [0, 1)")
    return 1.0 - smoothing


class HistoricalAverage:
    """Historical averaging (Salimans et al. 2016, §3.3).

    Keeps ``θ̄ = (1/t) Σ_{i=1..t} θ[i]``, the running mean of a module's parameters over the ``t``
    calls to :meth:`update`, and gives the penalty ``Σ ‖θ - θ̄‖²`` that is added to the player's
    loss. Parameters are matched by name, so the average survives a checkpoint round trip through
    :meth:`state_dict` / :meth:`load_state_dict`.
    """

    def __init__(self) -> None:
        #: t, on the parameters' device: the update is then the same kernels at every step (a CUDA
        #: graph can replay it)
        self.steps: Tensor | None = None
        self.average: dict[str, Tensor] = {}

    @property
    def count(self) -> int:
        return 0 if self.steps is None else int(self.steps.item())

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Fold the current parameters of ``module`` into the running mean."""
        params = list(module.named_parameters())
        if self.steps is None:
            self.steps = torch.zeros((), dtype=torch.float64, device=params[0][1].device if params else None)
        self.steps.add_(1)
        weight = self.steps.reciprocal().float()
        for name, p in params:
            if name not in self.average:
                self.average[name] = p.detach().clone()
            else:
                avg = self.average[name]
                avg.add_((p.detach().to(avg.device, avg.dtype) - avg) * weight.to(avg.device, avg.dtype))

    def penalty(self, module: nn.Module) -> Tensor:
        """``Σ_params ‖θ - θ̄‖²``, differentiable wrt the parameters; 0 before the first update."""
        total: Tensor | None = None
        for name, p in module.named_parameters():
            avg = self.average.get(name)
            if avg is None:
                continue
            term = (p - avg.to(p.device, p.dtype)).pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            first = next(module.parameters(), None)
            return torch.zeros((), device=first.device if first is not None else None)
        return total

    def state_dict(self) -> dict[str, Any]:
        """The step count and a copy of the averages."""
        return {"count": self.count, "average": {k: v.clone() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        count = int(state["count"])
        device = next(iter(state["average"].values())).device if state["average"] else None
        self.steps = torch.tensor(float(count), dtype=torch.float64, device=device) if count else None
        self.average = {k: v.clone() for k, v in state["average"].items()}


def pack(x: Tensor, m: int, batch_dim: int = 0) -> Tensor:
    """PacGAN packing (Lin et al. 2018, §3): group every ``m`` consecutive samples into one D input.

    Samples ``i·m … i·m + m - 1`` of the batch axis become pack ``i``, concatenated along the first
    feature axis: vectors (B·m, D) → (B, m·D), images (B·m, C, H, W) → (B, m·C, H, W) (channel-wise).
    Axes before ``batch_dim`` (e.g. a leading replica axis of a population) are kept. ``m = 1``
    returns ``x`` itself.
    """
    if m == 1:
        return x
    n = x.shape[batch_dim]
    if n % m:
        raise GanbenchError(f"model.pack={m}: a batch of {n} samples cannot be split into packs of {m}")
    return x.unflatten(batch_dim, (n // m, m)).flatten(batch_dim + 1, batch_dim + 2)


def packed_shape(shape: tuple[int, ...], m: int) -> tuple[int, ...]:
    """The shape of one pack of ``m`` samples of ``shape``: the first axis (features or channels) × m."""
    return (shape[0] * m, *shape[1:])


def top_k_count(batch: int, epoch: int, gamma: float, nu: float) -> int:
    """How many fakes update G in top-k training at ``epoch`` (Sinha, Zhao, Goyal, Raffel & Odena 2020,
    "Top-k Training of GANs", §3): ``k`` starts at the batch size and is multiplied by ``gamma`` every
    epoch, down to ``nu`` times the batch size: ``max(⌈γ^epoch·B⌉, ⌈ν·B⌉)``, at least 1."""
    return max(1, math.ceil(gamma ** epoch * batch - 1e-9), math.ceil(nu * batch - 1e-9))


def top_k_rows(scores: Tensor, k: int, replicas: int = 1) -> Tensor:
    """Indices of the ``k`` fakes D scores highest (most real) in each replica's rows, in row order of
    the folded batch: top-k training updates G with those alone (Sinha et al. 2020, Algorithm 1).
    A patch D's scores are averaged per sample; ``scores`` is ``(R, ...)`` with ``R`` = replicas × B."""
    per_sample = scores.detach().float().reshape(scores.shape[0], -1).mean(1).reshape(replicas, -1)
    batch = per_sample.shape[1]
    if not 1 <= k <= batch:
        raise GanbenchError(f"top-k: k={k} must be between 1 and the batch of {batch} fakes")
    best = per_sample.topk(k, dim=1).indices.sort(dim=1).values
    return (best + torch.arange(replicas, device=scores.device).unsqueeze(1) * batch).reshape(-1)

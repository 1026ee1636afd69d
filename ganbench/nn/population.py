"""Populations: N independent replicas of a network as one module with a leading replica axis.

A population of N fits is not N modules: every parameter gets a leading axis of size N and each
layer computes all replicas at once (a batched matmul for linear layers; a grouped convolution with
N groups for convolutions and transposed convolutions; per-replica statistics for batch, layer,
group and instance norm; a batched power iteration for spectral norm). Activations keep the
ordinary ``(batch, features)`` or ``(batch, channels, height, width)`` layout with the replicas
*folded* into the batch: rows ``[r·B, (r+1)·B)`` belong to replica ``r``. So the containers of
ganbench's networks (an MLP or CNN generator's loop, a residual block's two branches, a
discriminator's ``features``/``head``) run unchanged, and only the layers that hold parameters or
reduce over the batch are replaced. A convolution moves the replica axis from the rows to the
channels for the one grouped call (``(N·B, C, H, W)`` → ``(B, N·C, H, W)``) and back.

:func:`ganbench.nn.stacking.stack_modules` builds the population from N ordinary networks — each built from its own
seed — copying their parameters and buffers, so replica ``r`` starts exactly where an ordinary fit
with that seed starts. The replicas share no parameter, so a loss that is the *sum* of the
per-replica losses gives each replica exactly the gradient of its own fit.

:class:`ReplicaRNG` gives each replica its own ``torch.Generator``: latents, labels, instance noise
and the penalties' random interpolation are drawn per replica, so replica ``r`` sees the random
numbers of an ordinary fit with seed ``seed + r``.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed CPU memory in the process for the next step's tensors (glibc: ``M_TRIM_THRESHOLD``
    1 GiB, ``M_MMAP_THRESHOLD`` 32 MiB, the most every 64-bit glibc accepts); returns whether both were
    set. Once per process; forked processes (data-loader workers) inherit it.

    A population folds its replicas into the batch, so its activations are hundreds of kilobytes each
    (16 × 128 × 64 floats = 512 KiB). With glibc's defaults each step hands the freed top of the heap
    back to the system and the next one page-faults it in again: about 670 faults and 10 % of a
    CPU step at N = 16 (docs/benchmarks.md). The cost is that the process keeps up to 1 GiB of freed
    heap above what it uses. Not glibc (macOS, musl): nothing is changed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20))
        trim = bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))  # set even where the first is refused
        return mmap and trim
    except (OSError, AttributeError):
        return False


def replica_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(N·B, ...)`` → ``(N, B, ...)``: the replica axis unfolded from the batch."""
    return x.reshape(n, x.shape[0] // n, *x.shape[1:])


# --------------------------------------------------------------------------------------- layers
#: weights up to this many elements (all replicas) take the elementwise matrix-vector product on a CPU
MATVEC_ELEMENTWISE_MAX = 1 << 22


def matvec(w: torch.Tensor, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """Each replica's matrix times its vector: ``(N, r, c) @ (N, c)`` → ``(N, r)``, or with
    ``transpose`` ``(N, r, c)ᵀ @ (N, r)`` → ``(N, c)``.

    On a CPU torch's ``bmm`` with a single column costs 4-7× an elementwise product and a sum for
    weights up to a few million elements (the power iterations of a toy population: 60 vs 15 µs at
    16 × 64 × 64; 13 vs 1.8 ms at 8 × 256 × 2048 transposed); above that the product's temporary
    costs more than it saves and ``bmm`` is kept, as it is on a GPU."""
    if w.device.type == "cpu" and w.numel() <= MATVEC_ELEMENTWISE_MAX:
        return (w * x.unsqueeze(2)).sum(1) if transpose else (w * x.unsqueeze(1)).sum(2)
    if transpose:
        w = w.transpose(1, 2)
    return torch.bmm(w, x.unsqueeze(2)).squeeze(2)


class _SpectralDivide(torch.autograd.Function):
    """``W / σ`` with ``σ = uᵀ W v`` per replica (``u``, ``v`` constants), the gradient in closed form:
    ``∂L/∂W = (G − ⟨G, W⟩/σ · u vᵀ) / σ``, with ``u vᵀ`` broadcast in the weight's own layout. Autograd's
    own graph of the same arithmetic runs eight operations on the weight's size in backward, each with
    its autograd node; this runs three. Double backward (a penalty through an unrolled D step)
    differentiates the same formula, with σ recomputed as the function of W it is. Not usable under
    ``torch.func`` transforms (no ``setup_context``; ganbench applies none to D).
    ``tests/test_population.py`` checks both orders against autograd's graph."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dim: int) -> torch.Tensor:
        sigma = _sigma(weight, u, v, dim)
        ctx.save_for_backward(weight, u, v, sigma)
        ctx.dim = dim
        return weight / sigma.view(-1, *([1] * (weight.dim() - 1)))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        weight, u, v, sigma = ctx.saved_tensors
        dim = ctx.dim
        if torch.is_grad_enabled():  # create_graph: σ as a function of W, not the saved constant
            sigma = _sigma(weight, u, v, dim)
        per_replica = (-1, *([1] * (weight.dim() - 1)))
        coef = (grad * weight).sum(tuple(range(1, grad.dim()))) / sigma  # ⟨G, W⟩ / σ per replica
        rows = [1] * weight.dim()  # u along the matrix rows (axis dim + 1), v along all the others
        rows[0], rows[dim + 1] = weight.shape[0], weight.shape[dim + 1]
        cols = list(weight.shape)
        cols[dim + 1] = 1
        g = torch.addcmul(grad, (coef.view(-1, 1) * u).view(rows), v.view(cols), value=-1)
        return g / sigma.view(per_replica), None, None, None


def _sigma(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dim: int) -> torch.Tensor:
    """``uᵀ W v`` per replica, ``W`` each replica's weight as a matrix."""
    return (u * matvec(_matrix(weight, dim), v)).sum(1)


def _matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """``(N, rows, cols)``: each replica's weight as torch's spectral norm reshapes it."""
    return (weight if dim == 0 else weight.movedim(dim + 1, 1)).flatten(2)


class BatchedSpectralNorm(nn.Module):
    """Spectral normalization of N weights ``(N, …)`` at once (Miyato et al. 2018).

    The same arithmetic as ``torch.nn.utils.parametrizations.spectral_norm`` — each replica's weight
    seen as a matrix with ``dim`` (0; 1 for transposed convolutions) first and the other axes
    flattened, ``n_power_iterations`` power iterations per forward in training mode, ``u``/``v`` kept
    as buffers, ``σ = uᵀ W v`` — with batched matrix-vector products (:func:`matvec`) over the
    replicas (equal up to the order of the sums, not bit for bit). Registered with
    :func:`torch.nn.utils.parametrize.register_parametrization`.
    """

    def __init__(self, u: torch.Tensor, v: torch.Tensor, eps: float = 1e-12, dim: int = 0,
                 n_power_iterations: int = 1) -> None:
        super().__init__()
        self.eps, self.dim, self.n_power_iterations = eps, dim, n_power_iterations
        self.register_buffer("_u", u.clone())
        self.register_buffer("_v", v.clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w = _matrix(weight, self.dim)
        if self.training:
            with torch.no_grad():
                for _ in range(self.n_power_iterations):
                    self._u.copy_(F.normalize(matvec(w, self._v), dim=1, eps=self.eps))
                    self._v.copy_(F.normalize(matvec(w, self._u, transpose=True), dim=1, eps=self.eps))
        return _SpectralDivide.apply(weight, self._u.clone(), self._v.clone(), self.dim)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


class BatchedWeightNorm(nn.Module):
    """Weight normalization ``w = g · v / ‖v‖`` (Salimans & Kingma 2016) of N weights ``(N, out, …)``
    at once, the norm taken per output unit over all its other axes (torch's ``weight_norm``, dim 0)."""

    def forward(self, weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
        return weight_v * (weight_g / self.norm(weight_v))

    @staticmethod
    def norm(v: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(v, dim=tuple(range(2, v.dim())), keepdim=True)

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.norm(weight), weight


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


class PopulationEmbedding(nn.Module):
    """N embeddings: weight ``(N, classes, dim)``; ``y`` is ``(N·B,)`` with replica ``r``'s rows looked
    up in replica ``r``'s table (one lookup in the ``(N·classes, dim)`` table, offset per replica)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.replicas, self.classes = weight.shape[:2]  # not read from self.weight (spectral norm)
        self.weight = nn.Parameter(weight.clone())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        n, k = self.replicas, self.classes
        offset = torch.arange(0, n * k, k, device=y.device).repeat_interleave(y.shape[0] // n)
        return F.embedding(y + offset, self.weight.reshape(n * k, -1))


def to_channels(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(N·B, C, …)`` → ``(B, N·C, …)``: replica ``r``'s channels become channels ``[r·C, (r+1)·C)``."""
    return replica_rows(x, n).transpose(0, 1).reshape(x.shape[0] // n, n * x.shape[1], *x.shape[2:])


def from_channels(y: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of :func:`to_channels`: ``(B, N·C, …)`` → ``(N·B, C, …)``."""
    b, c = y.shape[0], y.shape[1] // n
    return y.reshape(b, n, c, *y.shape[2:]).transpose(0, 1).reshape(n * b, c, *y.shape[2:])


class PopulationConv2d(nn.Module):
    """N 2-D convolutions (or transposed convolutions) as one grouped convolution with N groups (times
    each layer's own ``groups``): weight ``(N, *conv.weight.shape)``, bias ``(N, out)``; ``x`` is
    ``(N·B, C, H, W)``. Group ``r`` sees only replica ``r``'s channels, so each replica is its own layer."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
        super().__init__()
        self.replicas = weight.shape[0]
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.output_padding, self.groups = conv.output_padding, conv.groups
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone()) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.replicas
        w = self.weight
        w = w.reshape(n * w.shape[1], *w.shape[2:])
        b = self.bias.reshape(-1) if self.bias is not None else None
        h = to_channels(x, n)
        if self.transposed:
            y = F.conv_transpose2d(h, w, b, self.stride, self.padding, self.output_padding, n * self.groups,
                                   self.dilation)
        else:
            y = F.conv2d(h, w, b, self.stride, self.padding, self.dilation, n * self.groups)
        return from_channels(y, n)


class PopulationBatchNorm(nn.Module):
    """Batch norm over each replica's own rows (statistics per replica and channel), as
    ``nn.BatchNorm1d`` on ``(N·B, C)`` and ``nn.BatchNorm2d`` on ``(N·B, C, H, W)``."""

    def __init__(self, mods: Sequence[nn.modules.batchnorm._BatchNorm]) -> None:
        super().__init__()
        m0 = mods[0]
        if not (m0.affine and m0.track_running_stats) or m0.momentum is None:
            raise GanbenchError("model.population > 1: batch norm without affine parameters, running statistics "
                                "or a momentum cannot be batched")
        self.eps, self.momentum = m0.eps, m0.momentum
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in mods]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in mods]))
        self.register_buffer("running_mean", torch.stack([m.running_mean for m in mods]))
        self.register_buffer("running_var", torch.stack([m.running_var for m in mods]))
        self.register_buffer("num_batches_tracked", mods[0].num_batches_tracked.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        h = replica_rows(x, n).float()  # (N, B, C, …); statistics in float32, as torch's batch norm keeps
        # them under bf16 autocast
        shape = (n, 1, -1) + (1,) * (h.dim() - 3)
        if self.training:
            dims = (1, *range(3, h.dim()))
            mean = h.mean(dims)
            var = h.var(dims, unbiased=False)
            with torch.no_grad():
                count = h.numel() // (n * h.shape[2])
                self.num_batches_tracked += 1
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * (count / max(count - 1, 1)), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        out = ((h - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps) * self.weight.view(shape)
               + self.bias.view(shape))
        return out.reshape(x.shape).to(x.dtype)


class _ReplicaAffine(nn.Module):
    """A normalization of each sample on its own (no batch statistics) followed by a per-replica gain
    and bias per feature or channel: the stacked ``weight``/``bias`` of ``mods`` (``None`` without)."""

    def __init__(self, mods: Sequence[nn.Module], affine: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in mods])) if affine else None
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in mods])) if affine else None

    def affine(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` (normalized, replicas folded into the rows) times each replica's gain, plus its bias."""
        if self.weight is None:
            return h
        n = self.weight.shape[0]
        r = replica_rows(h, n)
        shape = (n, 1, *self.weight.shape[1:]) + (1,) * (r.dim() - 1 - self.weight.dim())
        return (r * self.weight.view(shape) + self.bias.view(shape)).reshape(h.shape)


class PopulationLayerNorm(_ReplicaAffine):
    """Layer norm over each sample's features with a per-replica gain and bias, as ``nn.LayerNorm``."""

    def __init__(self, mods: Sequence[nn.LayerNorm]) -> None:
        super().__init__(mods)
        self.normalized_shape, self.eps = mods[0].normalized_shape, mods[0].eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.affine(F.layer_norm(x, self.normalized_shape, eps=self.eps))


class PopulationGroupNorm(_ReplicaAffine):
    """Group norm of each sample (ganbench's layer norm of feature maps is one group) with a
    per-replica gain and bias per channel, as ``nn.GroupNorm``."""

    def __init__(self, mods: Sequence[nn.GroupNorm]) -> None:
        if not mods[0].affine:
            raise GanbenchError("model.population > 1: group norm without affine parameters cannot be batched")
        super().__init__(mods)
        self.num_groups, self.eps = mods[0].num_groups, mods[0].eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.affine(F.group_norm(x, self.num_groups, eps=self.eps))


class PopulationInstanceNorm2d(_ReplicaAffine):
    """Instance norm of each sample's feature maps with a per-replica gain and bias, as
    ``nn.InstanceNorm2d`` (without running statistics: ganbench's default)."""

    def __init__(self, mods: Sequence[nn.InstanceNorm2d]) -> None:
        if mods[0].track_running_stats:
            raise GanbenchError("model.population > 1: instance norm with running statistics cannot be batched")
        super().__init__(mods, affine=mods[0].affine)
        self.eps = mods[0].eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.affine(F.instance_norm(x, eps=self.eps))


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

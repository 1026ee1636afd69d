"""Drawing generator samples for measurement: fixed latents, evenly spread labels, latent tricks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


@torch.no_grad()
def generate(
    pl_module: Any, n: int, batch_size: int = 250, seed: int = 0, ema: bool = True, offset: int = 0
) -> Iterator[Tensor]:
    """Yield batches of ``n`` samples of a ``GANModule`` from latents drawn with ``seed``.

    Conditional modules get labels ``(offset + i) % num_classes``, so classes are evenly spread.
    """
    device = pl_module.device
    gen = torch.Generator(device=device).manual_seed(seed)
    num_classes = getattr(pl_module, "num_classes", None) or 0
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        z = pl_module.sample_latent(b, generator=gen)
        labels = (torch.arange(offset + done, offset + done + b, device=device) % num_classes) if num_classes else None
        yield pl_module.sample(b, z=z, labels=labels, ema=ema)
        done += b


def slerp(a: Tensor, b: Tensor, t: Tensor | float) -> Tensor:
    """Spherical linear interpolation between latent batches (Shoemake 1985; White 2016,
    "Sampling Generative Networks", sec. 2.1): sin((1-t)w)/sin(w) a + sin(tw)/sin(w) b with
    cos w = <a, b> / (|a| |b|); falls back to linear interpolation when a and b are parallel."""
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    if t.dim() == 0:
        t = t.expand(a.shape[0])
    t = t.reshape(-1, *([1] * (a.dim() - 1)))
    an = a / a.norm(dim=-1, keepdim=True)
    bn = b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    lin = (1 - t) * a + t * b
    sph = torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b
    return torch.where(so.abs() < 1e-6, lin, sph)


def truncate_latent(z: Tensor, threshold: float, generator: torch.Generator | None = None) -> Tensor:
    """Truncation trick (Brock et al. 2019, BigGAN, sec. 3.1): resample every entry of a standard
    normal latent whose magnitude exceeds ``threshold`` until all lie within it."""
    if threshold <= 0:
        raise ValueError("truncation threshold must be > 0")
    z = z.clone()
    mask = z.abs() > threshold
    while mask.any():
        z[mask] = torch.randn(int(mask.sum()), generator=generator, device=z.device, dtype=z.dtype)
        mask = z.abs() > threshold
    return z

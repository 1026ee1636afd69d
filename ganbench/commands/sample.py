"""``ganbench sample``: pictures from a trained generator.

Plain samples, one class (``--class``), truncated latents (``--truncation``), slerp
interpolations (``--interpolate STEPS``) or DCGAN-style latent arithmetic (``--arithmetic``).
Toy (2-D) generators give a scatter plot instead of a grid.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import Tensor

from ganbench import GanbenchError
from ganbench.commands.evaluate import CommandParser
from ganbench.metrics.sampling import slerp, truncate_latent
from ganbench.metrics.toy import toy_scatter


def build_parser() -> CommandParser:
    p = CommandParser(prog="ganbench sample", description=__doc__)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--n", type=int, default=64, help="images (interpolation: rows x steps)")
    p.add_argument("--out", default="grid.png")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use the EMA generator")
    p.add_argument("--class", dest="label", type=int, default=None, help="class of a conditional generator")
    p.add_argument("--interpolate", type=int, default=None, metavar="STEPS", help="slerp rows of STEPS images")
    p.add_argument("--truncation", type=float, default=None, metavar="T", help="resample |z| > T")
    p.add_argument("--arithmetic", action="store_true", help="mean(A) - mean(B) + mean(C) on three latent groups")
    p.add_argument("--group-size", type=int, default=3, help="latents per group for --arithmetic")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row")
    p.add_argument("--replica", type=int, default=None, help="replica K of a population checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def arithmetic_latents(
    z: Tensor, group_size: int, noise: float = 0.25, generator: torch.Generator | None = None
) -> tuple[Tensor, int]:
    """Latents for a vector-arithmetic grid (Radford et al. 2016, DCGAN, sec. 6.3.2).

    ``z`` holds three groups A, B, C of ``group_size`` latents. Rows: each group's members then
    its mean; the last row is y = mean(A) - mean(B) + mean(C) followed by y + ``noise`` * N(0, I)
    (the paper's way of showing the neighbourhood of the result). Returns (latents, row length).
    """
    k = group_size
    groups = [z[i * k : (i + 1) * k] for i in range(3)]
    means = [g.mean(dim=0, keepdim=True) for g in groups]
    y = means[0] - means[1] + means[2]
    jitter = noise * torch.randn(k, z.shape[1], generator=generator, device=z.device, dtype=z.dtype)
    rows = [torch.cat([g, m]) for g, m in zip(groups, means, strict=True)] + [torch.cat([y, y + jitter])]
    return torch.cat(rows), k + 1


def check_args(args) -> None:
    """Every argument, the checkpoint (read, not built) and the output path before a model is built."""
    from ganbench.commands.evaluate import check_device, check_out, read_ckpt

    for name, least in (("n", 1), ("group_size", 1), ("interpolate", 2), ("nrow", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            raise GanbenchError(f"--{name.replace('_', '-')}={value} is invalid; it must be >= {least}")
    if args.truncation is not None and not args.truncation > 0:
        raise GanbenchError(f"--truncation={args.truncation} is invalid; it must be > 0")
    if args.interpolate is not None and args.arithmetic:
        raise GanbenchError("--interpolate and --arithmetic exclude each other; choose one")
    check_device(args.device)
    read_ckpt(args.ckpt)
    check_out(Path(args.out))


def main(argv: list[str] | None = None) -> int:
    from ganbench.models import load_module

    args = build_parser().parse_args(argv)
    check_args(args)
    module = load_module(args.ckpt, map_location=args.device, replica=args.replica).eval()
    gen = torch.Generator(device=module.device).manual_seed(args.seed)
    num_classes = getattr(module, "num_classes", 0) or 0
    if args.label is not None and not num_classes:  # the module knows its classes (CGAN fixes conditional)
        raise GanbenchError("--class needs a conditional generator; this one has no classes")
    if args.label is not None and not 0 <= args.label < num_classes:
        raise GanbenchError(f"--class={args.label} is invalid; valid: 0..{num_classes - 1}")

    def latents(n: int) -> Tensor:
        z = module.sample_latent(n, generator=gen)
        return truncate_latent(z, args.truncation, gen) if args.truncation else z

    nrow = args.nrow or int(math.ceil(math.sqrt(args.n)))
    if args.interpolate is not None:
        rows = max(1, args.n // args.interpolate)
        a, b = latents(rows), latents(rows)
        t = torch.linspace(0, 1, args.interpolate, device=a.device)
        z = torch.stack([slerp(a, b, ti) for ti in t], dim=1).reshape(rows * args.interpolate, -1)
        nrow = args.interpolate
    elif args.arithmetic:
        z, nrow = arithmetic_latents(latents(3 * args.group_size), args.group_size, generator=gen)
    else:
        z = latents(args.n)
    if num_classes:
        labels = (
            torch.full((len(z),), args.label, device=z.device, dtype=torch.long)
            if args.label is not None
            else torch.arange(len(z), device=z.device) % num_classes
        )
    else:
        labels = None
    with torch.no_grad():
        x = torch.cat(
            [
                module.sample(len(zb), z=zb, labels=None if labels is None else labels[i : i + len(zb)], ema=args.ema)
                for i, zb in zip(range(0, len(z), 256), z.split(256), strict=True)
            ]
        )
    from ganbench.signals import deferred

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with deferred():  # a signal waits for the picture to be whole
        _save(x, out, nrow)
    print(json.dumps({"out": str(out), "images": len(x), "nrow": nrow, "ema": args.ema}))
    return 0


def _save(x, out: Path, nrow: int) -> None:
    from torchvision.utils import save_image

    if x.dim() == 2:
        toy_scatter(None, x.float().cpu(), out, title=f"{len(x)} samples")
    else:
        save_image(
            x.float().cpu(),
            str(out),
            nrow=nrow,
            normalize=True,
            value_range=(-1, 1),
            padding=2,
            pad_value=1.0,
        )

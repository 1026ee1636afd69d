"""``ganbench evaluate``: measure a trained generator after training, with its protocol.

Image data: FD/FID, IS, KID and improved precision/recall computed by torch-fidelity's metric
functions on features of the chosen network (built through torch-fidelity's feature-extractor
registry), FD's spread over disjoint subsets and density/coverage computed by ganbench on the same
features, plus sliced Wasserstein distances; reference statistics come from the on-disk cache.
Toy data: mode coverage, exact W1 and SWD. Prints one JSON object on stdout and writes it to
``<run>/eval_<features>_<n>.json``; on images, one line per metric on stderr, a value with its spread
as ``fd_fmnist_10k = 41.2 ± 0.9 (std over 5 subsets of 2k)``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ganbench import GanbenchError
from ganbench.callbacks.run import write_json_atomic
from ganbench.metrics.features import FEATURE_NETS, load_feature_net
from ganbench.metrics.image import (
    IMAGE_METRICS,
    check_sample_counts,
    count_tag,
    fidelity_metrics,
    metric_keys,
    metric_protocol,
    spread_layouts,
    swd_metrics,
)
from ganbench.metrics.reference import extract_features, reference_statistics
from ganbench.metrics.sampling import generate
from ganbench.metrics.toy import mode_metrics
from ganbench.metrics.wasserstein import sliced_wasserstein, w1_exact
from ganbench.progress import progress

W1_SAMPLES = 2000
"""Points per side of the exact W1 (the network simplex is cubic)."""
SWD_SAMPLES = 4096
"""Samples per side of the image SWD."""


class CommandParser(argparse.ArgumentParser):
    """argparse whose usage errors become one-line ``GanbenchError``s."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise GanbenchError(f"{self.prog}: {message}")


def run_dir_of(ckpt: str | Path) -> Path:
    """``<run>`` of ``<run>/checkpoints/<name>.ckpt``; else the checkpoint's folder."""
    parent = Path(ckpt).resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


#: families whose generator translates images instead of mapping latents (nothing to sample)
TRANSLATION_FAMILIES = ("pix2pix", "cyclegan")
TOY_MIN_SAMPLES = 2


def read_ckpt(path: str | Path, option: str = "--ckpt") -> dict[str, Any]:
    """The checkpoint behind ``--ckpt``, checked complete and ganbench's (one line otherwise), of a
    family that draws samples from latents."""
    from ganbench.reliability import read_checkpoint

    ckpt = read_checkpoint(Path(path), option=option, use=f"use {option}")
    family = ckpt["ganbench"].get("family")
    if family in TRANSLATION_FAMILIES:
        raise GanbenchError(f"{option} {path} is a {family} checkpoint: it translates images and has no latent "
                            "space to sample; its paired metrics (val/l1, val/psnr, val/ssim) are logged during fit")
    return ckpt


def datamodule_for(ckpt: str | Path | dict[str, Any], data: str | None, root: str | None) -> Any:
    """The ``GANDataModule`` a checkpoint was trained on (its saved hyper-parameters), or ``data``.
    Its data set must have the shape the generator makes."""
    from ganbench.data import GANDataModule

    blob = ckpt if isinstance(ckpt, dict) else read_ckpt(ckpt)
    hp = dict(blob.get("datamodule_hyper_parameters") or {})
    if data is not None:
        hp["dataset"] = data
    if root is not None:
        hp["root"] = root
    if "dataset" not in hp:
        raise GanbenchError(f"checkpoint {ckpt} does not record its data set; pass --data NAME")
    hp["download"] = False
    # LightningCLI stores its own entries (``_instantiator``, ``_class_path``) next to the arguments
    accepted = inspect.signature(GANDataModule.__init__).parameters
    dm = GANDataModule(**{k: v for k, v in hp.items() if k in accepted})
    made = (blob.get("hyper_parameters") or {}).get("data_shape")
    if made is not None and tuple(made) != tuple(dm.shape):
        raise GanbenchError(f"--data {dm.dataset} has samples of shape {tuple(dm.shape)} but the generator makes "
                            f"{tuple(made)}; evaluate it on data of its own shape")
    return dm


def build_parser() -> CommandParser:
    p = CommandParser(prog="ganbench evaluate", description=__doc__)
    p.add_argument("--ckpt", required=True, help="checkpoint of a ganbench run")
    p.add_argument("--replica", type=int, default=None, help="replica K of a population checkpoint")
    p.add_argument("--n-fake", type=int, default=10000)
    p.add_argument("--n-real", type=int, default=None, help="reference images (default: --n-fake)")
    p.add_argument("--features", default=None, choices=FEATURE_NETS, help="image checkpoints (default: per data set)")
    p.add_argument("--data", default=None, help="data set (default: the one recorded in the checkpoint)")
    p.add_argument("--root", default=None, help="data folder")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--metrics", nargs="+", default=None, choices=IMAGE_METRICS,
                   help="image checkpoints (default: all)")
    p.add_argument("--feature-weights", default=None, help="weights of a domain feature net")
    p.add_argument("--inception-weights", default=None, help="TF-ported Inception-v3 weights (.pth)")
    p.add_argument("--n-projections", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use the EMA generator")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="JSON path (default: <run>/eval_<features>_<n>.json)")
    return p


def check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise GanbenchError(f"--{name.replace('_', '-')}={value} is invalid; it must be >= 1")


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise GanbenchError(f"--device {device}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GanbenchError(f"--device {device}: no CUDA device is visible; use --device cpu")


def check_out(path: Path) -> None:
    """The JSON can be written there: checked before anything runs, so no work is lost at the end."""
    if path.is_dir():
        raise GanbenchError(f"--out {path} is a directory; give a file name")
    folder = path.parent.absolute()
    while not folder.exists():  # created only when the result is written
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise GanbenchError(f"--out {path} cannot be written: {folder} is not a writable directory")


class Plan(argparse.Namespace):
    """Everything ``evaluate`` will do, decided and checked before a model runs."""


def plan(args: argparse.Namespace) -> Plan:
    """Check every argument against the checkpoint (toy or image, family) and what each metric needs."""
    check_positive(args, "n_fake", "n_real", "batch_size", "n_projections")
    check_device(args.device)
    ckpt = read_ckpt(args.ckpt)
    dm = datamodule_for(ckpt, args.data, args.root)
    n_real = args.n_real or args.n_fake
    p = Plan(dm=dm, n_fake=args.n_fake, n_real=n_real)
    if dm.is_toy:
        given = [f for f, v in (("--features", args.features), ("--metrics", args.metrics),
                                ("--feature-weights", args.feature_weights),
                                ("--inception-weights", args.inception_weights)) if v is not None]
        if given:
            raise GanbenchError(f"{given[0]} applies to image checkpoints; {args.ckpt} is trained on the 2-D toy "
                                f"data.dataset={dm.dataset}, whose metrics are mode coverage, exact W1 and SWD")
        for key, n in (("--n-fake", args.n_fake), ("--n-real", n_real)):
            if n < TOY_MIN_SAMPLES:
                raise GanbenchError(f"{key}={n} is too small; the toy metrics need >= {TOY_MIN_SAMPLES} samples")
        p.features, p.w1_samples = "toy", min(args.n_fake, n_real, W1_SAMPLES)
    else:
        name = args.features or dm.info.features or "inception"  # the data set's own net, else Inception
        p.net = load_feature_net(name, args.inception_weights if name == "inception" else args.feature_weights,
                                 args.device)
        p.features = p.net.label
        p.metrics = list(dict.fromkeys(args.metrics or IMAGE_METRICS))
        check_sample_counts(p.metrics, args.n_fake, n_real)
        available = dm.split_size(args.split)
        if n_real > available:
            raise GanbenchError(f"--n-real={n_real} is more than the {available} images of the {args.split} split "
                                f"of {dm.dataset}" + ("" if args.n_real else " (--n-real defaults to --n-fake)"))
    p.out = Path(args.out) if args.out else run_dir_of(args.ckpt) / f"eval_{p.features}_{count_tag(args.n_fake)}.json"
    check_out(p.out)
    return p


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation described by parsed ``args``; returns the JSON-able result."""
    from ganbench.models import load_module

    p = plan(args)
    dm = p.dm
    module = load_module(args.ckpt, map_location=args.device, replica=args.replica).eval()
    batches = []
    with progress(f"{args.n_fake} samples of G", args.n_fake) as bar:
        for x in generate(module, args.n_fake, args.batch_size, args.seed, args.ema):
            batches.append(x.float().cpu())
            bar.update(len(x))
    fake = torch.cat(batches)
    result: dict[str, Any] = {
        "ckpt": str(Path(args.ckpt).resolve()),
        "dataset": dm.dataset,
        "split": args.split,
        "n_fake": args.n_fake,
        "ema": args.ema,
        "seed": args.seed,
    }
    if dm.is_toy:
        real = dm.real_samples(p.n_real, split=args.split, seed=args.seed)
        tag = count_tag(args.n_fake)
        metrics: dict[str, float] = {}
        if dm.mixture is not None:
            mm = mode_metrics(fake, dm.mixture.centers, dm.mixture.std)
            metrics.update({f"modes_covered_{tag}": mm["modes_covered"],
                            f"high_quality_frac_{tag}": mm["high_quality_frac"],
                            f"kl_modes_{tag}": mm["kl_to_uniform"]})
        n_w1 = p.w1_samples
        metrics[f"w1_exact_{count_tag(n_w1)}"] = w1_exact(fake[:n_w1], real[:n_w1])
        gen = torch.Generator().manual_seed(args.seed)
        n_swd = min(args.n_fake, p.n_real)
        metrics[f"swd_{count_tag(n_swd)}_{args.n_projections}p"] = sliced_wasserstein(fake, real, args.n_projections,
                                                                                      gen)
        result.update({"features": "toy", "n_real": p.n_real, "metrics": metrics,
                       "protocol": {"mode_threshold_std": 3.0, "mode_samples": args.n_fake, "w1_samples": n_w1,
                                    "w1_solver": "ot.emd2", "swd_projections": args.n_projections,
                                    "swd_samples": n_swd}})
    else:
        net = p.net
        ref = reference_statistics(dm, net, p.n_real, args.split, args.seed, progress=True)
        out = extract_features(net, fake, args.batch_size, progress=f"features of {args.n_fake} samples")
        values = fidelity_metrics(out["features"], out["logits"], ref, p.metrics, seed=2020)
        if "swd" in p.metrics:
            m = min(args.n_fake, ref.n, SWD_SAMPLES)
            real_pixels = dm.real_samples(m, split=args.split, seed=args.seed + 1)
            values.update(swd_metrics(fake[:m], real_pixels, out["features"][:m], ref.features[:m],
                                      args.n_projections, args.seed))
        keys = metric_keys(net.label, args.n_fake, p.metrics, args.n_projections,
                           min(args.n_fake, ref.n, SWD_SAMPLES), ref.n)
        metrics, missing = {}, {}
        for k, v in values.items():
            if math.isfinite(v):
                metrics[keys[k]] = v
            else:
                missing[keys[k]] = f"not finite ({v}) on these samples"
        result.update(
            {
                "features": net.label,
                "n_real": ref.n,
                "resolution": int(dm.resolution),
                "metrics": metrics,
                "protocol": {
                    "implementation": "torch-fidelity",
                    **net.protocol,
                    "quantization": "uint8",
                    "metrics": p.metrics,
                    **metric_protocol(p.metrics, args.n_fake, ref.n, args.n_projections, SWD_SAMPLES),
                    "reference_stats_protocol": ref.protocol,
                },
            }
        )
        if missing:
            result["not_computed"] = missing
        for line in summary_lines(metrics, keys, spread_layouts(args.n_fake, ref.n)):
            print(f"ganbench: {line}", file=sys.stderr)
    write_json_atomic(p.out, result, allow_nan=False)
    result["written_to"] = str(p.out)
    return result


def summary_lines(metrics: dict[str, float], keys: dict[str, str],
                  layouts: dict[str, tuple[int, int]]) -> list[str]:
    """One line per measured value, ``key = value`` or, for FD, KID and IS, ``key = value ± spread
    (std over <subsets> subsets of <size>)``; spreads are not lines of their own."""
    lines = []
    for name, key in keys.items():
        if name.endswith("_std") or key not in metrics:
            continue
        line = f"{key} = {metrics[key]:.4g}"
        std_key = keys.get(f"{name}_std")
        if std_key in metrics:
            subsets, size = layouts[name]
            parts = "splits" if name == "is" else "subsets"
            line += f" ± {metrics[std_key]:.2g} (std over {subsets} {parts} of {count_tag(size)})"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(json.dumps(evaluate(args), indent=2, allow_nan=False))
    return 0

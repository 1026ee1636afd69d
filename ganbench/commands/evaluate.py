"""``ganbench evaluate``: measure a trained generator after training, with its protocol.

Image data: FD/FID, IS, KID and improved precision/recall computed by torch-fidelity's metric
functions on features of the chosen network (built through torch-fidelity's feature-extractor
registry), plus sliced Wasserstein distances; reference statistics come from the on-disk cache.
Toy data: mode coverage, exact W1 and SWD. Prints one JSON object and writes it to
``<run>/eval_<features>_<n>.json``.
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any

import torch

from ganbench import GanbenchError
from ganbench.metrics.features import FEATURE_NETS, load_feature_net
from ganbench.metrics.image import IMAGE_METRICS, count_tag, fidelity_metrics, metric_keys, swd_metrics
from ganbench.metrics.reference import extract_features, reference_statistics
from ganbench.metrics.sampling import generate
from ganbench.metrics.toy import mode_metrics
from ganbench.metrics.wasserstein import sliced_wasserstein, w1_exact

DEFAULT_FEATURES = {"fashion_mnist": "fmnist", "digits": "digits"}
"""Feature net used when ``--features`` is not given; every other image data set uses inception."""


class CommandParser(argparse.ArgumentParser):
    """argparse whose usage errors become one-line ``GanbenchError``s."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise GanbenchError(f"{self.prog}: {message}")


def run_dir_of(ckpt: str | Path) -> Path:
    """``<run>`` of ``<run>/checkpoints/<name>.ckpt``; else the checkpoint's folder."""
    parent = Path(ckpt).resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def datamodule_for(ckpt: str | Path, data: str | None, root: str | None) -> Any:
    """The ``GANDataModule`` a checkpoint was trained on (its saved hyper-parameters), or ``data``."""
    from ganbench.data import GANDataModule

    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    hp = dict(blob.get("datamodule_hyper_parameters") or {}) if isinstance(blob, dict) else {}
    if data is not None:
        hp["dataset"] = data
    if root is not None:
        hp["root"] = root
    if "dataset" not in hp:
        raise GanbenchError(f"checkpoint {ckpt} does not record its data set; pass --data NAME")
    hp["download"] = False
    # LightningCLI stores its own entries (``_instantiator``, ``_class_path``) next to the arguments
    accepted = inspect.signature(GANDataModule.__init__).parameters
    return GANDataModule(**{k: v for k, v in hp.items() if k in accepted})


def build_parser() -> CommandParser:
    p = CommandParser(prog="ganbench evaluate", description=__doc__)
    p.add_argument("--ckpt", required=True, help="checkpoint of a ganbench run")
    p.add_argument("--replica", type=int, default=None, help="replica K of a population checkpoint")
    p.add_argument("--n-fake", type=int, default=10000)
    p.add_argument("--n-real", type=int, default=None, help="reference images (default: --n-fake)")
    p.add_argument("--features", default=None, help=f"one of {', '.join(FEATURE_NETS)} (default: per data set)")
    p.add_argument("--data", default=None, help="data set (default: the one recorded in the checkpoint)")
    p.add_argument("--root", default=None, help="data folder")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--metrics", nargs="+", default=list(IMAGE_METRICS), help=f"of {', '.join(IMAGE_METRICS)}")
    p.add_argument("--feature-weights", default=None, help="weights of a domain feature net")
    p.add_argument("--inception-weights", default=None, help="TF-ported Inception-v3 weights (.pth)")
    p.add_argument("--n-projections", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use the EMA generator")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="JSON path (default: <run>/eval_<features>_<n>.json)")
    return p


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation described by parsed ``args``; returns the JSON-able result."""
    from rich.progress import Progress

    from ganbench.models import load_module

    if args.n_fake < 2:
        raise GanbenchError(f"--n-fake={args.n_fake} is too small; it must be >= 2")
    dm = datamodule_for(args.ckpt, args.data, args.root)
    module = load_module(args.ckpt, map_location=args.device, replica=args.replica).eval()
    n_real = args.n_real or args.n_fake
    with Progress(transient=True) as bar:
        task = bar.add_task("generating", total=args.n_fake)
        batches = []
        for x in generate(module, args.n_fake, args.batch_size, args.seed, args.ema):
            batches.append(x.float().cpu())
            bar.advance(task, len(x))
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
        features = "toy"
        real = dm.real_samples(n_real, split=args.split, seed=args.seed)
        metrics: dict[str, float] = {}
        if dm.mixture is not None:
            mm = mode_metrics(fake, dm.mixture.centers, dm.mixture.std)
            metrics.update(
                {
                    "modes_covered": mm["modes_covered"],
                    "high_quality_frac": mm["high_quality_frac"],
                    "kl_modes": mm["kl_to_uniform"],
                }
            )
        n_w1 = min(args.n_fake, n_real, 2000)
        metrics["w1_exact"] = w1_exact(fake[:n_w1], real[:n_w1])
        gen = torch.Generator().manual_seed(args.seed)
        metrics[f"swd_{args.n_projections}p"] = sliced_wasserstein(fake, real, args.n_projections, gen)
        result.update({"features": features, "n_real": n_real, "w1_samples": n_w1, "metrics": metrics})
    else:
        features = args.features or DEFAULT_FEATURES.get(dm.dataset, "inception")
        weights = args.inception_weights if features == "inception" else args.feature_weights
        net = load_feature_net(features, weights, args.device)
        ref = reference_statistics(dm, net, n_real, args.split, args.seed, progress=True)
        out = extract_features(net, fake, args.batch_size, progress="fake features")
        values = fidelity_metrics(out["features"], out["logits"], ref, args.metrics, seed=2020)
        if "swd" in args.metrics:
            m = min(args.n_fake, ref.n, 4096)
            real_pixels = dm.real_samples(m, split=args.split, seed=args.seed + 1)
            values.update(
                swd_metrics(
                    fake[:m],
                    real_pixels,
                    out["features"][:m],
                    ref.features[:m],
                    args.n_projections,
                    args.seed,
                )
            )
        keys = metric_keys(features, args.n_fake, args.metrics, args.n_projections)
        result.update(
            {
                "features": features,
                "n_real": ref.n,
                "resolution": int(dm.resolution),
                "metrics": {keys[k]: v for k, v in values.items()},
                "protocol": {
                    "implementation": "torch-fidelity",
                    **net.protocol,
                    "quantization": "uint8",
                    "kid_subsets": 100,
                    "kid_subset_size": min(1000, args.n_fake, ref.n),
                    "is_splits": 10,
                    "pr_neighborhood": 3,
                    "swd_samples": min(args.n_fake, ref.n, 4096),
                    "reference_stats_protocol": ref.protocol,
                },
            }
        )
    path = Path(args.out) if args.out else run_dir_of(args.ckpt) / f"eval_{features}_{count_tag(args.n_fake)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    result["written_to"] = str(path)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(json.dumps(evaluate(args), indent=2))
    return 0

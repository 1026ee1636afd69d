"""``ganbench train-features``: train the domain feature network of an offline data set.

The saved file ``<cache>/features/<net>-<sha256[:12]>.pt`` (or ``--out``) is what ``fd_<net>``,
``is_<net>`` and ``kid_<net>`` are measured with; its SHA-256 goes into every metric protocol.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ganbench import GanbenchError
from ganbench.commands.evaluate import CommandParser
from ganbench.metrics.features import DOMAIN_NETS, save_domain_net, train_domain_net

DATASETS = {spec["dataset"]: name for name, spec in DOMAIN_NETS.items()}
MIN_ACCURACY = {"fashion_mnist": 0.90, "digits": 0.95}
"""Test accuracy a feature net must reach to be worth measuring with."""
DEFAULT_EPOCHS = {"fashion_mnist": 4, "digits": 30}


def build_parser() -> CommandParser:
    p = CommandParser(prog="ganbench train-features", description=__doc__)
    p.add_argument("--data", required=True, help=f"data set: {', '.join(DATASETS)}")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_EPOCHS.items()),
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", type=str, default=None, help="directory of the raw data files")
    p.add_argument("--out", type=str, default=None, help="output file (default: the cache)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data not in DATASETS:
        raise GanbenchError(f"unknown --data '{args.data}'; valid choices: {', '.join(DATASETS)}")
    for key, value in (("epochs", args.epochs), ("batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise GanbenchError(f"--{key}={value} is invalid; it must be >= 1")
    if not args.lr > 0:
        raise GanbenchError(f"--lr={args.lr} is invalid; it must be > 0")
    if args.out is not None:
        from ganbench.commands.evaluate import check_out

        check_out(Path(args.out))
    name = DATASETS[args.data]
    epochs = args.epochs or DEFAULT_EPOCHS[args.data]
    start = time.perf_counter()
    net, acc = train_domain_net(
        args.data, epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, root=args.root
    )
    seconds = time.perf_counter() - start
    if acc < MIN_ACCURACY[args.data]:  # nothing is cached that a later fit would pick up and trust
        raise GanbenchError(
            f"feature net '{name}' reached only {acc:.3f} test accuracy "
            f"(needs {MIN_ACCURACY[args.data]:.2f}); nothing saved; train longer with --epochs"
        )
    path, digest = save_domain_net(
        net, name, acc, args.out, extra={"dataset": args.data, "epochs": epochs, "seed": args.seed}
    )
    print(
        json.dumps(
            {
                "feature_net": name,
                "data": args.data,
                "test_accuracy": round(acc, 4),
                "train_seconds": round(seconds, 1),
                "path": str(path),
                "sha256": digest,
            }
        )
    )
    return 0

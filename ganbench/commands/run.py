"""``ganbench run`` (what ``make run`` calls): ``ganbench fit`` with a profile that suits the machine.

``--profile auto`` (the default) trains ``configs/sngan.yaml`` as it is when a GPU is visible. Without
one, the SNGAN config gets the CPU profile ``configs/profiles/sngan_cpu.yaml`` on top: the same family
and data (SNGAN, Fashion-MNIST at 32×32), narrower networks and Miyato et al.'s n_dis = 1 setting,
2000 G iterations and a 2000-sample ``fd_fmnist`` at the end — 8 min 12 s end to end on 2 idle cores.
When the Fashion-MNIST feature net behind ``fd_fmnist`` is missing, the CPU profile copies the one
shipped with ganbench into the cache (its SHA-256 checked: the standard net of ``ganbench
train-features --data fashion_mnist``, so the number compares with every other fd_fmnist of that net),
and trains one only when the shipped file cannot be used. ``--profile full``
runs the config as it is on any machine; ``--profile cpu`` forces the CPU profile. Every other
argument goes to ``ganbench fit`` unchanged.
"""

from __future__ import annotations

import sys

from ganbench import GanbenchError
from ganbench.commands.evaluate import CommandParser

FULL_CONFIG = "configs/sngan.yaml"
CPU_PROFILE = "configs/profiles/sngan_cpu.yaml"


def build_parser() -> CommandParser:
    p = CommandParser(prog="ganbench run", description=__doc__, allow_abbrev=False)
    p.add_argument("--profile", choices=("auto", "cpu", "full"), default="auto",
                   help="auto: cpu without a GPU (for configs/sngan.yaml), else full")
    p.add_argument("--config", action="append", default=None,
                   help="config files as for ganbench fit (default configs/sngan.yaml)")
    return p


def choose_profile(profile: str, configs: list[str], cuda: bool) -> str:
    """``cpu`` or ``full``: auto is cpu only for the SNGAN config alone on a machine without a GPU."""
    if profile == "cpu" and configs != [FULL_CONFIG]:
        raise GanbenchError(f"--profile cpu exists for --config {FULL_CONFIG} alone, not --config "
                            f"{' --config '.join(configs)}")
    if profile == "auto":
        return "cpu" if configs == [FULL_CONFIG] and not cuda else "full"
    return profile


def fit_argv(profile: str, configs: list[str], rest: list[str]) -> list[str]:
    """The ``ganbench fit`` arguments a profile stands for."""
    files = [*configs, *([CPU_PROFILE] if profile == "cpu" else [])]
    return ["fit", *[a for f in files for a in ("--config", f)], *rest]


def main(argv: list[str] | None = None) -> int:
    import torch

    from ganbench.cli import main as ganbench_main

    args, rest = build_parser().parse_known_args(argv)
    configs = args.config or [FULL_CONFIG]
    profile = choose_profile(args.profile, configs, torch.cuda.is_available())
    if profile == "cpu":
        print(f"ganbench: no GPU found: running the CPU profile ({FULL_CONFIG} with {CPU_PROFILE} on top: "
              "same family and data, smaller networks, a shorter run; 8 min 12 s on 2 idle cores). "
              f"The full run: make run PROFILE=full (ganbench fit --config {FULL_CONFIG})", flush=True)
        ensure_feature_net()
    return ganbench_main(fit_argv(profile, configs, rest))


def ensure_feature_net() -> None:
    """Put the standard Fashion-MNIST feature net into the cache when none is there, so the run gets
    fd_fmnist: the weights shipped with ganbench (SHA-256 checked), or, when those cannot be used,
    trained once (``ganbench train-features --data fashion_mnist``)."""
    from ganbench.metrics.features import SHIPPED_WEIGHTS, find_domain_weights, install_shipped_weights

    try:
        find_domain_weights("fmnist")
        return
    except GanbenchError:
        pass
    try:
        path = install_shipped_weights("fmnist")
        print(f"ganbench: first run: the Fashion-MNIST feature net behind fd_fmnist is the one shipped with "
              f"ganbench (sha256 {SHIPPED_WEIGHTS['fmnist'][:12]}), now in {path}", flush=True)
        return
    except GanbenchError as err:
        print(f"ganbench: {err}; training the feature net instead (ganbench train-features --data "
              "fashion_mnist, about 8 minutes on 2 idle cores, then cached)", file=sys.stderr, flush=True)
    from ganbench.commands import train_features

    code = train_features.main(["--data", "fashion_mnist"])
    if code:
        sys.exit(code)

"""``ganbench sweep``: run an Optuna stability study described by ``sweeps/NAME.yaml``.

Every trial is an ordinary ``ganbench fit`` per seed (see :mod:`ganbench.sweep.objective`). The
space is validated before any trial starts; storage defaults to ``sqlite:///sweeps/NAME.db``.
"""

from __future__ import annotations

import argparse

from ganbench.commands.evaluate import CommandParser


def build_parser() -> CommandParser:
    p = CommandParser(prog="ganbench sweep", description=__doc__)
    p.add_argument("--config", required=True, help="sweep description, sweeps/NAME.yaml")
    p.add_argument("--storage", default=None,
                   help="sqlite:///PATH.db (default sqlite:///sweeps/NAME.db), postgresql://…, or journal:///PATH.log")
    p.add_argument("--n-trials", type=int, default=100, help="finished trials the study should hold")
    p.add_argument("--workers", type=int, default=1, help="local worker processes on the same study")
    p.add_argument("--study-name", default=None, help="default: the sweep's name")
    p.add_argument("--runs-root", default="runs/sweeps", help="trial run folders: RUNS_ROOT/STUDY/trial_NNNNN/seed_S")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--check", action="store_true", help="validate the space and exit without running trials")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) and no per-trial lines (otherwise)")
    p.add_argument("--no-wandb", action="store_true",
                   help="trial fits log no W&B runs (same as run.wandb: false in the sweep's overrides)")
    return p


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def main(argv: list[str]) -> int:
    args: argparse.Namespace = build_parser().parse_args(argv)
    from ganbench.sweep.space import load_space
    from ganbench.sweep.study import finished_count, run_sweep

    space = load_space(args.config)
    if args.check:
        cells = 1
        for choices in space.factors.values():
            cells *= len(choices)
        print(f"{args.config}: valid; {plural(len(space.factors), 'factor')} ({plural(cells, 'cell')}), "
              f"{plural(len(space.nuisance), 'nuisance parameter')}, {plural(len(space.seeds), 'seed')} per trial, "
              f"{plural(space.budget, 'G iteration')} per fit")
        return 0
    study = run_sweep(args.config, args.storage, args.study_name, args.n_trials, args.workers,
                      runs_root=args.runs_root, threads=args.threads, progress=not args.no_progress,
                      extra_args=["--run.wandb", "false"] if args.no_wandb else None)
    print(f"study {study.study_name}: {finished_count(study)} finished trials")
    return 0

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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str]) -> int:
    args: argparse.Namespace = build_parser().parse_args(argv)
    from ganbench.sweep.space import load_space
    from ganbench.sweep.study import finished_count, run_sweep

    space = load_space(args.config)
    if args.check:
        print(f"{args.config}: valid; {len(space.factors)} factors, "
              f"{len(space.nuisance)} nuisance parameters, {len(space.seeds)} seeds per trial")
        return 0
    study = run_sweep(args.config, args.storage, args.study_name, args.n_trials, args.workers,
                      runs_root=args.runs_root, threads=args.threads, progress=not args.no_progress)
    print(f"study {study.study_name}: {finished_count(study)} finished trials")
    return 0

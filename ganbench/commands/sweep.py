"""``ganbench sweep``: run an Optuna stability study described by ``sweeps/NAME.yaml``.

Every trial is an ordinary ``ganbench fit`` per seed (see :mod:`ganbench.sweep.objective`). The
space is validated before any trial starts; storage defaults to ``sqlite:///sweeps/NAME.db``.
"""

from __future__ import annotations

import argparse
import sys

from ganbench import GanbenchError
from ganbench.commands.evaluate import CommandParser


def build_parser() -> CommandParser:
    p = CommandParser(prog="ganbench sweep", description=__doc__)
    p.add_argument("--config", required=True, help="sweep description, sweeps/NAME.yaml")
    p.add_argument("--storage", default=None,
                   help="sqlite:///PATH.db (default sqlite:///sweeps/NAME.db), postgresql://…, or journal:///PATH.log")
    p.add_argument("--n-trials", type=int, default=100,
                   help="finished trials the study should hold (a designed study: its design points instead)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes on the same study")
    p.add_argument("--population-trials", type=int, default=1, metavar="K",
                   help="train K trials of one cell (K x seeds replicas) as one population fit; their learning "
                        "rates, betas, ... are drawn per trial, the structural nuisance (--check names it) is shared")
    p.add_argument("--study-name", default=None, help="default: the sweep's name")
    p.add_argument("--runs-root", default="runs/sweeps",
                   help="trial run folders: RUNS_ROOT/STUDY/trial_NNNNN/seed_S (batches: RUNS_ROOT/STUDY/batch_NNNNN)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--check", action="store_true", help="validate the space and exit without running trials")
    p.add_argument("--pilot", default=None, metavar="STUDY",
                   help="with --check on a designed sweep: a finished study whose residual SDs turn the detectable "
                        "differences into metric units and rate points")
    p.add_argument("--pilot-storage", default=None, metavar="URL",
                   help="where the --pilot study lives (default: --storage, else sqlite:///sweeps/STUDY.db)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) and no per-trial lines (otherwise)")
    p.add_argument("--no-wandb", action="store_true",
                   help="trial fits log no W&B runs (same as run.wandb: false in the sweep's overrides)")
    return p


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def batching(space, k: int) -> str:
    """What ``--population-trials k`` does with this space, in words (the ``--check`` line)."""
    from ganbench.sweep.study import batch_size

    size, note = batch_size(space, k)
    if size == 1:
        return note or ""
    per = {}
    for _, name, key in space.replica_bind:
        if name not in space.structural:
            per.setdefault(name, []).append(key)
    drawn = "; ".join(f"{n} ({', '.join(keys)})" for n, keys in per.items()) or "none"
    shared = ", ".join(f"{n} (bound to {', '.join(space.bound_to(n))}, not per replica)" for n in space.structural)
    line = (f"--population-trials {k}: {k} trials x {plural(len(space.seeds), 'seed')} = {k * len(space.seeds)} "
            f"replicas per fit; drawn per trial: {drawn}; shared by the trials of a batch: the factors"
            + (f" and the structural nuisance {shared}: their draws of it are coupled" if shared else ""))
    return line + (f"\n{note}" if note else "")


def main(argv: list[str]) -> int:
    args: argparse.Namespace = build_parser().parse_args(argv)
    from ganbench.sweep.resume import SweepStopped
    from ganbench.sweep.space import load_space
    from ganbench.sweep.study import finished_count, run_sweep

    if args.population_trials < 1:
        raise GanbenchError(f"--population-trials must be >= 1, got {args.population_trials}")
    space = load_space(args.config)
    if args.check:
        cells = 1
        for choices in space.factors.values():
            cells *= len(choices)
        print(f"{args.config}: valid; {plural(len(space.factors), 'factor')} ({plural(cells, 'cell')}), "
              f"{plural(len(space.nuisance), 'nuisance parameter')}, {plural(len(space.seeds), 'seed')} per trial, "
              f"{plural(space.budget, 'G iteration')} per fit")
        if args.population_trials > 1:
            print(batching(space, args.population_trials))
        if space.design.kind != "random":  # the design, its aliasing, what it detects and how long it takes
            from ganbench.sweep.plan import pilot_sigma, plan_lines

            pilot = None
            if args.pilot:
                url = args.pilot_storage or args.storage or f"sqlite:///sweeps/{args.pilot}.db"
                pilot = (args.pilot, *pilot_sigma(url, args.pilot))
            print(plan_lines(space, args.workers, pilot=pilot))
        elif args.pilot:
            raise GanbenchError("--pilot plans a designed sweep (design: factorial or fractional); "
                                f"{args.config} has design: random")
        return 0
    n_trials = args.n_trials
    if space.design.kind != "random":  # the design's points are the trials (--n-trials does not apply)
        from ganbench.sweep.plan import start_design

        n_trials = start_design(space, args.storage, args.study_name)
    try:
        study = run_sweep(args.config, args.storage, args.study_name, n_trials, args.workers,
                          runs_root=args.runs_root, threads=args.threads, progress=not args.no_progress,
                          population_trials=args.population_trials,
                          extra_args=["--run.wandb", "false"] if args.no_wandb else None)
    except SweepStopped as stopped:
        print(f"ganbench: {stopped}", file=sys.stderr)
        return stopped.code
    print(f"study {study.study_name}: {finished_count(study)} finished trials")
    return 0

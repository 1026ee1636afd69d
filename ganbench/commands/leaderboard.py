"""``ganbench leaderboard``: rank the cells of a stability study and draw its pictures.

Writes ``leaderboard.csv``, ``leaderboard.md``, ``heatmap_quality.png``, ``heatmap_divergence.png``,
``boxplot_quality.png``, ``budget_curves.png``, ``intervals_top.png`` and a self-contained ``report.html``
to ``--out``, prints the table, and logs the same table and pictures to a W&B summary run (offline by
default).
"""

from __future__ import annotations

from pathlib import Path

from ganbench.commands.evaluate import CommandParser


def build_parser() -> CommandParser:
    p = CommandParser(prog="ganbench leaderboard", description=__doc__)
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", required=True, help="the sweep's storage URL")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-wandb", action="store_true", help="do not log the W&B summary run")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import optuna

    from ganbench import GanbenchError
    from ganbench.sweep.leaderboard import build_leaderboard
    from ganbench.sweep.study import make_storage

    storage = make_storage(args.storage)
    try:
        study = optuna.load_study(study_name=args.study, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise GanbenchError(f"--study {args.study} is not in {args.storage}; studies: {', '.join(names) or 'none'}"
                            ) from None
    build_leaderboard(study, Path(args.out), wandb_log=not args.no_wandb)
    print(f"leaderboard of {args.study} written to {args.out}")
    return 0

"""Optuna stability studies over loss × normalization × penalty, and their leaderboards.

:mod:`~ganbench.sweep.space` reads and validates ``sweeps/NAME.yaml``; :mod:`~ganbench.sweep.objective`
runs one trial as ordinary ``ganbench fit`` runs (one per seed) and scores quality and stability;
:mod:`~ganbench.sweep.study` owns storage, heartbeats and worker processes;
:mod:`~ganbench.sweep.leaderboard` turns a study into tables, pictures and a report.
"""

from ganbench.sweep.space import SweepSpace, load_space, parse_space

__all__ = ["SweepSpace", "load_space", "parse_space"]

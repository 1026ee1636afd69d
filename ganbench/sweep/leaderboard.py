"""Leaderboards of a stability study: one row per cell (a combination of factor values, e.g. loss ×
normalization × penalty), describing the *distribution* of its trials (Lucic et al. 2018 §5,
Kurach et al. 2019 §4), never only its best run.

Per cell, over its COMPLETE trials (pruned, invalid and failed trials are counted, not scored; a failed trial
that was retried counts as its retry; a trial that measured nothing is never COMPLETE, :mod:`ganbench.sweep.resume`):

* ``median``: median trial quality; ``top5``: the 5 % quantile of trial quality on the good side
  (5th percentile when minimizing, 95th when maximizing; numpy's linear interpolation);
* ``iqr``: inter-quartile range of trial quality (spread over the nuisance hyper-parameters);
* ``divergence``: mean fraction of diverged seeds; ``collapse``: mean fraction of collapsed seeds;
* ``seed_spread``: median over trials of the across-seed standard deviation of final quality;
* ``oscillation``: median over trials of the late-training oscillation.

Cells are ranked by ``median`` (better first), ties broken by ``divergence`` then by cell name.

Whether a difference is more than seed noise (:mod:`ganbench.sweep.stats`): per cell, 95 % bootstrap
intervals of ``median``, ``divergence`` and ``collapse`` over its seeds (trials, then seeds within
them, resampled); and, within each data set, a two-sided Mann–Whitney U test of every scored cell's
seed qualities against those of the data set's best-ranked cell, Holm-adjusted over those comparisons
(``p_holm``; ``distinguishable`` = ``yes`` below 0.05, ``no`` otherwise, ``best`` for the best).
Diverged seeds enter at ``quality.worst``: tied with each other and worse than every completed seed.

The budget curve of a group (Lucic et al. 2018 Fig. 5, Kurach et al. 2019 Fig. 1) is the expected best
quality after ``k`` trials drawn with replacement from the group's trials — the mean of the bootstrap,
computed exactly: with values sorted best first, x_(1) … x_(n),
E[best of k] = Σ_i x_(i) · [((n − i + 1)/n)^k − ((n − i)/n)^k].
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ganbench import GanbenchError
from ganbench.sweep.effects import EFFECT_COLUMNS, write_effects
from ganbench.sweep.plots import _by_data, caption, write_plots
from ganbench.sweep.space import short
from ganbench.sweep.stats import ALPHA, LEVEL, RESAMPLES, cell_intervals, holm, mann_whitney

COLUMNS = ("rank", "cell", "trials", "seeds", "median", "median_lo", "median_hi", "top5", "iqr",
           "divergence", "divergence_lo", "divergence_hi", "collapse", "collapse_lo", "collapse_hi",
           "p", "p_holm", "distinguishable", "seed_spread", "oscillation", "pruned", "invalid", "failed", "note")
#: what leaderboard.md, report.html and the terminal show: an interval is one column "[lo, hi]"
SHOWN = ("rank", "cell", "trials", "seeds", "median", "median_ci", "top5", "iqr", "divergence", "divergence_ci",
         "collapse", "collapse_ci", "p_holm", "distinguishable", "seed_spread", "oscillation", "pruned", "invalid",
         "failed", "note")


@dataclass(frozen=True)
class TrialRow:
    number: int
    cell: tuple[Any, ...]
    quality: float
    diverged_frac: float
    collapsed_frac: float
    spread: float
    oscillation: float
    #: per seed (quality, diverged, collapsed) (:func:`seed_values`)
    seeds: tuple[tuple[float, float, float], ...] = ()

    def seed_rows(self) -> tuple[tuple[float, float, float], ...]:
        """``seeds``, or the trial as one value when it has none."""
        return self.seeds or ((self.quality, self.diverged_frac, self.collapsed_frac),)


@dataclass
class CellStats:
    rank: int
    cell: str
    trials: int
    median: float
    top5: float
    iqr: float
    divergence: float
    collapse: float
    seed_spread: float
    oscillation: float
    pruned: int
    invalid: int
    failed: int
    note: str = ""  # why an unscored cell has no quality: "invalid", "pruned", "failed"
    values: tuple[Any, ...] = ()
    seeds: int = 0  # seed-level values behind the intervals and the test
    median_lo: float = math.nan  # 95 % bootstrap interval of median
    median_hi: float = math.nan
    divergence_lo: float = math.nan
    divergence_hi: float = math.nan
    collapse_lo: float = math.nan
    collapse_hi: float = math.nan
    p: float = math.nan  # Mann–Whitney U p-value against the best cell of its data set
    p_holm: float = math.nan  # Holm-adjusted over the data set's comparisons
    distinguishable: str = ""  # "best", "yes" (p_holm < 0.05), "no"; empty for an unscored cell


@dataclass
class Board:
    """Everything a leaderboard shows: the space, the scored trials and the ranked cells."""

    study: str
    factors: list[str]
    metric: str
    direction: str
    rows: list[TrialRow]
    cells: list[CellStats]
    choices: dict[str, list[Any]] | None = None  # every value of every factor, from the study's space
    space: dict[str, Any] | None = None

    def counts(self) -> str:
        """``N scored trials; a invalid, b pruned, c failed`` over the whole study."""
        tally = {k: sum(getattr(c, k) for c in self.cells) for k in ("invalid", "pruned", "failed")}
        return f"{len(self.rows)} scored trials; " + ", ".join(f"{n} {k}" for k, n in tally.items())

    def label(self, cell: tuple[Any, ...]) -> str:
        return " ".join(f"{short(k)}={v}" for k, v in zip(self.factors, cell)) or "all"


def load_board(study: optuna.Study) -> Board:
    """Read the study's trials and compute the ranked cells."""
    from ganbench.sweep.study import study_space

    space = study_space(study)
    if not space:
        raise GanbenchError(f"study {study.study_name} was not created by `ganbench sweep` (no 'space' attribute)")
    factors = list(space["factors"])
    q = space["quality"]
    rows: list[TrialRow] = []
    other: dict[tuple[Any, ...], dict[str, int]] = {}
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}  # counted as their retry
    for t in trials:
        if any(k not in t.params for k in factors) or t.number in retried:
            continue
        cell = tuple(t.params[k] for k in factors)
        counts = other.setdefault(cell, {"pruned": 0, "invalid": 0, "failed": 0})
        if t.state == TrialState.COMPLETE and "quality" in t.user_attrs:
            a = t.user_attrs
            rows.append(TrialRow(t.number, cell, float(a["quality"]), float(a["diverged_frac"]),
                                 float(a["collapsed_frac"]), float(a["spread"]), float(a["oscillation"]),
                                 seed_values(a)))
        elif t.state == TrialState.PRUNED:
            counts["invalid" if "invalid" in t.user_attrs else "pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
    choices = {k: list(v) for k, v in space["factors"].items()}
    board = Board(study.study_name, factors, q["metric"], q["direction"], rows, [], choices,
                  {k: space[k] for k in ("factors", "nuisance", "quality", "collapse", "objectives", "budget",
                                         "seeds", "base_config", "sampler") if k in space})
    board.cells = rank_cells(board, other)
    return board


def seed_values(attrs: dict[str, Any]) -> tuple[tuple[float, float, float], ...]:
    """``(quality, diverged, collapsed)`` per seed from a trial's user attributes: ``seed_quality`` and
    ``seed_status`` (objective.py). Per-seed collapse is not stored, only ``collapsed_frac``: the
    trial's collapsed count goes to its diverged seeds first (a diverged seed counts as collapsed),
    then to the others in order — which seeds is immaterial to a rate and its interval. A trial
    without ``seed_quality`` is one value: its quality and its two fractions."""
    quality = attrs.get("seed_quality") or []
    if not quality:
        return ((float(attrs["quality"]), float(attrs["diverged_frac"]), float(attrs["collapsed_frac"])),)
    n = len(quality)
    status = attrs.get("seed_status") or []
    if len(status) == n:
        diverged = [s != "completed" for s in status]
    else:
        k = round(float(attrs["diverged_frac"]) * n)
        diverged = [i < k for i in range(n)]
    extra = round(float(attrs["collapsed_frac"]) * n) - sum(diverged)
    collapsed = []
    for d in diverged:
        collapsed.append(d or extra > 0)
        extra -= not d
    return tuple((float(q), float(d), float(c)) for q, d, c in zip(quality, diverged, collapsed))


def top_quantile(values: list[float], direction: str, fraction: float = 0.05) -> float:
    """The ``fraction`` quantile on the good side of ``values`` (linear interpolation)."""
    p = fraction if direction == "minimize" else 1.0 - fraction
    return float(np.quantile(np.asarray(values, dtype=float), p))


def rank_cells(board: Board, other: dict[tuple[Any, ...], dict[str, int]] | None = None) -> list[CellStats]:
    other = other or {}
    groups: dict[tuple[Any, ...], list[TrialRow]] = {}
    for r in board.rows:
        groups.setdefault(r.cell, []).append(r)
    sign = 1.0 if board.direction == "minimize" else -1.0
    cells = []
    for cell, rows in groups.items():
        q = [r.quality for r in rows]
        q25, q75 = np.quantile(np.asarray(q, dtype=float), [0.25, 0.75])
        counts = other.get(cell, {})
        cells.append(CellStats(
            rank=0, cell=board.label(cell), trials=len(rows), median=float(statistics.median(q)),
            top5=top_quantile(q, board.direction), iqr=float(q75 - q25),
            divergence=float(statistics.fmean(r.diverged_frac for r in rows)),
            collapse=float(statistics.fmean(r.collapsed_frac for r in rows)),
            seed_spread=float(statistics.median(r.spread for r in rows)),
            oscillation=float(statistics.median(r.oscillation for r in rows)),
            pruned=counts.get("pruned", 0), invalid=counts.get("invalid", 0), failed=counts.get("failed", 0),
            values=cell))
    cells.sort(key=lambda c: (sign * c.median, c.divergence, c.cell))
    compare(board, cells, groups)
    unscored = []  # cells with trials but none scored: shown after the ranked ones, with the reason
    for cell, counts in other.items():
        if cell in groups:
            continue
        note = next(k for k in ("invalid", "pruned", "failed") if counts.get(k)) if any(counts.values()) else "running"
        nan = float("nan")
        unscored.append(CellStats(rank=0, cell=board.label(cell), trials=0, median=nan, top5=nan, iqr=nan,
                                  divergence=nan, collapse=nan, seed_spread=nan, oscillation=nan,
                                  pruned=counts.get("pruned", 0), invalid=counts.get("invalid", 0),
                                  failed=counts.get("failed", 0), note=note + " only", values=cell))
    cells += sorted(unscored, key=lambda c: c.cell)
    for i, c in enumerate(cells, 1):
        c.rank = i
    return cells


def compare(board: Board, cells: list[CellStats], groups: dict[tuple[Any, ...], list[TrialRow]]) -> None:
    """Fill the ranked ``cells``' intervals, and test each against the best cell of its data set
    (module docstring)."""
    for c in cells:
        trials = [np.asarray(r.seed_rows(), dtype=float) for r in groups[c.values]]
        c.seeds = sum(len(t) for t in trials)
        ci = cell_intervals(trials)
        (c.median_lo, c.median_hi), (c.divergence_lo, c.divergence_hi), (c.collapse_lo, c.collapse_hi) = (
            ci["quality"], ci["diverged"], ci["collapsed"])
    for ranked in _by_data(board, cells).values():
        best, rest = ranked[0], ranked[1:]
        best.distinguishable = "best"
        qualities = {c.cell: [s[0] for r in groups[c.values] for s in r.seed_rows()] for c in ranked}
        for c in rest:
            c.p = mann_whitney(qualities[c.cell], qualities[best.cell])
        for c, adjusted in zip(rest, holm([c.p for c in rest])):
            c.p_holm = adjusted
            c.distinguishable = "yes" if adjusted < ALPHA else "no"


# ------------------------------------------------------------------------------------ outputs
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _shown(c: CellStats, key: str) -> str:
    """One cell of the shown table (``SHOWN``): ``*_ci`` columns are ``[lo, hi]``."""
    if key.endswith("_ci"):
        lo, hi = getattr(c, key[:-3] + "_lo"), getattr(c, key[:-3] + "_hi")
        return "–" if math.isnan(lo) else f"[{lo:.4g}, {hi:.4g}]"
    return _fmt(getattr(c, key))


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def verdict(board: Board) -> list[str]:
    """In words, per data set: the best cell and the cells not distinguishable from it; then how."""
    out = []
    for data, ranked in _by_data(board, board.cells).items():
        best, rest = ranked[0], ranked[1:]
        same = [c.cell for c in rest if c.distinguishable == "no"]
        where = f"On dataset={data}: best" if data is not None else "Best"
        ci = "no interval" if math.isnan(best.median_lo) else f"95 % CI {_shown(best, 'median_ci')}"
        line = f"{where} `{best.cell}` (median {_fmt(best.median)}, {ci}, {_count(best.seeds, 'seed')})"
        if rest:
            line += ("; not distinguishable from it: " + (", ".join(f"`{name}`" for name in same) or "none")
                     + f"; distinguishable: {len(rest) - len(same)} of {len(rest)} other cells")
        out.append(line + ("." if rest else "; no other cell to compare."))
    if out:
        out.append(f"Intervals: {LEVEL * 100:g} % percentile bootstrap of the cell's statistic, {RESAMPLES} "
                   "resamples of its trials and of the seeds within them (fixed seed). Test: two-sided "
                   "Mann–Whitney U of each cell's seed qualities against the best cell's (diverged seeds at "
                   "quality.worst), p-values Holm-adjusted over the cells compared; not distinguishable = "
                   f"adjusted p ≥ {ALPHA:g}, which does not mean equal: with few seeds, large differences stay "
                   "undetected.")
    return out


def write_tables(board: Board, out: Path) -> tuple[Path, Path]:
    """``leaderboard.csv`` (full precision) and ``leaderboard.md``."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "leaderboard.csv", out / "leaderboard.md"
    factor_cols = [short(k) for k in board.factors]
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*COLUMNS, *factor_cols])
        for c in board.cells:
            d = asdict(c)
            w.writerow([*(repr(d[k]) if isinstance(d[k], float) else d[k] for k in COLUMNS), *c.values])
    lines = [f"# Leaderboard of study `{board.study}`", "",
             f"Quality: `{board.metric}` ({board.direction}); {board.counts()}.", "",
             "| " + " | ".join(SHOWN) + " |", "|" + "---|" * len(SHOWN)]
    lines += ["| " + " | ".join(_shown(c, k) for k in SHOWN) + " |" for c in board.cells]
    lines += [line for v in verdict(board) for line in ("", v)]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def print_table(board: Board, limit: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{board.study}: {board.metric} ({board.direction}), {board.counts()}")
    for col in SHOWN:
        table.add_column(col, justify="left" if col == "cell" else "right", no_wrap=col == "cell")
    for c in board.cells[:limit]:
        table.add_row(*(_shown(c, k) for k in SHOWN))
    console = Console()
    console = Console(width=max(console.width, 240) if not console.is_terminal else None)
    console.print(table)
    for line in verdict(board):
        console.print(line, markup=False)


TABLE_CAPTION = ("One row per cell, best median first. [lo, hi]: 95 % bootstrap interval over the cell's trials and "
                 "seeds. p_holm: Mann–Whitney U p-value of the cell's seed qualities against the best cell of its "
                 "data set, Holm-adjusted; distinguishable: yes when p_holm < 0.05.")


def write_html(board: Board, out: Path, images: list[Path]) -> Path:
    """A self-contained ``report.html``: the table and every picture inlined as base64 PNG."""
    import base64
    import html

    head = "".join(f"<th>{html.escape(c)}</th>" for c in SHOWN)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_shown(c, k))}</td>" for k in SHOWN) + "</tr>"
                   for c in board.cells)
    said = "".join(f"<p>{html.escape(v)}</p>" for v in verdict(board))
    pics = "".join(f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption><b>{p.stem}</b>: '
                   f'{html.escape(caption(board, p.name))}</figcaption></figure>' for p in images)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(board.study)}</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 6px;font-size:12px}img{max-width:100%}</style></head><body>"
            f"<h1>Study {html.escape(board.study)}</h1><p>Quality {html.escape(board.metric)} "
            f"({board.direction}), {html.escape(board.counts())}.</p><table><caption>{html.escape(TABLE_CAPTION)}"
            f"</caption><tr>{head}</tr>{body}</table>{said}{pics}</body></html>")
    path = out / "report.html"
    path.write_text(page)
    return path


def trial_table(study: optuna.Study) -> tuple[list[str], list[list[Any]]]:
    """One row per trial (number, state, cell, every parameter, the trial's results — none for a trial that
    measured nothing, whose ``not_measured`` says why — and W&B runs): the table W&B's parallel-coordinates
    panel reads."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({k for t in trials for k in t.params}, key=lambda k: (k.count("."), k))
    results = ("quality", "diverged_frac", "collapsed_frac", "instability", "spread", "oscillation")
    cols = ["trial", "state", "cell", *(short(k) for k in params), *results, "invalid", "not_measured",
            "wandb_run_ids"]
    rows = [[t.number, t.state.name, t.user_attrs.get("cell", ""), *(t.params.get(k) for k in params),
             *(t.user_attrs.get(k) for k in results), t.user_attrs.get("invalid", ""),
             t.user_attrs.get("not_measured", ""), " ".join(t.user_attrs.get("wandb_run_ids", []))] for t in trials]
    return cols, rows


def log_wandb(board: Board, images: list[Path], out: Path, project: str = "ganbench",
              trials: tuple[list[str], list[list[Any]]] | None = None,
              effects: list[dict[str, Any]] | None = None) -> str:
    """One W&B summary run (job type ``leaderboard``, group = study, config = the study's space): the
    leaderboard, one row per trial (``trials``), the factor effects (``effects``, as in effects.csv) and
    the pictures. Offline unless WANDB_API_KEY or
    WANDB_MODE say otherwise; returns the run's local directory."""
    import os

    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    run = wandb.init(project=project, group=board.study, job_type="leaderboard", name=f"{board.study}-leaderboard",
                     dir=str(out), mode=mode, reinit="finish_previous", config=board.space or {},
                     settings=wandb.Settings(silent=True))  # ganbench says where the run is (build_leaderboard)
    try:
        cols = [*COLUMNS, *(short(k) for k in board.factors)]
        rows = [[asdict(c)[k] for k in COLUMNS] + list(map(str, c.values)) for c in board.cells]
        trial_cols, trial_rows = trials or ([], [])
        run.log({"leaderboard": wandb.Table(columns=cols, data=rows),
                 **({"trials": wandb.Table(columns=trial_cols, data=trial_rows)} if trial_cols else {}),
                 **({"effects": wandb.Table(columns=EFFECT_COLUMNS, data=[[r.get(k) for k in EFFECT_COLUMNS]
                                                                          for r in effects])} if effects else {}),
                 **{f"leaderboard/{p.stem}": wandb.Image(str(p)) for p in images}})
        return str(run.dir)
    finally:
        run.finish()


def build_leaderboard(study: optuna.Study, out: Path, wandb_log: bool = True, show: bool = True) -> Board:
    """Every output: terminal table, CSV, Markdown, PNGs, report.html and the W&B summary run."""
    out = Path(out)
    from ganbench.signals import deferred

    board = load_board(study)
    with deferred():  # a signal waits for the tables, plots and page to be written whole
        write_tables(board, out)
        images = write_plots(board, out)
        effect_images, effects = write_effects(study, board, out)  # effects.csv, leaderboard.md, forest plots
        images += effect_images
        write_html(board, out, images)
    if show:
        print_table(board)
    if wandb_log:
        run_dir = Path(log_wandb(board, images, out, trials=trial_table(study), effects=effects)).parent
        offline = run_dir.name.startswith("offline-")
        print(f"W&B summary run: {run_dir}" + (f" (offline; upload with: wandb sync {run_dir})" if offline else ""))
    return board

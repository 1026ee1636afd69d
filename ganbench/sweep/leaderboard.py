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
from ganbench.sweep.effects import EFFECT_COLUMNS, EFFECTS_CAPTION, write_effects
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


def _by_data(board: Board, cells: list[CellStats]) -> dict[Any, list[CellStats]]:
    """Scored ``cells`` per data set (one group when the study does not vary it), in rank order."""
    dk = _data_key(board)
    out: dict[Any, list[CellStats]] = {}
    for c in cells:
        if c.trials:
            out.setdefault(c.values[board.factors.index(dk)] if dk else None, []).append(c)
    return out


def expected_best(values: list[float], k: int, direction: str) -> float:
    """Expected best of ``k`` draws with replacement from ``values`` (closed form; module docstring)."""
    n = len(values)
    xs = sorted(values, reverse=direction == "maximize")
    return float(sum(x * (((n - i) / n) ** k - ((n - i - 1) / n) ** k) for i, x in enumerate(xs)))


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


def _axes_keys(board: Board) -> tuple[str, str]:
    """Heatmap rows and columns: the loss and normalization factors when present, else the first two."""
    def find(word: str, exclude: str | None = None) -> str | None:
        return next((k for k in board.factors if word in short(k) and k != exclude), None)

    rows = find("loss") or board.factors[0]
    cols = find("d_norm", rows) or find("norm", rows) or next((k for k in board.factors if k != rows), rows)
    return rows, cols


def facets(board: Board) -> list[tuple[tuple[str, Any], ...]]:
    """Every combination of the values of the factors that are not on a heatmap axis (one panel each)."""
    import itertools

    rk, ck = _axes_keys(board)
    rest = [k for k in board.factors if k not in (rk, ck)]
    return [tuple(zip(rest, combo)) for combo in itertools.product(*(_choices(board, k) for k in rest))]


def _choices(board: Board, key: str) -> list[Any]:
    i = board.factors.index(key)
    seen = {c.values[i] for c in board.cells} | {r.cell[i] for r in board.rows}
    listed = list((board.choices or {}).get(key, []))
    return listed + sorted((v for v in seen if v not in listed), key=str)


def heatmap_grid(board: Board, stat: str, facet: tuple[tuple[str, Any], ...] = ()
                 ) -> tuple[list[Any], list[Any], np.ndarray, np.ndarray]:
    """Median quality (``stat="quality"``) or mean divergence rate per (row, column) value pair within
    one facet (fixed values of the other factors), pooling the trials of the squares' cells (NaN where
    none is scored), and the number of scored trials."""
    rk, ck = _axes_keys(board)
    ri, ci = board.factors.index(rk), board.factors.index(ck)
    fixed = [(board.factors.index(k), v) for k, v in facet]
    space_rows, space_cols = _choices(board, rk), _choices(board, ck)
    grid = np.full((len(space_rows), len(space_cols)), np.nan)
    counts = np.zeros(grid.shape, dtype=int)
    for i, a in enumerate(space_rows):
        for j, b in enumerate(space_cols):
            sel = [r for r in board.rows if r.cell[ri] == a and r.cell[ci] == b
                   and all(r.cell[k] == v for k, v in fixed)]
            counts[i, j] = len(sel)
            if sel:
                grid[i, j] = (statistics.median(r.quality for r in sel) if stat == "quality"
                              else statistics.fmean(r.diverged_frac for r in sel))
    return space_rows, space_cols, grid, counts


def _unscored_note(board: Board, facet: tuple[tuple[str, Any], ...], a: Any, b: Any) -> str:
    """``invalid``/``pruned``/``failed`` with counts for a square without scored trials, else ``no trials``."""
    rk, ck = _axes_keys(board)
    want = {rk: a, ck: b, **dict(facet)}
    notes: dict[str, int] = {}
    for c in board.cells:
        if all(c.values[board.factors.index(k)] == v for k, v in want.items()):
            for kind in ("invalid", "pruned", "failed"):
                notes[kind] = notes.get(kind, 0) + getattr(c, kind)
    text = "\n".join(f"{k} ({n})" for k, n in notes.items() if n)
    return text or "no trials"


def _scale(grids: list[np.ndarray], stat: str) -> tuple[float, float, bool]:
    """Colour range: rates on [0, 1]; quality from the best square to the 90th percentile (clipped?)."""
    finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
    if stat == "quality" and finite.size:
        vmin, vmax = float(finite.min()), float(np.percentile(finite, 90))
        return vmin, max(vmax, vmin + 1e-12), bool((finite > vmax).any())
    return 0.0, 1.0, False


def plot_heatmap(board: Board, stat: str, path: Path) -> Path:
    """One panel per facet (combination of the factors not on an axis). When the data set is one of
    them, each data set is a row of panels with its own colour scale (qualities of different data
    sets are not comparable). Rates on a fixed [0, 1] scale; quality on the range of the squares up to
    their 90th percentile, so that one exploded cell does not wash out the others (its number is
    still written on it). Squares whose trials were all rejected as invalid, pruned or failed say so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rk, ck = _axes_keys(board)
    panels = facets(board)
    grids = [heatmap_grid(board, stat, f) for f in panels]
    rows, cols = grids[0][0], grids[0][1]
    good_low = (stat != "quality") or board.direction == "minimize"
    dk = _data_key(board)
    if dk is not None and dk not in (rk, ck):  # a row of panels and a colour scale per data set
        groups = [g for g in ([i for i, f in enumerate(panels) if dict(f)[dk] == d] for d in _choices(board, dk)) if g]
        lines = [[g] for g in groups]
    else:  # one scale; rows of at most 4 panels
        groups = [list(range(len(panels)))]
        lines = [[groups[0][i:i + 4] for i in range(0, len(panels), 4)]]
    ncols = max(len(line) for group_lines in lines for line in group_lines)
    nrows = sum(len(group_lines) for group_lines in lines)
    w, h = 1.4 + 1.2 * len(cols), 1.2 + 0.7 * len(rows)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols + 1.5, h * nrows + 0.6), squeeze=False,
                             layout="constrained")
    row = 0
    for group, group_lines in zip(groups, lines):
        vmin, vmax, clipped = _scale([grids[n][2] for n in group], stat)
        im = None
        for line in group_lines:
            for col, n in enumerate(line):
                facet, (_, _, grid, counts) = panels[n], grids[n]
                ax = axes[row][col]
                im = ax.imshow(grid, cmap="viridis_r" if good_low else "viridis", aspect="auto", vmin=vmin, vmax=vmax)
                ax.set_xticks(range(len(cols)), [str(c) for c in cols])
                ax.set_yticks(range(len(rows)), [str(r) for r in rows])
                ax.set_xlabel(short(ck))
                ax.set_ylabel(short(rk))
                if facet:
                    ax.set_title(", ".join(f"{short(k)}={v}" for k, v in facet), fontsize=9)
                for i in range(len(rows)):
                    for j in range(len(cols)):
                        if math.isnan(grid[i, j]):
                            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                                       color="0.75", lw=0))
                            ax.text(j, i, _unscored_note(board, facet, rows[i], cols[j]), ha="center", va="center",
                                    color="0.3", fontsize=7)
                            continue
                        r, g, b, _ = im.cmap(im.norm(grid[i, j]))
                        ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                        ax.text(j, i, f"{grid[i, j]:.3g}\nn={counts[i, j]}", ha="center", va="center", color=ink,
                                fontsize=8)
            for col in range(len(line), ncols):
                axes[row][col].axis("off")
            row += 1
        bar = fig.colorbar(im, ax=axes[row - len(group_lines):row].ravel().tolist(),
                           extend="max" if clipped else "neither")
        if clipped:
            bar.set_label("colour capped at the 90th percentile", fontsize=8)
    title = f"median {board.metric}" if stat == "quality" else "fraction of seeds diverged"
    fig.suptitle(f"{board.study}: {title}", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_boxes(board: Board, path: Path) -> Path:
    """Quality of every trial per cell, best median first (Lucic et al. 2018 Fig. 4 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in board.cells if c.trials]
    data = [[r.quality for r in board.rows if r.cell == c.values] for c in cells]
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.28 * max(len(cells), 1)))
    ax.boxplot(data, vert=False, tick_labels=[c.cell for c in cells])
    ax.invert_yaxis()
    ax.set_xlabel(f"{board.metric} ({board.direction})")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{board.study}: quality per cell over trials")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _data_key(board: Board) -> str | None:
    """The data-set factor, if the study varies it: qualities of different data sets are not comparable."""
    return next((k for k in board.factors if k.startswith("data.") and short(k) == "dataset"), None)


def budget_curves(board: Board, data: Any = None) -> dict[str, list[float]]:
    """Per value of the heatmap's row factor (the loss), within one data set when the study varies it:
    expected best quality after k = 1..n trials."""
    dk = _data_key(board)
    rows = [r for r in board.rows if dk is None or data is None or r.cell[board.factors.index(dk)] == data]
    if not board.factors:
        q = [r.quality for r in rows]
        return {"all": [expected_best(q, k, board.direction) for k in range(1, len(q) + 1)]}
    rk, _ = _axes_keys(board)
    i = board.factors.index(rk)
    out: dict[str, list[float]] = {}
    for value in sorted({r.cell[i] for r in rows}, key=str):
        q = [r.quality for r in rows if r.cell[i] == value]
        out[f"{short(rk)}={value}"] = [expected_best(q, k, board.direction) for k in range(1, len(q) + 1)]
    return out


def plot_budget(board: Board, path: Path) -> Path:
    """One panel per data set (when the study varies it); log-scaled k with integer ticks."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dk = _data_key(board)
    datasets = [d for d in _choices(board, dk) if any(r.cell[board.factors.index(dk)] == d for r in board.rows)
                ] if dk else [None]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False, layout="constrained")
    for ax, data in zip(axes[0], datasets):
        curves = budget_curves(board, data)
        for name, curve in curves.items():
            ax.plot(range(1, len(curve) + 1), curve, marker=".", label=name)
        ax.set_xscale("log")
        longest = max((len(c) for c in curves.values()), default=1)
        ticks = [k for k in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000) if k <= longest]
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("budget k (trials)")
        ax.set_ylabel(f"expected best {board.metric}")
        ax.set_title(f"dataset={data}" if data is not None else "", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{board.study}: expected best quality after k trials", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_intervals(board: Board, path: Path, top: int = 10) -> Path:
    """The ``top`` cells of each data set (one panel each): median quality with its 95 % bootstrap
    interval as a horizontal error bar, best on top; the best cell and the cells not distinguishable
    from it coloured, the distinguishable ones grey; the best cell's interval shaded across the panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _by_data(board, board.cells)
    rows = max(min(len(g), top) for g in groups.values())
    # one panel per data set, stacked, so that long cell names (many factors) keep the width they need
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, len(groups) * (1.1 + 0.3 * rows)), squeeze=False,
                             layout="constrained")
    style = {"best": ("C3", "best"), "no": ("C1", f"not distinguishable from best (Holm p ≥ {ALPHA:g})"),
             "yes": ("0.6", "distinguishable from best")}
    for ax, (data, ranked) in zip(axes[:, 0], groups.items()):
        shown = ranked[:top]
        best = shown[0]
        if not math.isnan(best.median_lo):
            ax.axvspan(best.median_lo, best.median_hi, color=style["best"][0], alpha=0.12, lw=0)
        for kind, (colour, label) in style.items():
            idx = [i for i, c in enumerate(shown) if c.distinguishable == kind]
            if not idx:
                continue
            med = np.array([shown[i].median for i in idx])
            lo = np.array([shown[i].median_lo for i in idx])
            hi = np.array([shown[i].median_hi for i in idx])
            err = np.nan_to_num(np.vstack([med - lo, hi - med]))  # no bar for a cell with a single seed
            ax.errorbar(med, idx, xerr=err, fmt="o", color=colour, ecolor=colour, capsize=3, label=label)
        own = f"dataset={data} "  # the panel's title names it
        ax.set_yticks(range(len(shown)), [f"{str(c.cell).replace(own, '')} (n={c.seeds})" for c in shown], fontsize=7)
        ax.set_ylim(len(shown) - 0.5, -0.5)
        ax.set_xlabel(f"median {board.metric} ({board.direction}), 95 % interval")
        ax.set_title(f"dataset={data}" if data is not None else "", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    per = " per dataset" if _data_key(board) else ""
    fig.suptitle(f"{board.study}: the {top} best cells{per}, median and 95 % interval", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


PLOTS = ("heatmap_quality.png", "heatmap_divergence.png", "boxplot_quality.png", "budget_curves.png",
         "intervals_top.png")


def write_plots(board: Board, out: Path) -> list[Path]:
    if not board.rows:
        raise GanbenchError(f"study {board.study} has no completed trials to plot")
    heatmaps = [plot_heatmap(board, "quality", out / PLOTS[0]), plot_heatmap(board, "divergence", out / PLOTS[1])
                ] if board.factors else []  # a plain hyper-parameter search has one cell and no heatmap
    return [*heatmaps, plot_boxes(board, out / PLOTS[2]), plot_budget(board, out / PLOTS[3]),
            plot_intervals(board, out / PLOTS[4])]


def caption(board: Board, name: str) -> str:
    """What a picture shows and how to read it (report.html)."""
    rk, ck = _axes_keys(board) if board.factors else ("", "")
    rest = ", ".join(short(k) for k in board.factors if k not in (rk, ck))
    per = f"one panel per {rest}; " if rest else ""
    better = "lower" if board.direction == "minimize" else "higher"
    return {
        "heatmap_quality.png": f"median trial {board.metric} ({better} is better) per {short(rk)} × {short(ck)}; "
                               f"{per}{'a colour scale per dataset; ' if _data_key(board) else ''}"
                               "n = scored trials pooled in the square; hatched squares have no scored "
                               "trial and say why (invalid: rejected by the model; pruned; failed).",
        "heatmap_divergence.png": f"mean fraction of diverged seeds per {short(rk)} × {short(ck)}; {per}"
                                  "diverged = non-finite or out-of-bound loss, or a final quality worse than "
                                  "quality.worst or than G at initialization.",
        "boxplot_quality.png": f"{board.metric} of every scored trial per cell, best median on top: the box "
                               "width is the sensitivity to the nuisance hyper-parameters.",
        "budget_curves.png": f"expected best {board.metric} after k trials drawn at random, per {short(rk)}"
                             f"{', one panel per dataset' if _data_key(board) else ''}: a curve that drops fast "
                             "needs a small search budget.",
        "intervals_top.png": f"the 10 best cells{' of each dataset' if _data_key(board) else ''} by median "
                             f"{board.metric}, best on top, n = seeds: the dot is the cell's median, the bar its "
                             "95 % bootstrap interval (trials and seeds resampled; none with a single seed), the "
                             "band the best cell's interval. Orange cells are not distinguishable from the best "
                             "(two-sided Mann–Whitney U over seeds, Holm-adjusted p ≥ 0.05), grey ones are. Not "
                             "distinguishable is not equal: with few seeds the intervals are wide and the test "
                             "weak.",
    }.get(name, EFFECTS_CAPTION if name.startswith("effects_") else "")


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

"""Leaderboards of a stability study: one row per cell (a combination of factor values, e.g. loss ×
normalization × penalty), describing the *distribution* of its trials (Lucic et al. 2018 §5,
Kurach et al. 2019 §4), never only its best run.

Per cell, over its COMPLETE trials (pruned and invalid trials are counted, not scored):

* ``median``: median trial quality; ``top5``: the 5 % quantile of trial quality on the good side
  (5th percentile when minimizing, 95th when maximizing; numpy's linear interpolation);
* ``iqr``: inter-quartile range of trial quality (spread over the nuisance hyper-parameters);
* ``divergence``: mean fraction of diverged seeds; ``collapse``: mean fraction of collapsed seeds;
* ``seed_spread``: median over trials of the across-seed standard deviation of final quality;
* ``oscillation``: median over trials of the late-training oscillation.

Cells are ranked by ``median`` (better first), ties broken by ``divergence`` then by cell name.

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
from ganbench.sweep.space import short

COLUMNS = ("rank", "cell", "trials", "median", "top5", "iqr", "divergence", "collapse", "seed_spread", "oscillation",
           "pruned", "invalid", "failed")


@dataclass(frozen=True)
class TrialRow:
    number: int
    cell: tuple[Any, ...]
    quality: float
    diverged_frac: float
    collapsed_frac: float
    spread: float
    oscillation: float


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
    values: tuple[Any, ...] = ()


@dataclass
class Board:
    """Everything a leaderboard shows: the space, the scored trials and the ranked cells."""

    study: str
    factors: list[str]
    metric: str
    direction: str
    rows: list[TrialRow]
    cells: list[CellStats]

    def label(self, cell: tuple[Any, ...]) -> str:
        return " ".join(f"{short(k)}={v}" for k, v in zip(self.factors, cell)) or "all"


def load_board(study: optuna.Study) -> Board:
    """Read the study's trials and compute the ranked cells."""
    space = study.user_attrs.get("space")
    if not space:
        raise GanbenchError(f"study {study.study_name} was not created by `ganbench sweep` (no 'space' attribute)")
    factors = list(space["factors"])
    q = space["quality"]
    rows: list[TrialRow] = []
    other: dict[tuple[Any, ...], dict[str, int]] = {}
    for t in study.get_trials(deepcopy=False):
        if any(k not in t.params for k in factors):
            continue
        cell = tuple(t.params[k] for k in factors)
        counts = other.setdefault(cell, {"pruned": 0, "invalid": 0, "failed": 0})
        if t.state == TrialState.COMPLETE and "quality" in t.user_attrs:
            a = t.user_attrs
            rows.append(TrialRow(t.number, cell, float(a["quality"]), float(a["diverged_frac"]),
                                 float(a["collapsed_frac"]), float(a["spread"]), float(a["oscillation"])))
        elif t.state == TrialState.PRUNED:
            counts["invalid" if "invalid" in t.user_attrs else "pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
    board = Board(study.study_name, factors, q["metric"], q["direction"], rows, [])
    board.cells = rank_cells(board, other)
    return board


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
    for i, c in enumerate(cells, 1):
        c.rank = i
    return cells


def expected_best(values: list[float], k: int, direction: str) -> float:
    """Expected best of ``k`` draws with replacement from ``values`` (closed form; module docstring)."""
    n = len(values)
    xs = sorted(values, reverse=direction == "maximize")
    return float(sum(x * (((n - i) / n) ** k - ((n - i - 1) / n) ** k) for i, x in enumerate(xs)))


# ------------------------------------------------------------------------------------ outputs
def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


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
             f"Quality: `{board.metric}` ({board.direction}); {len(board.rows)} scored trials.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(asdict(c)[k]) for k in COLUMNS) + " |" for c in board.cells]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def print_table(board: Board, limit: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{board.study}: {board.metric} ({board.direction}), {len(board.rows)} trials")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "cell" else "right", no_wrap=col == "cell")
    for c in board.cells[:limit]:
        d = asdict(c)
        table.add_row(*(_fmt(d[k]) for k in COLUMNS))
    console = Console()
    Console(width=max(console.width, 180) if not console.is_terminal else None).print(table)


def _axes_keys(board: Board) -> tuple[str, str]:
    """Heatmap rows and columns: the loss and normalization factors when present, else the first two."""
    def find(word: str, exclude: str | None = None) -> str | None:
        return next((k for k in board.factors if word in short(k) and k != exclude), None)

    rows = find("loss") or board.factors[0]
    cols = find("d_norm", rows) or find("norm", rows) or next((k for k in board.factors if k != rows), rows)
    return rows, cols


def heatmap_grid(board: Board, stat: str) -> tuple[list[Any], list[Any], np.ndarray, np.ndarray]:
    """Median quality (``stat="quality"``) or mean divergence rate per (row, column) value pair,
    pooling every trial with those two values (NaN where there is none), and the number of trials."""
    rk, ck = _axes_keys(board)
    ri, ci = board.factors.index(rk), board.factors.index(ck)
    space_rows = sorted({r.cell[ri] for r in board.rows}, key=str)
    space_cols = sorted({r.cell[ci] for r in board.rows}, key=str)
    grid = np.full((len(space_rows), len(space_cols)), np.nan)
    counts = np.zeros(grid.shape, dtype=int)
    for i, a in enumerate(space_rows):
        for j, b in enumerate(space_cols):
            sel = [r for r in board.rows if r.cell[ri] == a and r.cell[ci] == b]
            counts[i, j] = len(sel)
            if sel:
                grid[i, j] = (statistics.median(r.quality for r in sel) if stat == "quality"
                              else statistics.fmean(r.diverged_frac for r in sel))
    return space_rows, space_cols, grid, counts


def plot_heatmap(board: Board, stat: str, path: Path) -> Path:
    """Rates on a fixed [0, 1] scale; quality on the range of the squares up to their 90th percentile,
    so that one exploded cell does not wash out the others (its number is still written on it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols, grid, counts = heatmap_grid(board, stat)
    rk, ck = _axes_keys(board)
    good_low = (stat != "quality") or board.direction == "minimize"
    finite = grid[np.isfinite(grid)]
    if stat == "quality" and finite.size:
        vmin, vmax = float(finite.min()), float(np.percentile(finite, 90))
        clipped = bool((finite > vmax).any())
    else:  # rates (or nothing to scale)
        vmin, vmax, clipped = 0.0, 1.0, False
    fig, ax = plt.subplots(figsize=(1.4 + 1.2 * len(cols), 1.2 + 0.7 * len(rows)))
    im = ax.imshow(grid, cmap="viridis_r" if good_low else "viridis", aspect="auto", vmin=vmin,
                   vmax=max(vmax, vmin + 1e-12))
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(short(ck))
    ax.set_ylabel(short(rk))
    for i in range(len(rows)):
        for j in range(len(cols)):
            if math.isnan(grid[i, j]):
                ax.text(j, i, "no trials", ha="center", va="center", color="0.4", fontsize=7)
                continue
            r, g, b, _ = im.cmap(im.norm(grid[i, j]))
            ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, f"{grid[i, j]:.3g}\nn={counts[i, j]}", ha="center", va="center", color=ink, fontsize=8)
    title = f"median {board.metric}" if stat == "quality" else "fraction of seeds diverged"
    ax.set_title(f"{board.study}: {title}", fontsize=10)
    bar = fig.colorbar(im, ax=ax, extend="max" if clipped else "neither")
    if clipped:
        bar.set_label("colour capped at the 90th percentile", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_boxes(board: Board, path: Path) -> Path:
    """Quality of every trial per cell, best median first (Lucic et al. 2018 Fig. 4 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = board.cells
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


def budget_curves(board: Board) -> dict[str, list[float]]:
    """Per value of the heatmap's row factor (the loss): expected best quality after k = 1..n trials."""
    if not board.factors:
        q = [r.quality for r in board.rows]
        return {"all": [expected_best(q, k, board.direction) for k in range(1, len(q) + 1)]}
    rk, _ = _axes_keys(board)
    i = board.factors.index(rk)
    out: dict[str, list[float]] = {}
    for value in sorted({r.cell[i] for r in board.rows}, key=str):
        q = [r.quality for r in board.rows if r.cell[i] == value]
        out[f"{short(rk)}={value}"] = [expected_best(q, k, board.direction) for k in range(1, len(q) + 1)]
    return out


def plot_budget(board: Board, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in budget_curves(board).items():
        ax.plot(range(1, len(curve) + 1), curve, marker=".", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("budget k (trials)")
    ax.set_ylabel(f"expected best {board.metric}")
    ax.set_title(f"{board.study}: expected best quality after k trials")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


PLOTS = ("heatmap_quality.png", "heatmap_divergence.png", "boxplot_quality.png", "budget_curves.png")


def write_plots(board: Board, out: Path) -> list[Path]:
    if not board.rows:
        raise GanbenchError(f"study {board.study} has no completed trials to plot")
    heatmaps = [plot_heatmap(board, "quality", out / PLOTS[0]), plot_heatmap(board, "divergence", out / PLOTS[1])
                ] if board.factors else []  # a plain hyper-parameter search has one cell and no heatmap
    return [*heatmaps, plot_boxes(board, out / PLOTS[2]), plot_budget(board, out / PLOTS[3])]


def write_html(board: Board, out: Path, images: list[Path]) -> Path:
    """A self-contained ``report.html``: the table and every picture inlined as base64 PNG."""
    import base64
    import html

    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(asdict(c)[k]))}</td>" for k in COLUMNS) + "</tr>"
                   for c in board.cells)
    pics = "".join(f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{p.stem}</figcaption></figure>'
                   for p in images)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(board.study)}</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 6px;font-size:12px}img{max-width:100%}</style></head><body>"
            f"<h1>Study {html.escape(board.study)}</h1><p>Quality {html.escape(board.metric)} "
            f"({board.direction}), {len(board.rows)} scored trials.</p><table><tr>{head}</tr>{body}</table>"
            f"{pics}</body></html>")
    path = out / "report.html"
    path.write_text(page)
    return path


def log_wandb(board: Board, images: list[Path], out: Path, project: str = "ganbench") -> str:
    """One W&B summary run (job type ``leaderboard``, group = study): the table and the pictures.
    Offline unless WANDB_API_KEY or WANDB_MODE say otherwise; returns the run's local directory."""
    import os

    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    run = wandb.init(project=project, group=board.study, job_type="leaderboard", name=f"{board.study}-leaderboard",
                     dir=str(out), mode=mode, reinit="finish_previous")
    try:
        cols = [*COLUMNS, *(short(k) for k in board.factors)]
        rows = [[asdict(c)[k] for k in COLUMNS] + list(map(str, c.values)) for c in board.cells]
        run.log({"leaderboard": wandb.Table(columns=cols, data=rows),
                 **{f"leaderboard/{p.stem}": wandb.Image(str(p)) for p in images}})
        return str(run.dir)
    finally:
        run.finish()


def build_leaderboard(study: optuna.Study, out: Path, wandb_log: bool = True, show: bool = True) -> Board:
    """Every output: terminal table, CSV, Markdown, PNGs, report.html and the W&B summary run."""
    out = Path(out)
    board = load_board(study)
    write_tables(board, out)
    images = write_plots(board, out)
    write_html(board, out, images)
    if show:
        print_table(board)
    if wandb_log:
        log_wandb(board, images, out)
    return board

"""The leaderboard's pictures: heat maps of a statistic over two factors (faceted by the others), seed-quality
box plots, budget curves (expected best quality after ``k`` trials, exact: with values sorted best first,
x_(1) … x_(n), E[best of k] = Σ_i x_(i) · [((n − i + 1)/n)^k − ((n − i)/n)^k]) and the best cells' intervals,
with the captions report.html shows under them (:mod:`ganbench.sweep.leaderboard` builds the board)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganbench import GanbenchError
from ganbench.sweep.design import is_data_factor
from ganbench.sweep.effects import EFFECTS_CAPTION
from ganbench.sweep.space import short
from ganbench.sweep.stats import ALPHA

if TYPE_CHECKING:
    from ganbench.sweep.leaderboard import Board, CellStats


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
    return next((k for k in board.factors if is_data_factor(k)), None)


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

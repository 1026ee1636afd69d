"""Factor effects of a study: how much each level of each factor moves quality, divergence and collapse.

The unit is the **trial** (one nuisance draw trained with every seed): seeds of one trial share the
hyper-parameters and are not independent draws from the cell, so each outcome is first reduced per
trial — quality as the median over seeds (the leaderboard's statistic, on the metric's own scale),
divergence and collapse as the fraction of seeds — and the trials are the rows of an ordinary least
squares fit (statsmodels) with an intercept, every factor as orthonormal Helmert contrasts
(:func:`ganbench.sweep.design.coding`) and the two-factor interactions the design names.

* The **main effect** of a level is its deviation from the unweighted mean over the factor's levels,
  averaged over the other factors and the nuisance draws; the sentence per factor gives the
  difference of the level furthest from the factor's first level against that first level.
* 95 % **intervals** are t-intervals; for the rates (a linear probability model, in percentage points)
  with HC3 heteroscedasticity-consistent errors, since a rate's variance depends on its level.
  Why not a mixed model or a bootstrap: with the same number of seeds in every trial, the trial-mean
  fit gives the same fixed effects and standard errors as a random intercept per trial at the seed
  level (the seed level's only role is the trial mean's variance), with none of MixedLM's
  convergence failures; a bootstrap over trials stratified by cell has almost no data per stratum
  in a design with one or two trials per cell (its variance is too small by (n-1)/n = 1/2 at n = 2).
  What the fit assumes: interactions that the model leaves out are small (the alias structure of
  ``ganbench sweep --check`` says which ones bias which effect).
* **Multiplicity**: whether a factor (or a named interaction) matters is an F-test of all its
  contrasts; the p-values of one outcome are Holm-adjusted (:func:`ganbench.sweep.stats.holm`)
  together, and a factor is called significant at Holm-adjusted p < 0.05. Intervals are per level
  (95 % each), not simultaneous.
* **Sensitivity**: per level, the fraction of its trials (nuisance draws) in which no seed diverged
  or collapsed, and the range of each nuisance parameter over those trials.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganbench.sweep.design import coding, model_blocks
from ganbench.sweep.stats import ALPHA, holm

OUTCOMES = ("quality", "divergence", "collapse")


@dataclass(frozen=True)
class Effect:
    outcome: str
    term: str  # factor name, or "a:b"
    level: str  # a level, or "x vs y" for a difference, or "x, y" for an interaction cell
    estimate: float
    lo: float
    hi: float


@dataclass(frozen=True)
class TermTest:
    outcome: str
    term: str
    p: float
    p_holm: float

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


@dataclass
class Effects:
    effects: list[Effect] = field(default_factory=list)
    tests: list[TermTest] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    #: (factor, level, trials, fraction trained without diverging or collapsing, nuisance → (low, high))
    sensitivity: list[tuple[str, str, int, float, dict[str, tuple[float, float]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: outcome → residual SD of the trial-level fit (the σ a later study's ``--check --pilot`` plans with)
    sigma: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Fit:
    """One outcome's OLS fit: estimates, per-level effects and F-tests, from level indices and values."""

    result: Any
    blocks: dict[str, tuple[int, int]]  # term → column range

    @classmethod
    def of(cls, y: np.ndarray, cells: np.ndarray, sizes: Sequence[int], names: Sequence[str],
           pairs: Sequence[tuple[int, int]], robust: bool = False) -> Fit:
        import statsmodels.api as sm

        blocks = model_blocks(cells, sizes, names, pairs)
        x = np.column_stack([np.ones(len(y)), *blocks.values()])
        ends = np.cumsum([1] + [b.shape[1] for b in blocks.values()])
        with warnings.catch_warnings():  # a rank-deficient fit is named by analyse; its contrasts are checked
            warnings.simplefilter("ignore")
            fit = sm.OLS(np.asarray(y, float), x).fit(**({"cov_type": "HC3"} if robust else {}))
        return cls(fit, {k: (int(a), int(b)) for k, a, b in zip(blocks, ends[:-1], ends[1:])})

    def contrast(self, term: str, weights: np.ndarray) -> tuple[float, float, float]:
        """Estimate and 95 % interval of ``weights`` · (the term's coefficients); NaN if not estimable."""
        a, b = self.blocks[term]
        row = np.zeros(self.result.params.shape[0])
        row[a:b] = weights
        x = self.result.model.exog
        if not np.allclose(row @ np.linalg.pinv(x) @ x, row, atol=1e-8):
            return math.nan, math.nan, math.nan
        t = self.result.t_test(row)
        lo, hi = np.asarray(t.conf_int(alpha=0.05)).ravel()
        return float(np.asarray(t.effect).ravel()[0]), float(lo), float(hi)

    def level_effects(self, term: str, size: int) -> list[tuple[float, float, float]]:
        code = coding(size)
        return [self.contrast(term, code[i]) for i in range(size)]

    def difference(self, term: str, size: int, i: int, ref: int) -> tuple[float, float, float]:
        code = coding(size)
        return self.contrast(term, code[i] - code[ref])

    def p_value(self, term: str) -> float:
        a, b = self.blocks[term]
        r = np.zeros((b - a, self.result.params.shape[0]))
        r[:, a:b] = np.eye(b - a)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return float(self.result.f_test(r).pvalue)
        except ValueError:  # a term the runs cannot estimate
            return math.nan


def trial_outcomes(seeds: Sequence[np.ndarray]) -> np.ndarray:
    """``(trials, 3)``: median quality over seeds, fraction diverged, fraction collapsed."""
    return np.array([[np.median(s[:, 0]), s[:, 1].mean(), s[:, 2].mean()] for s in map(np.asarray, seeds)])


def _fmt(v: float, points: bool) -> str:
    return f"{100 * v:.0f}" if points else f"{v:.3g}"


def analyse(trials: Sequence[tuple[dict[str, Any], np.ndarray]], factors: dict[str, Sequence[Any]],
            interactions: Sequence[tuple[str, str]] = (), nuisance: Sequence[str] = (), metric: str = "quality",
            direction: str = "minimize") -> Effects:
    """Effects of ``factors`` (key → levels in the study's order) on the trials' outcomes.

    ``trials``: ``(params, seeds)`` per scored trial, ``params`` holding every factor key and nuisance
    value, ``seeds`` an array ``(seeds, 3)`` of (quality, diverged 0/1, collapsed 0/1)."""
    out = Effects()
    if len(trials) < 2:
        out.notes.append("fewer than two scored trials: no effects")
        return out
    keys = [k for k in factors if len({repr(p[k]) for p, _ in trials}) > 1]
    out.notes += [f"{k.rsplit('.', 1)[-1]} has one observed level: no effect" for k in factors if k not in keys]
    levels = {k: [v for v in factors[k] if any(p[k] == v for p, _ in trials)] for k in keys}
    names = [k.rsplit(".", 1)[-1] for k in keys]
    sizes = [len(levels[k]) for k in keys]
    cells = np.array([[levels[k].index(p[k]) for k in keys] for p, _ in trials], dtype=int).reshape(len(trials), -1)
    pairs = [(keys.index(a), keys.index(b)) for a, b in interactions if a in keys and b in keys]
    y = trial_outcomes([s for _, s in trials])
    for col, outcome in enumerate(OUTCOMES):
        if np.ptp(y[:, col]) == 0:
            out.notes.append(f"{outcome}: every trial has the same value ({y[0, col]:g}); no effects")
            continue
        fit = Fit.of(y[:, col], cells, sizes, names, pairs, robust=outcome != "quality")
        out.sigma[outcome] = float(np.sqrt(fit.result.scale)) if fit.result.df_resid > 0 else math.nan
        x = fit.result.model.exog
        if np.linalg.matrix_rank(x) < x.shape[1]:
            out.notes.append(f"{outcome}: the trials cannot separate every effect (rank {np.linalg.matrix_rank(x)} "
                             f"of {x.shape[1]} columns); effects they cannot estimate are left empty")
        terms = list(fit.blocks)
        raw = [fit.p_value(t) for t in terms]
        adjusted = holm(raw)
        out.tests += [TermTest(outcome, t, p0, p) for t, p0, p in zip(terms, raw, adjusted)]
        for j, (k, name) in enumerate(zip(keys, names)):
            effs = fit.level_effects(name, sizes[j])
            out.effects += [Effect(outcome, name, str(v), *e) for v, e in zip(levels[k], effs)]
            diffs = [fit.difference(name, sizes[j], i, 0) for i in range(1, sizes[j])]
            out.effects += [Effect(outcome, name, f"{v} vs {levels[k][0]}", *d) for v, d in zip(levels[k][1:], diffs)]
            far = max(range(len(diffs)), key=lambda i: -1 if math.isnan(diffs[i][0]) else abs(diffs[i][0]))
            est, lo, hi = diffs[far]
            p = dict(zip(terms, adjusted))[name]
            what = f"median {metric}" if outcome == "quality" else f"the {outcome} rate"
            unit = "" if outcome == "quality" else " points"
            verb, sign = ("raises", 1) if est > 0 else ("lowers", -1)
            lo, hi = sorted((sign * lo, sign * hi))
            out.sentences.append(
                f"{outcome}: {name}={levels[k][far + 1]} {verb} {what} by {_fmt(abs(est), bool(unit))}{unit} "
                f"[{_fmt(lo, bool(unit))}, {_fmt(hi, bool(unit))}] against {name}={levels[k][0]}, averaged over the "
                f"other factors and the hyper-parameters (factor Holm p = {p:.3g}"
                f"{', significant' if p < ALPHA else ', not significant'}"
                + (f"; {direction} is better" if outcome == "quality" else "") + ")")
        for a, b in pairs:
            term = f"{names[a]}:{names[b]}"
            ca, cb = coding(sizes[a]), coding(sizes[b])
            for i, va in enumerate(levels[keys[a]]):
                for jb, vb in enumerate(levels[keys[b]]):
                    weights = np.kron(ca[i], cb[jb])
                    out.effects.append(Effect(outcome, term, f"{va}, {vb}", *fit.contrast(term, weights)))
    ok = (y[:, 1] == 0) & (y[:, 2] == 0)
    for k, name in zip(keys, names):
        for v in levels[k]:
            idx = [i for i, (p, _) in enumerate(trials) if p[k] == v]
            good = [trials[i][0] for i in idx if ok[i]]
            ranges = {n: (min(g[n] for g in good), max(g[n] for g in good))
                      for n in nuisance if good and all(n in g for g in good)}
            out.sensitivity.append((name, str(v), len(idx), float(ok[idx].mean()), ranges))
    return out


def table_rows(effects: Effects) -> list[dict[str, Any]]:
    """Every effect with its interval and its term's Holm-adjusted p (what effects.csv holds)."""
    p = {(t.outcome, t.term): t.p_holm for t in effects.tests}
    return [{"outcome": e.outcome, "term": e.term, "level": e.level, "estimate": e.estimate, "lo": e.lo, "hi": e.hi,
             "term_p_holm": p.get((e.outcome, e.term), math.nan)} for e in effects.effects]


def effects_table(effects: Effects) -> list[str]:
    """Markdown: one row per factor level, its main effect on each outcome with the 95 % interval (quality on
    the metric's scale, rates in points) — the numbers of effects.csv that the forest plot draws."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for e in effects.effects:
        if ":" in e.term or " vs " in e.level:
            continue
        k = 1.0 if e.outcome == "quality" else 100.0
        text = "—" if math.isnan(e.estimate) else f"{k * e.estimate:+.3g} [{k * e.lo:+.3g}, {k * e.hi:+.3g}]"
        cells.setdefault((e.term, e.level), {})[e.outcome] = text
    if not cells:
        return []
    return ["| factor | level | quality | divergence (points) | collapse (points) |", "|---|---|---|---|---|",
            *(f"| {t} | {v} | " + " | ".join(o.get(x, "—") for x in OUTCOMES) + " |" for (t, v), o in cells.items())]


def plot_forest(effects: Effects, path: Any, title: str = "") -> Any:
    """One row of panels per outcome, one panel per factor: every level's main effect with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = list(dict.fromkeys(e.term for e in effects.effects if ":" not in e.term))
    fig, axes = plt.subplots(len(OUTCOMES), max(1, len(terms)), figsize=(3.2 * max(1, len(terms)), 7), squeeze=False)
    for r, outcome in enumerate(OUTCOMES):
        for c, term in enumerate(terms):
            ax = axes[r][c]
            rows = [e for e in effects.effects if e.outcome == outcome and e.term == term and " vs " not in e.level]
            scale = 1.0 if outcome == "quality" else 100.0
            ys = np.arange(len(rows))
            est = np.array([e.estimate for e in rows]) * scale
            err = np.array([[e.estimate - e.lo, e.hi - e.estimate] for e in rows]).T * scale
            ax.errorbar(est, ys, xerr=err, fmt="o", capsize=3)
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_yticks(ys, [e.level for e in rows])
            ax.set_title(f"{term}: {outcome}" + ("" if outcome == "quality" else " (points)"), fontsize=9)
    fig.suptitle(title or "main effects (deviation from the mean over levels) with 95 % intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


EFFECTS_CAPTION = ("main effect of every level of every factor (its deviation from the mean over the factor's "
                   "levels, averaged over the other factors and the hyper-parameters) on quality (the trial's median "
                   "over seeds, metric scale), divergence and collapse rate (percentage points), with 95 % "
                   "intervals from an OLS fit over trials (rates: HC3 errors); an interval clear of 0 moves the "
                   "outcome, the factor's Holm-adjusted F-test says whether the factor matters at all.")


def study_trials(study: Any, board: Any) -> list[tuple[dict[str, Any], np.ndarray]]:
    """``(params, seeds)`` of every scored trial of a leaderboard's study."""
    params = {t.number: t.params for t in study.get_trials(deepcopy=False)}
    return [(params[r.number], np.array(r.seed_rows(), dtype=float)) for r in board.rows]


EFFECT_COLUMNS = ["dataset", "outcome", "term", "level", "estimate", "lo", "hi", "term_p_holm"]


def study_effects(study: Any, board: Any) -> dict[str, tuple[Effects, int]]:
    """Per data set (``"all"`` when the study has no data-set factor): the effects of the other factors on its
    scored trials, and how many trials that is."""
    from ganbench.sweep.plots import _data_key
    from ganbench.sweep.study import study_space

    space = study_space(study) or {}
    pairs = [tuple(p) for p in (space.get("design") or {}).get("interactions", [])]
    data = _data_key(board)
    trials = study_trials(study, board)
    groups = {None: trials} if data is None else {
        v: [t for t in trials if t[0][data] == v] for v in (board.choices or {}).get(data, [])}
    factors = {k: (board.choices or {}).get(k, []) for k in board.factors if k != data}
    nuisance = list(space.get("nuisance", {}))
    return {("all" if v is None else str(v)): (analyse(g, factors, pairs, nuisance, board.metric, board.direction),
                                               len(g)) for v, g in groups.items()}


def write_effects(study: Any, board: Any, out: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    """The leaderboard's effects section, per data set: ``effects.csv``, an "Effects" section appended to
    ``leaderboard.md`` and ``effects_<data>.png`` forest plots. Returns the plots (for report.html and W&B)
    and the rows of ``effects.csv`` (the W&B ``effects`` table)."""
    import csv
    from pathlib import Path

    from ganbench.sweep.study import study_space

    design = (study_space(study) or {}).get("design") or {"kind": "random"}
    out = Path(out)
    rows, lines, images = [], ["", "## Effects", "", EFFECTS_CAPTION, ""], []
    if design.get("kind", "random") == "random":
        lines += ["Cells were drawn at random (design: random): the factors are not balanced, so an effect may "
                  "carry interactions with the others; see docs/sweeps.md, Designs and effects.", ""]
    for tag, (result, count) in study_effects(study, board).items():
        rows += [{"dataset": tag, **r} for r in table_rows(result)]
        lines += [f"### {'all trials' if tag == 'all' else 'data set ' + tag} ({count} trials)", ""]
        lines += [f"- {s}" for s in result.sentences + result.notes]
        if result.sigma:
            lines.append("- residual SD of the trial outcomes (the sigma a next study plans with, `ganbench sweep "
                         "--check --pilot`): " + ", ".join(f"{o} {v:.3g}" for o, v in result.sigma.items()))
        lines += [f"- {t.outcome}: interaction {t.term}, F-test Holm p = {t.p_holm:.3g}"
                  + (" (significant)" if t.significant else "") for t in result.tests if ":" in t.term]
        lines += ["", *effects_table(result)]
        lines += ["", "| factor | level | trials | trained without diverging or collapsing | nuisance range there |",
                  "|---|---|---|---|---|"]
        lines += [f"| {f} | {v} | {n} | {frac:.0%} | "
                  + ", ".join(f"{k} {lo:.3g}–{hi:.3g}" for k, (lo, hi) in ranges.items()) + " |"
                  for f, v, n, frac, ranges in result.sensitivity]
        lines.append("")
        if result.effects:
            images.append(plot_forest(result, out / f"effects_{tag}.png", f"{board.study}: main effects, {tag}"))
    with open(out / "effects.csv", "w", newline="") as f:
        w = csv.DictWriter(f, EFFECT_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with open(out / "leaderboard.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    return images, rows

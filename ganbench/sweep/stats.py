"""When is a difference between two leaderboard cells more than seed noise?

A cell's data are its trials (one sample of the nuisance hyper-parameters each) and, in each trial,
its seeds; a seed is a row ``(quality, diverged, collapsed)`` with diverged/collapsed as 0 or 1 (a
diverged seed's quality is ``quality.worst``, objective.py).

* :func:`cell_intervals`: 95 % percentile-bootstrap intervals of the leaderboard's own statistics —
  median over trials of the median over seeds (``median``), mean over trials of the fraction of
  seeds diverged (``divergence``) and collapsed (``collapse``). Each resample draws the cell's
  trials with replacement, then within every drawn trial its seeds with replacement (two-stage,
  Davison & Hinkley 1997 §3.8): seeds of one trial share hyper-parameters and are not independent
  draws from the cell, so a flat resampling of seeds would make the intervals too narrow when the
  hyper-parameters matter more than the seed; resampling trials alone would give a cell with one
  trial an interval of zero width. The generator is seeded: the same study gives the same intervals.
* :func:`mann_whitney`: two-sided Mann–Whitney U p-value of two cells' seed qualities.
* :func:`holm`: Holm's step-down adjusted p-values for a family of tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
ALPHA = 0.05  # a Holm-adjusted p below this: the cells are distinguishable
EXACT_MAX = 10_000  # n_a * n_b up to which an untied test uses the exact null distribution
PERMUTATIONS = 9999


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's (1979) adjusted p-values, in the order given: the i-th smallest of m (i = 0, 1, …) is
    multiplied by m − i, each is raised to the largest before it, and capped at 1. NaN stays NaN
    and is not counted in m."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * p[k]))
        out[k] = running
    return out.tolist()


def two_stage_resamples(trials: Sequence[np.ndarray], resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``(resamples, T, S, k)``: the T trials (arrays of shape ``(seeds, k)``) drawn with replacement,
    then in each drawn trial as many seeds as it has, drawn with replacement from its own; NaN past a
    drawn trial's seed count (S is the most seeds of any trial)."""
    rng = np.random.default_rng(seed)
    sizes = np.array([len(t) for t in trials])
    if not len(sizes) or sizes.min() < 1:
        raise ValueError("every trial needs at least one seed")
    k = np.asarray(trials[0]).shape[1]
    padded = np.full((len(trials), sizes.max(), k), np.nan)
    for i, t in enumerate(trials):
        padded[i, :len(t)] = t
    pick = rng.integers(0, len(trials), size=(resamples, len(trials)))
    n = sizes[pick][..., None]
    seeds = np.floor(rng.random((*pick.shape, sizes.max())) * n).astype(int)
    out = padded[pick[..., None], seeds]
    out[np.arange(sizes.max()) >= n] = np.nan
    return out


def cell_intervals(trials: Sequence[np.ndarray], level: float = LEVEL, resamples: int = RESAMPLES,
                   seed: int = SEED) -> dict[str, tuple[float, float]]:
    """Percentile intervals of ``quality`` (median over trials of the median over seeds) and of the
    ``diverged`` and ``collapsed`` rates (mean over trials of the per-trial fraction), from one set of
    two-stage resamples. Every bound is NaN for a cell with a single seed: one value has no spread."""
    if sum(len(t) for t in trials) < 2:
        nan = (math.nan, math.nan)
        return {"quality": nan, "diverged": nan, "collapsed": nan}
    x = two_stage_resamples([np.asarray(t, dtype=float) for t in trials], resamples, seed)
    quality = np.median(np.nanmedian(x[..., 0], axis=2), axis=1)
    rates = np.nanmean(x[..., 1:], axis=2).mean(axis=1)
    tail = (1.0 - level) / 2

    def interval(v: np.ndarray) -> tuple[float, float]:
        lo, hi = np.quantile(v, [tail, 1.0 - tail])
        return float(lo), float(hi)

    return {"quality": interval(quality), "diverged": interval(rates[:, 0]), "collapsed": interval(rates[:, 1])}


def mann_whitney(a: Sequence[float], b: Sequence[float], seed: int = SEED) -> float:
    """Two-sided Mann–Whitney U p-value of samples ``a`` and ``b`` (one value or more each).

    Without ties: scipy.stats.mannwhitneyu with the exact null distribution (a few seeds per cell is
    the usual case, where the normal approximation is far off), or the normal approximation once
    ``len(a) * len(b)`` exceeds ``EXACT_MAX``. With ties (diverged seeds all score ``quality.worst``),
    for which the exact distribution does not hold: :func:`permutation_p`."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled = np.concatenate([a, b])
    if np.unique(pooled).size < pooled.size:
        return permutation_p(a, b, seed)
    method = "exact" if a.size * b.size <= EXACT_MAX else "asymptotic"
    return float(mannwhitneyu(a, b, alternative="two-sided", method=method).pvalue)


def permutation_p(a: np.ndarray, b: np.ndarray, seed: int = SEED) -> float:
    """Permutation test of U (ties get mid-ranks): the fraction of splits of the pooled values into
    groups of ``len(a)`` and ``len(b)`` whose U lies at least as far from its mean
    ``len(a) * len(b) / 2`` as the observed one. Every split when there are at most ``PERMUTATIONS``
    of them; else that many random splits from a seeded generator, the observed one counted in
    (``(count + 1) / (PERMUTATIONS + 1)``)."""
    import itertools

    from scipy.stats import rankdata

    n, m = len(a), len(a) + len(b)
    ranks = rankdata(np.concatenate([a, b]))
    if math.comb(m, n) <= PERMUTATIONS:
        groups, observed = np.array(list(itertools.combinations(range(m), n))), 0
    else:
        groups = np.argsort(np.random.default_rng(seed).random((PERMUTATIONS, m)), axis=1)[:, :n]
        observed = 1
    centre, offset = n * (m - n) / 2, n * (n + 1) / 2
    u = ranks[groups].sum(axis=1) - offset
    far = np.abs(u - centre) >= abs(ranks[:n].sum() - offset - centre) - 1e-9
    return float((far.sum() + observed) / (len(groups) + observed))

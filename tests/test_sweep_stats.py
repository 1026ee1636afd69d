"""Leaderboard statistics: Holm's correction, the two-stage bootstrap intervals, the Mann–Whitney comparison
with the best cell, and where they are shown (leaderboard.md, report.html, the W&B table), on a study
written through Optuna's API with synthetic per-seed attributes (no fits)."""

from __future__ import annotations

import csv
import json
import math
from math import comb

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from scipy.stats import mannwhitneyu

from ganbench.sweep.leaderboard import build_leaderboard, load_board, seed_values
from ganbench.sweep.stats import cell_intervals, holm, mann_whitney, two_stage_resamples
from tests.test_sweep_readable import STUDY
from tests.wandb_log import inspect


def test_holm_on_a_hand_example():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04; step-down keeps the 0.04 at 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06], rel=1e-12)
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    p = holm([0.02, math.nan, 0.2])  # NaN is not a test: m = 2
    assert p[0] == pytest.approx(0.04, rel=1e-12) and math.isnan(p[1]) and p[2] == pytest.approx(0.2, rel=1e-12)


def test_bootstrap_interval_of_a_constant_sample_is_a_point():
    trials = [np.array([[0.7, 0.0, 1.0], [0.7, 0.0, 1.0]]), np.array([[0.7, 0.0, 1.0]])]
    assert cell_intervals(trials) == {"quality": (0.7, 0.7), "diverged": (0.0, 0.0), "collapsed": (1.0, 1.0)}


def test_bootstrap_interval_is_the_quantiles_of_the_leaderboard_statistic():
    """The quality interval is the 2.5 % and 97.5 % quantiles, over the resamples, of the median over trials of
    the median over seeds — which differs here from the median of all seeds pooled."""
    trials = [np.array([[0.0, 0, 0], [0.0, 0, 0], [9.0, 1, 1]]), np.array([[1.0, 0, 0]]),
              np.array([[2.0, 0, 1], [8.0, 1, 1]]), np.array([[3.0, 0, 0], [4.0, 0, 0], [7.0, 0, 1]])]
    x = two_stage_resamples([t.astype(float) for t in trials], resamples=2000, seed=0)
    medians = np.median(np.nanmedian(x[..., 0], axis=2), axis=1)
    pooled = np.nanmedian(x[..., 0].reshape(2000, -1), axis=1)
    assert not np.allclose(np.quantile(medians, [0.025, 0.975]), np.quantile(pooled, [0.025, 0.975]))
    ci = cell_intervals(trials)
    assert ci["quality"] == tuple(np.quantile(medians, [0.025, 0.975]))
    assert ci["diverged"] == tuple(np.quantile(np.nanmean(x[..., 1], axis=2).mean(axis=1), [0.025, 0.975]))


def test_bootstrap_interval_of_two_seeds_spans_them():
    """One trial, seeds 1 and 3: a resample's median is 1, 2 or 3 with probability 1/4, 1/2, 1/4, so the
    2.5 % and 97.5 % quantiles are the two seeds; the same for the diverged rate of seeds 0 and 1."""
    ci = cell_intervals([np.array([[1.0, 0.0, 0.0], [3.0, 1.0, 0.0]])])
    assert ci == {"quality": (1.0, 3.0), "diverged": (0.0, 1.0), "collapsed": (0.0, 0.0)}
    one = cell_intervals([np.array([[1.0, 0.0, 0.0]])])  # a single seed has no interval
    assert all(math.isnan(bound) for interval in one.values() for bound in interval)


def test_mann_whitney_with_ties_is_the_permutation_test_over_every_split():
    """a and b share tied values; all C(8, 4) = 70 splits of the pooled values, counted by hand: the p-value is
    the fraction of splits whose U is at least as far from its mean n_a n_b / 2 as the observed one."""
    import itertools

    a, b = [1.0, 2.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0]
    pooled = a + b

    def u(x: list[float], y: list[float]) -> float:
        return sum(1.0 if xi > yi else 0.5 if xi == yi else 0.0 for xi in x for yi in y)

    observed = abs(u(a, b) - 8)
    splits = [(list(i), [pooled[k] for k in range(8) if k not in i]) for i in itertools.combinations(range(8), 4)]
    extreme = sum(abs(u([pooled[k] for k in x], y) - 8) >= observed - 1e-12 for x, y in splits)
    assert mann_whitney(a, b) == pytest.approx(extreme / 70, rel=1e-12)
    assert mann_whitney(a, b) != pytest.approx(mannwhitneyu(a, b, method="asymptotic").pvalue, rel=1e-3)
    # single seeds: 10 against 1, 2, 10 has mid-ranks 3.5 | 1, 2, 3.5; U over the 4 splits 2.5, 0, 1, 2.5
    # around a mean of 1.5: three of them at least 1 away
    assert mann_whitney([10.0], [1.0, 2.0, 10.0]) == 0.75
    assert mann_whitney([10.0], [10.0]) == 1.0
    # C(34, 17) splits: 9999 random ones from a seeded generator, the observed split counted in, so the p-value
    # is (count + 1) / 10000, the same on every call, and near the ~0.00175 that 200 000 random splits give
    big_a, big_b = [0.0] * 3 + [float(i) for i in range(1, 15)], [0.0] * 3 + [i + 0.5 for i in range(10, 24)]
    p = mann_whitney(big_a, big_b)
    assert p == mann_whitney(big_a, big_b) and (p * 10000) == pytest.approx(round(p * 10000), abs=1e-9)
    assert 0.0005 < p < 0.004


def test_resampling_draws_seeds_within_drawn_trials():
    """Trial A's seeds are all 0, trial B's (three of them) all 10: every resampled trial holds the seeds of one
    trial only and as many as it has, the rest NaN — never a mix, as flat resampling of seeds would give."""
    x = two_stage_resamples([np.zeros((2, 1)), np.full((3, 1), 10.0)], resamples=500, seed=1)
    assert x.shape == (500, 2, 3, 1)
    rows = x[..., 0].reshape(-1, 3)
    a = (rows[:, :2] == 0).all(axis=1) & np.isnan(rows[:, 2])
    b = (rows == 10).all(axis=1)
    assert (a | b).all() and a.any() and b.any()
    assert np.array_equal(x, two_stage_resamples([np.zeros((2, 1)), np.full((3, 1), 10.0)], resamples=500, seed=1),
                          equal_nan=True)


def test_seed_values_from_trial_attributes():
    attrs = {"quality": 5.0, "diverged_frac": 0.25, "collapsed_frac": 0.75, "seed_quality": [1.0, 10.0, 2.0, 3.0],
             "seed_status": ["completed", "diverged", "completed", "completed"]}
    # the diverged seed is collapsed; the second collapsed seed is the first other one
    assert seed_values(attrs) == ((1.0, 0.0, 1.0), (10.0, 1.0, 1.0), (2.0, 0.0, 1.0), (3.0, 0.0, 0.0))
    assert seed_values({"quality": 5.0, "diverged_frac": 0.5, "collapsed_frac": 1.0}) == ((5.0, 0.5, 1.0),)


BEST = [1.0 + i / 10 for i in range(10)]  # 1.0 … 1.9
APART = [5.0 + i / 10 for i in range(10)]  # 5.0 … 5.9: every seed worse than every seed of the best
NEAR = [1.35 + i / 10 for i in range(10)]  # 1.35 … 2.25: an unadjusted p of 0.029 that Holm does not keep
WORST = 10.0  # STUDY's quality.worst: what a diverged seed scores


def stats_study() -> optuna.Study:
    """One factor (the loss). hinge: 5 trials × 2 seeds, qualities BEST; ns: the same seeds again; ls: APART;
    wasserstein: NEAR; minimax: 2 trials × 2 seeds, all diverged."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from ganbench.sweep.space import parse_space
    from ganbench.sweep.study import open_study

    losses = ["hinge", "ns", "ls", "wasserstein", "minimax"]
    space = parse_space({**STUDY, "name": "stats", "factors": {"model.init_args.loss": losses}}, "stats.yaml")
    study = open_study(space, optuna.storages.InMemoryStorage(), "stats")
    dists = {"model.init_args.loss": CategoricalDistribution(losses),
             "lr": FloatDistribution(1e-4, 1e-3, log=True)}

    def add(loss: str, seeds: list[float]) -> None:
        status = ["diverged" if q == WORST else "completed" for q in seeds]
        frac = status.count("diverged") / len(seeds)
        quality = float(np.median(seeds))
        study.add_trial(optuna.trial.create_trial(
            params={"model.init_args.loss": loss, "lr": 3e-4}, distributions=dists, state=TrialState.COMPLETE,
            value=quality, user_attrs={"cell": f"loss={loss}", "quality": quality, "diverged_frac": frac,
                                       "collapsed_frac": frac, "spread": 0.0, "oscillation": 0.0,
                                       "seed_quality": seeds, "seed_status": status}))

    for loss, values in (("hinge", BEST), ("ns", BEST), ("ls", APART), ("wasserstein", NEAR)):
        for i in range(0, 10, 2):
            add(loss, values[i:i + 2])
    add("minimax", [WORST, WORST])
    add("minimax", [WORST, WORST])
    return study


def test_separated_cells_are_distinguishable_an_identical_one_is_not():
    board = load_board(stats_study())
    cells = {c.cell: c for c in board.cells}
    assert [c.cell for c in board.cells] == ["loss=hinge", "loss=ns", "loss=wasserstein", "loss=ls", "loss=minimax"]
    best, same, near, apart, blown = (cells[f"loss={k}"] for k in ("hinge", "ns", "wasserstein", "ls", "minimax"))
    assert (best.distinguishable, best.seeds) == ("best", 10) and math.isnan(best.p)
    # 10 vs 10 seeds, disjoint: the exact two-sided p is 2 / C(20, 10)
    assert apart.p == mannwhitneyu(APART, BEST, alternative="two-sided", method="exact").pvalue == 2 / comb(20, 10)
    # diverged seeds all at `worst` are tied: a permutation test, here over all C(14, 4) splits
    assert blown.p == pytest.approx(2 / comb(14, 4), rel=1e-12)
    assert same.p == 1.0
    assert near.p == mannwhitneyu(NEAR, BEST, alternative="two-sided", method="exact").pvalue
    assert 0.025 < near.p < 0.05
    # Holm over the four comparisons, smallest p first: 4 p, 3 p, 2 p, then max(…, 1 × 1)
    assert apart.p_holm == pytest.approx(4 * apart.p, rel=1e-12)
    assert blown.p_holm == pytest.approx(3 * blown.p, rel=1e-12)
    assert near.p_holm == pytest.approx(2 * near.p, rel=1e-12)
    assert same.p_holm == 1.0
    flags = (apart.distinguishable, blown.distinguishable, near.distinguishable, same.distinguishable)
    assert flags == ("yes", "yes", "no", "no")
    # intervals of the leaderboard's own statistics, bracketing them
    assert best.median_lo < best.median < best.median_hi and (best.divergence_lo, best.divergence_hi) == (0, 0)
    assert (blown.median_lo, blown.median_hi, blown.divergence_lo, blown.divergence_hi) == (WORST, WORST, 1, 1)
    assert (blown.divergence, blown.collapse_lo) == (1.0, 1.0)
    assert mann_whitney(BEST, BEST) == 1.0


def test_each_data_set_has_its_own_best():
    """Qualities of different data sets are not comparable: a grid25 cell is never tested against the ring8 best."""
    from tests.test_sweep_readable import hand_made_study

    cells = {c.cell: c for c in load_board(hand_made_study()).cells}
    assert cells["dataset=ring8 loss=ns d_norm=spectral"].distinguishable == "best"
    assert cells["dataset=grid25 loss=hinge d_norm=spectral"].distinguishable == "best"
    other = cells["dataset=ring8 loss=hinge d_norm=spectral"]
    assert other.distinguishable == "no" and other.p == other.p_holm == 1.0  # seeds 1, 3 against 1.5
    assert cells["dataset=ring8 loss=ns d_norm=batch"].distinguishable == ""  # invalid only: not scored


def test_the_verdict_is_in_the_markdown_the_report_and_the_wandb_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    build_leaderboard(stats_study(), tmp_path, wandb_log=True, show=False)
    md = (tmp_path / "leaderboard.md").read_text()
    head = md.splitlines()[4]
    for col in ("median", "median_ci", "divergence_ci", "collapse_ci", "p_holm", "distinguishable"):
        assert f"| {col} |" in head
    assert "| 4 | loss=ls | 5 | 10 | 5.45 | [" in md
    assert "Best `loss=hinge` (median 1.45, 95 % CI [" in md
    assert "not distinguishable from it: `loss=ns`, `loss=wasserstein`; distinguishable: 2 of 4 other cells." in md
    page = (tmp_path / "report.html").read_text()
    assert "<caption>" in page and "<th>p_holm</th>" in page and "<th>median_ci</th>" in page
    assert "not distinguishable from it: `loss=ns`" in page
    assert '<img alt="intervals_top"' in page and "Orange cells are not distinguishable from the best" in page
    assert (tmp_path / "intervals_top.png").read_bytes()[:4] == b"\x89PNG"

    run = next(tmp_path.glob("wandb/offline-run-*"))
    files = [r for r in inspect(run) if r.get("type") == "history" and "leaderboard._type" in r["history"]["item"]]
    assert files, "the leaderboard table was logged"
    table = json.loads(next(run.glob("files/media/table/leaderboard_*.table.json")).read_text())
    cols = table["columns"]
    for col in ("median", "median_lo", "median_hi", "divergence_lo", "divergence_hi", "p_holm", "distinguishable"):
        assert col in cols
    rows = {r[cols.index("cell")]: dict(zip(cols, r)) for r in table["data"]}
    assert rows["loss=ls"]["distinguishable"] == "yes" and rows["loss=ns"]["distinguishable"] == "no"
    assert rows["loss=ls"]["p_holm"] == pytest.approx(4 * 2 / comb(20, 10), rel=1e-12)
    # the factor effects: the same rows as effects.csv, read back from the W&B run
    effects = json.loads(next(run.glob("files/media/table/effects_*.table.json")).read_text())
    with open(tmp_path / "effects.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert written and effects["columns"] == list(written[0])
    assert [[str(v) for v in r] for r in effects["data"]] == [list(r.values()) for r in written]

"""Factor effects (ganbench.sweep.effects): exact values on noise-free studies, and recovery of known effects
from simulated studies (no training) with nuisance effects and seed noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ganbench.sweep.design import DesignSpec, build_design
from ganbench.sweep.effects import Fit, analyse, plot_forest, table_rows, trial_outcomes
from ganbench.sweep.space import Nuisance
from ganbench.sweep.stats import holm

FACTORS = {"data.dataset": ("ring8", "grid25"),
           "model.init_args.loss": ("ns", "minimax", "hinge", "wasserstein", "ls"),
           "model.init_args.d_norm": ("none", "batch", "layer", "spectral"),
           "model.init_args.penalty": ("none", "gp", "dragan", "r1"),
           "model.init_args.lecam_weight": (0.0, 0.3), "model.init_args.top_k": (False, True)}
#: per-level effects of the simulation (top_k has none: the null factor)
TRUE = {"data.dataset": [0.3, -0.3], "model.init_args.loss": [0.2, 0.1, 0.0, -0.1, -0.2],
        "model.init_args.d_norm": [0.25, 0.05, -0.1, -0.2], "model.init_args.penalty": [0.0, 0.15, -0.05, -0.1],
        "model.init_args.lecam_weight": [0.1, -0.1], "model.init_args.top_k": [0.0, 0.0]}
NUISANCE = {"lr": Nuisance("lr", 1e-4, 1e-2, log=True)}
NAMES = [k.rsplit(".", 1)[-1] for k in FACTORS]
SIZES = [len(v) for v in FACTORS.values()]


def simulate(study: int, rng: np.random.Generator, seeds: int = 5, tau: float = 0.15, sigma: float = 0.2):
    """One designed study (toy fraction: 160 cells, one trial each, its own Sobol draws): per seed, quality = 1 + the
    levels' effects + 0.5 (log10 lr + 3)^2 (a nuisance effect, shared by the trial's seeds) + N(0, tau) per
    trial (the rest of the hyper-parameter luck) + N(0, sigma) per seed."""
    design = build_design(DesignSpec("fractional", 1, (), study), FACTORS, NUISANCE)
    trials = []
    for run in design.runs:
        mean = 1.0 + sum(TRUE[k][FACTORS[k].index(run[k])] for k in FACTORS)
        mean += 0.5 * (math.log10(run["lr"]) + 3) ** 2 + rng.normal(0, tau)
        q = mean + rng.normal(0, sigma, seeds)
        trials.append((run, np.column_stack([q, np.zeros(seeds), np.zeros(seeds)])))
    return trials


def recovery(studies: int, unit: str = "trial") -> tuple[np.ndarray, float]:
    """Coverage of every main effect's 95 % interval (studies x levels) and how often the null factor is
    called significant (Holm over the factors' F-tests). ``unit="seed"``: the analysis broken on purpose —
    every seed a row, as if seeds were independent trials."""
    rng = np.random.default_rng(1)
    truth = [t - np.mean(t) for t in (np.array(TRUE[k]) for k in FACTORS)]
    hits, null = [], 0
    for s in range(studies):
        trials = simulate(s + 1, rng)
        cells = np.array([[FACTORS[k].index(p[k]) for k in FACTORS] for p, _ in trials])
        seeds = [x for _, x in trials]
        if unit == "trial":
            fit = Fit.of(trial_outcomes(seeds)[:, 0], cells, SIZES, NAMES, [])
        else:
            fit = Fit.of(np.concatenate([x[:, 0] for x in seeds]), np.repeat(cells, len(seeds[0]), axis=0),
                         SIZES, NAMES, [])
        hits.append([lo <= t <= hi for j, name in enumerate(NAMES)
                     for (_, lo, hi), t in zip(fit.level_effects(name, SIZES[j]), truth[j])])
        null += holm([fit.p_value(n) for n in NAMES])[NAMES.index("top_k")] < 0.05
    return np.array(hits, dtype=float), null / studies


def test_recovery_200_studies_cover_the_truth_and_keep_the_null_factor_quiet():
    hits, null = recovery(200)
    assert 0.93 <= hits.mean() <= 0.97  # all 19 level effects pooled (3 800 intervals)
    assert hits.mean(axis=0).min() >= 0.90  # each level alone: binomial sd at n = 200 is 1.5 points
    assert null <= 0.05


def test_recovery_fails_when_the_trial_level_is_ignored():
    """Seeds as independent rows: the intervals ignore the hyper-parameter luck that a trial's seeds share."""
    hits, null = recovery(100, unit="seed")
    assert hits.mean() < 0.85 and null > 0.15


@pytest.mark.slow
def test_recovery_1000_studies_every_main_effect_within_93_97():
    hits, null = recovery(1000)
    assert hits.mean(axis=0).min() >= 0.93 and hits.mean(axis=0).max() <= 0.97
    assert null <= 0.05


def exact_study(seeds: int = 3):
    """Noise-free: quality is additive in the levels; divergence happens exactly for d_norm=none and
    loss=minimax together in the first seed only; no trial collapses."""
    design = build_design(DesignSpec("factorial", 1), {k: FACTORS[k] for k in list(FACTORS)[1:3]}, NUISANCE)
    trials = []
    for run in design.runs:
        q = 1.0 + sum(TRUE[k][FACTORS[k].index(run[k])] for k in list(FACTORS)[1:3])
        div = float(run["model.init_args.d_norm"] == "none" and run["model.init_args.loss"] == "minimax")
        trials.append((run, np.array([[q, div if s == 0 else 0.0, 0.0] for s in range(seeds)])))
    return trials


def test_noise_free_study_gives_the_exact_effects_and_rates():
    keys = list(FACTORS)[1:3]
    result = analyse(exact_study(), {k: FACTORS[k] for k in keys}, nuisance=["lr"], metric="val/w1")
    got = {(e.outcome, e.term, e.level): e for e in result.effects}
    for k in keys:
        name = k.rsplit(".", 1)[-1]
        truth = np.array(TRUE[k]) - np.mean(TRUE[k])
        for v, t in zip(FACTORS[k], truth):
            assert got["quality", name, str(v)].estimate == pytest.approx(t, abs=1e-12)
    # divergence: 1/3 of the seeds in one of the 20 cells. Main effect of d_norm=none on the rate:
    # its marginal mean (1/3)/5 minus the mean over norms (1/3)/20
    assert got["divergence", "d_norm", "none"].estimate == pytest.approx(1 / 15 - 1 / 60, abs=1e-12)
    assert got["divergence", "d_norm", "spectral vs none"].estimate == pytest.approx(-1 / 15, abs=1e-12)
    assert "collapse: every trial has the same value (0); no effects" in result.notes
    head = ("quality: d_norm=spectral lowers median val/w1 by 0.45 [0.45, 0.45] against d_norm=none, averaged "
            "over the other factors and the hyper-parameters (factor Holm p = ")
    assert [s.endswith(", significant; minimize is better)") for s in result.sentences if s.startswith(head)] == [True]
    assert ("divergence: d_norm=spectral lowers the divergence rate by 7 points [-9, 22] against d_norm=none"
            in result.sentences[3])  # 1/15 = 6.7 points; HC3 interval of a single diverging cell
    # every trial without divergence except the 3 of (none, minimax): sensitivity per level
    sens = {(f, v): (n, frac) for f, v, n, frac, _ in result.sensitivity}
    assert sens["d_norm", "none"] == (5, 0.8) and sens["loss", "minimax"] == (4, 0.75)
    assert sens["d_norm", "spectral"] == (5, 1.0)


def test_effects_table_and_forest_plot(tmp_path):
    keys = list(FACTORS)[1:3]
    result = analyse(exact_study(), {k: FACTORS[k] for k in keys})
    rows = table_rows(result)
    assert {r["outcome"] for r in rows} == {"quality", "divergence"}
    assert len([r for r in rows if r["outcome"] == "quality"]) == (5 + 4) + (4 + 3)  # levels + differences
    path = plot_forest(result, tmp_path / "effects.png")
    assert path.stat().st_size > 10_000


def designed_study(storage=None, name: str = "designed"):
    """A 2 x 2 factorial (loss x d_norm, named interaction) with 3 trials per cell, 5 seeds each, written through
    Optuna with an additive truth; returns the study and each cell's trial medians."""
    from pathlib import Path

    import optuna
    import yaml
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    from ganbench.sweep.space import parse_space
    from ganbench.sweep.study import open_study

    raw = yaml.safe_load(Path("sweeps/toy_stability_3k.yaml").read_text())
    raw.update(sampler="random", design="factorial", replicates=3, interactions=[["loss", "d_norm"]],
               factors={"model.init_args.loss": ["ns", "hinge"], "model.init_args.d_norm": ["layer", "spectral"]})
    space = parse_space(raw, "designed.yaml")
    study = open_study(space, storage or optuna.storages.InMemoryStorage(), name)
    dists = {k: CategoricalDistribution(v) for k, v in space.factors.items()}
    dists.update({n: FloatDistribution(v.low, v.high, log=v.log) for n, v in space.nuisance.items()
                  if not v.integer})
    rng = np.random.default_rng(0)
    medians: dict[tuple[str, str], list[float]] = {}
    for loss in ("ns", "hinge"):
        for norm in ("layer", "spectral"):
            for _ in range(3):
                seeds = (1.0 + 0.4 * (loss == "hinge") - 0.2 * (norm == "spectral") + rng.normal(0, 0.1, 5)).tolist()
                medians.setdefault((loss, norm), []).append(float(np.median(seeds)))
                params = {"model.init_args.loss": loss, "model.init_args.d_norm": norm, "lr": 1e-3, "beta1": 0.5,
                          "beta2": 0.95}
                study.add_trial(optuna.trial.create_trial(
                    params=params, distributions={k: dists[k] for k in params}, state=TrialState.COMPLETE,
                    values=[float(np.median(seeds)), 0.0], user_attrs={
                        "cell": f"loss={loss} d_norm={norm}", "quality": float(np.median(seeds)), "diverged_frac": 0.0,
                        "collapsed_frac": 0.0, "spread": 0.0, "oscillation": 0.0, "seed_quality": seeds,
                        "seed_status": ["completed"] * 5}))
    return study, medians


def test_leaderboard_effects_section_of_a_designed_study(tmp_path):
    """A 2 x 2 factorial with 3 trials per cell written through Optuna: effects.csv holds each level's main
    effect = its marginal mean of trial medians minus the mean of the two marginal means (balanced)."""
    import csv

    from ganbench.sweep.leaderboard import build_leaderboard

    study, medians = designed_study()
    build_leaderboard(study, tmp_path, wandb_log=False, show=False)
    with open(tmp_path / "effects.csv") as f:
        rows = {(r["outcome"], r["term"], r["level"]): r for r in csv.DictReader(f)}
    hinge = np.mean(medians["hinge", "layer"] + medians["hinge", "spectral"])
    ns = np.mean(medians["ns", "layer"] + medians["ns", "spectral"])
    assert float(rows["quality", "loss", "hinge"]["estimate"]) == pytest.approx(hinge - (hinge + ns) / 2, abs=1e-12)
    assert float(rows["quality", "loss", "hinge vs ns"]["estimate"]) == pytest.approx(hinge - ns, abs=1e-12)
    lo, hi = float(rows["quality", "loss", "hinge vs ns"]["lo"]), float(rows["quality", "loss", "hinge vs ns"]["hi"])
    assert lo < 0.4 < hi and hi - lo < 0.3
    md = (tmp_path / "leaderboard.md").read_text()
    assert "## Effects" in md and "quality: loss=hinge raises median val/w1_exact_1k by" in md
    r = rows["quality", "loss", "hinge"]  # the effects table: effects.csv's level rows, rates never varied
    assert f"| loss | hinge | {float(r['estimate']):+.3g} [{float(r['lo']):+.3g}, {float(r['hi']):+.3g}] | — | — |" in md
    # the data are additive: the named interaction is estimated and not significant
    line = next(x for x in md.splitlines() if x.startswith("- quality: interaction loss:d_norm, F-test Holm p = "))
    assert not line.endswith("(significant)")
    assert ("quality", "loss:d_norm", "hinge, spectral") in rows
    assert "| d_norm | spectral | 6 | 100% | lr 0.001–0.001, beta1 0.5–0.5, beta2 0.95–0.95 |" in md
    assert (tmp_path / "effects_all.png").is_file() and "effects_all" in (tmp_path / "report.html").read_text()


def test_pilot_sigma_is_the_residual_sd_and_check_scales_the_detectable_differences(tmp_path, capsys):
    """The saturated 2 x 2 model with 3 trials per cell: the residual SD is the pooled within-cell SD of the trial
    medians (8 degrees of freedom). ``--check --pilot`` multiplies each factor's detectable difference in sigma
    by it; a pilot that does not exist is one line, and nothing is created."""
    from pathlib import Path

    import optuna
    import yaml

    from ganbench.cli import main
    from ganbench.sweep.design import space_design
    from ganbench.sweep.plan import detectable, pilot_sigma
    from ganbench.sweep.space import load_space

    url = f"sqlite:///{tmp_path / 'pilot.db'}"
    _, medians = designed_study(optuna.storages.RDBStorage(url), "pilot")
    within = sum(((np.array(v) - np.mean(v)) ** 2).sum() for v in medians.values())
    sigma, how = pilot_sigma(url, "pilot")
    assert sigma["all"]["quality"] == pytest.approx(np.sqrt(within / (12 - 4)), rel=1e-10)
    assert set(sigma["all"]) == {"quality"}  # divergence and collapse never vary: no fit, no sigma
    assert how == "5 seed(s) per trial, 3000 G iterations"

    raw = yaml.safe_load(Path("sweeps/toy_stability_design.yaml").read_text())
    config = tmp_path / "next.yaml"
    config.write_text(yaml.safe_dump(raw))
    mde = detectable(space_design(load_space(config)))
    assert main(["sweep", "--config", str(config), "--check", "--pilot", "pilot", "--pilot-storage", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[out.index(next(x for x in out if x.startswith("with sigma from the pilot study pilot"))) + 1] == (
        f"  all quality (sigma {sigma['all']['quality']:.3g}): "
        + ", ".join(f"{k} {v * sigma['all']['quality']:.2g}" for k, v in mde.items()))

    missing = tmp_path / "none.db"
    assert main(["sweep", "--config", str(config), "--check", "--pilot", "x", "--pilot-storage",
                 f"sqlite:///{missing}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"ganbench: error: --pilot x: {missing} does not exist (name its storage with --pilot-storage)"]
    assert not missing.exists()

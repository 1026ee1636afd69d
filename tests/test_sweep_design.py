"""Designed studies (ganbench.sweep.design): balance, orthogonality, aliasing, refused cells, sweep keys."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml

from ganbench import GanbenchError
from ganbench.cli import main
from ganbench.sweep.design import (
    DesignSpec,
    alias_lines,
    build_design,
    coding,
    family_of,
    model_blocks,
    nuisance_draws,
    refusal,
    regular_fraction,
)
from ganbench.sweep.space import Nuisance, load_space
from tests.test_sweep import assert_one_line_before_any_trial

TOY = "sweeps/toy_stability_3k.yaml"


def toy_factors() -> dict:
    return dict(load_space(TOY).factors)


def test_toy_fraction_is_balanced_and_its_main_effect_columns_orthogonal():
    factors = toy_factors()
    sizes = [len(v) for v in factors.values()]
    cells = regular_fraction(sizes, [])
    # 2 x 5 x 4 x 4 x 2 x 2 = 640 cells; strength 2 needs every pair of 4-level factors' 16 combinations, and
    # the 5 losses are crossed: 16 x 5 = 80 runs, the smallest regular fraction
    assert cells.shape == (80, 6)
    for j, s in enumerate(sizes):
        assert np.bincount(cells[:, j], minlength=s).tolist() == [80 // s] * s
    for a, b in itertools.combinations(range(len(sizes)), 2):  # every pair of levels equally often (strength 2)
        pairs = np.bincount(cells[:, a] * sizes[b] + cells[:, b], minlength=sizes[a] * sizes[b])
        assert pairs.tolist() == [80 // (sizes[a] * sizes[b])] * (sizes[a] * sizes[b])
    blocks = list(model_blocks(cells, sizes, [str(j) for j in range(6)], []).values())
    for x, y in itertools.combinations(blocks, 2):
        assert np.abs(x.T @ y).max() < 1e-12
    assert len({tuple(r) for r in cells}) == 80  # no cell twice


def test_named_interaction_doubles_the_fraction_and_is_clear():
    factors = toy_factors()
    spec = DesignSpec("fractional", 1, (("model.init_args.d_norm", "model.init_args.penalty"),))
    design = build_design(spec, factors)
    # d_norm:penalty's 9 columns need 32 runs of the 2^6 pseudo-factors; x 5 losses x 2 data sets
    assert len(design.runs) == 320 and design.distinct_cells == 320
    assert "d_norm:penalty: clear of every two-factor interaction" in design.aliases
    assert "loss: clear of every two-factor interaction" in design.aliases
    assert "top_k: aliased with d_norm:lecam_weight (0.71)" in design.aliases


def test_each_data_set_gets_the_whole_balanced_fraction():
    """The data set is crossed (its qualities are analysed apart): within each, strength 2 holds."""
    factors = toy_factors()
    design = build_design(DesignSpec("fractional"), factors)
    assert len(design.runs) == 160
    sizes = [len(v) for v in factors.values()][1:]
    for d in (0, 1):
        cells = design.cells[design.cells[:, 0] == d][:, 1:]
        assert len(cells) == 80
        for a, b in itertools.combinations(range(len(sizes)), 2):
            pairs = np.bincount(cells[:, a] * sizes[b] + cells[:, b], minlength=sizes[a] * sizes[b])
            assert pairs.tolist() == [80 // (sizes[a] * sizes[b])] * (sizes[a] * sizes[b])


def test_alias_lines_of_the_half_fraction_of_three_two_level_factors():
    """2^(3-1) with C = AB: every main effect is fully aliased with the interaction of the other two."""
    cells = regular_fraction([2, 2, 2], [])
    assert cells.shape == (4, 3)
    signs = 2 * cells - 1
    assert set((signs[:, 0] * signs[:, 1] * signs[:, 2]).tolist()) in ({1}, {-1})
    assert alias_lines(cells, [2, 2, 2], ["a", "b", "c"], []) == [
        "a: aliased with b:c (1.00)", "b: aliased with a:c (1.00)", "c: aliased with a:b (1.00)"]


def test_a_main_effect_aliased_with_another_is_refused_with_the_reason():
    cells = np.array([[0, 0], [1, 1], [0, 0], [1, 1]])
    with pytest.raises(GanbenchError, match="main effects: b is confounded with a"):
        alias_lines(cells, [2, 2], ["a", "b"], [])


def test_mixed_levels_five_by_four_by_two_by_two():
    cells = regular_fraction([5, 4, 2, 2], [])
    assert cells.shape == (40, 4)  # 4 x 2 x 2 needs 8 runs for strength 2, crossed with 5
    for j, s in enumerate([5, 4, 2, 2]):
        assert np.bincount(cells[:, j]).tolist() == [40 // s] * s


def test_refusal_is_the_models_own_rule():
    from ganbench.models import GANModule

    space = load_space(TOY)
    family, fixed = family_of(space.base_config)
    refuse = refusal(space.factors, {**fixed, **space.overrides}, family)
    bad = {"model.init_args.d_norm": "batch", "model.init_args.penalty": "gp"}
    assert "d_norm=batch with penalty=gp" in refuse(bad)
    assert refuse({"model.init_args.d_norm": "spectral", "model.init_args.penalty": "gp"}) is None
    assert refuse({"model.init_args.d_norm": "batch", "model.init_args.penalty": "none"}) is None
    with pytest.raises(GanbenchError, match="cannot be combined"):
        GANModule(data_shape=(2,), d_norm="batch", penalty="gp")


def test_constrained_fraction_has_no_refused_cell_and_reports_the_cost():
    space = load_space(TOY)
    family, fixed = family_of(space.base_config)
    refuse = refusal(space.factors, {**fixed, **space.overrides}, family)
    design = build_design(DesignSpec("fractional", 2), space.factors, space.nuisance, refuse)
    assert len(design.runs) == 320
    assert all(refuse(run) is None for run in design.runs)
    # strength 2: (batch, p) appears 160 / 16 = 10 times for each of gp, dragan, r1
    assert design.cost[0] == "30 of 160 design cells are refused by the model and replaced by D-optimal valid cells"
    assert design.cost[2].startswith("D-efficiency 0.")
    factorial = build_design(DesignSpec("factorial"), space.factors, None, refuse)
    assert len(factorial.runs) == 640 - 2 * 5 * 3 * 2 * 2
    assert factorial.cost[0] == "120 of 640 design cells are refused by the model and left out"


def test_sobol_draws_stratify_every_nuisance_within_a_cell():
    """The first 2^m points of a scrambled Sobol sequence put one point in each 1/2^m of every axis."""
    nuisance = {"lr": Nuisance("lr", 1e-4, 1e-2, log=True), "beta1": Nuisance("beta1", 0.0, 0.8),
                "n_critic": Nuisance("n_critic", 1, 8, integer=True)}
    draws = nuisance_draws(nuisance, 8, seed=3)
    u_lr = np.log(np.array([d["lr"] for d in draws]) / 1e-4) / np.log(100)
    assert sorted(np.floor(u_lr * 8).astype(int).tolist()) == list(range(8))
    assert sorted(np.floor(np.array([d["beta1"] for d in draws]) / 0.1).astype(int).tolist()) == list(range(8))
    assert sorted(d["n_critic"] for d in draws) == list(range(1, 9))


def test_coding_is_orthonormal_and_sums_to_zero():
    for s in (2, 4, 5):
        c = coding(s)
        assert np.allclose(c.T @ c, np.eye(s - 1)) and np.allclose(c.sum(axis=0), 0)


TOY_RAW = yaml.safe_load(Path(TOY).read_text())
BAD = {
    "kind": ({"design": "latin"}, "design='latin' is not valid; choose one of: factorial, fractional, random"),
    "replicates": ({"design": "factorial", "replicates": 0}, "replicates=0 must be an integer >= 1"),
    "seed": ({"design": "factorial", "design_seed": -1}, "design_seed=-1 must be an integer >= 0"),
    "random": ({"replicates": 2}, "replicates needs design: factorial or fractional"),
    "pair": ({"design": "fractional", "interactions": [["d_norm", "norm"]]},
             "interactions names 'norm', which is not a factor"),
    "self": ({"design": "fractional", "interactions": [["loss", "loss"]]}, "pairs a factor with itself"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_design_key_is_one_line_before_any_trial(case, tmp_path, capsys):
    change, message = BAD[case]
    assert_one_line_before_any_trial({**TOY_RAW, **change}, message, tmp_path, capsys)


def test_check_prints_the_design_and_its_aliasing(tmp_path, capsys):
    path = tmp_path / "designed.yaml"
    path.write_text(yaml.safe_dump({**TOY_RAW, "design": "fractional", "replicates": 1,
                                    "interactions": [["loss", "penalty"]]}, sort_keys=False))
    runs = set(Path("runs").glob("*"))
    assert main(["sweep", "--config", str(path), "--check"]) == 0
    assert set(Path("runs").glob("*")) == runs  # the timed steps fit nothing and leave no run folder
    out = capsys.readouterr().out.splitlines()
    # loss (5 levels) and the data set are crossed with the fraction, so loss:penalty costs no runs
    assert "design fractional: 160 runs = 160 cells x 1 replicate(s), 5 seed(s) each = 800 fits" in out
    assert out[out.index("alias structure (largest alias coefficient per effect):") + 1].startswith("  dataset: ")
    assert any(line.startswith("  loss:penalty: ") for line in out)
    assert any(line.startswith("refused cells: d_norm=batch with penalty=dragan") for line in out)
    mde = out[out.index(next(x for x in out if x.startswith("smallest detectable difference"))) + 1]
    # 80 runs per data set, analysed apart: about (t_0.975 + t_0.8) x 2 / sqrt(80) = 0.64 sigma for a two-level
    # factor, 0.66 with the 12 columns of loss:penalty taken from the residual degrees of freedom; the replaced
    # cells cost d_norm most
    assert mde == ("  loss 1.07 sigma, d_norm 1.40 sigma, penalty 1.01 sigma, lecam_weight 0.66 sigma, "
                   "top_k 0.66 sigma")
    assert any(line.startswith("estimated wall time with --workers 1: ") for line in out)


def test_detectable_difference_of_a_two_level_factor_is_the_noncentral_t_solution():
    """Orthonormal two-level contrast over N balanced runs: the level difference has SE 2 sigma / sqrt(N). The
    leaderboard analyses each data set apart, so N is one data set's runs (80 of the 160) and the data set is no
    term of the model."""
    from scipy.stats import nct, t

    from ganbench.sweep.plan import detectable

    design = build_design(DesignSpec("fractional", 1), toy_factors())
    mde = detectable(design)
    assert "dataset" not in mde
    n, params = len(design.runs) // 2, 1 + 4 + 3 + 3 + 1 + 1
    se, df = 2 / np.sqrt(n), n - params
    crit = t.ppf(0.975, df)
    power = nct.sf(crit, df, mde["top_k"] / se) + nct.cdf(-crit, df, mde["top_k"] / se)
    assert power == pytest.approx(0.8, abs=1e-9)
    assert mde["lecam_weight"] == pytest.approx(mde["top_k"], rel=1e-12)
    assert mde["top_k"] < mde["penalty"] < mde["loss"]


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage(request, tmp_path):
    """Each storage a study can live in (docs/sweeps.md): SQLite, a journal file, PostgreSQL (tests/pg.py)."""
    import optuna

    if request.param == "sqlite":
        yield optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'design.db'}")
    elif request.param == "journal":
        from optuna.storages.journal import JournalFileBackend

        yield optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "design.log")))
    else:
        from tests.pg import postgres_url

        with postgres_url() as url:
            yield optuna.storages.RDBStorage(url)


def test_design_points_are_fixed_trials_and_a_rerun_finishes_exactly_the_design(storage):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    from ganbench.sweep.plan import design_status, enqueue_design

    factors = {"model.init_args.loss": ("ns", "hinge"), "model.init_args.d_norm": ("layer", "spectral")}
    design = build_design(DesignSpec("factorial", 2), factors, {"lr": Nuisance("lr", 1e-4, 1e-2, log=True)})
    study = optuna.create_study(storage=storage, study_name="design")
    dists = {k: CategoricalDistribution(v) for k, v in factors.items()}
    dists["lr"] = FloatDistribution(1e-4, 1e-2, log=True)

    def ask():
        trial = study.ask(dists)
        assert trial.params == design.runs[trial.user_attrs["design_point"]]  # the point, nuisance draw included
        return trial

    assert enqueue_design(study, design)["waiting"] == list(range(8))
    for _ in range(3):
        study.tell(ask(), 1.0)
    study.tell(ask(), state=TrialState.FAIL)
    running = ask()  # a worker killed in the middle of this trial
    status = enqueue_design(study, design)  # the rerun: only the failed point is enqueued again
    assert (status["done"], status["running"], status["waiting"]) == ([0, 1, 2], [4], [3, 5, 6, 7])
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 4
    study.tell(running, state=TrialState.FAIL)  # its heartbeat expires: failed
    assert enqueue_design(study, design)["waiting"] == [3, 4, 5, 6, 7]
    while study.get_trials(states=(TrialState.WAITING,)):
        study.tell(ask(), 1.0)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs["design_point"] for t in complete) == list(range(8))
    assert design_status(study, design)["done"] == list(range(8))
    assert enqueue_design(study, design)["waiting"] == []


@pytest.mark.slow  # 4 short fits, a kill and two reruns: 85 s on two busy cores
def test_killed_designed_study_reruns_to_exactly_its_design(tmp_path):
    """`ganbench sweep` on a 2-cell factorial with 2 replicates, SIGKILLed once its first trial is complete;
    the rerun fails the stale trial (heartbeat), retries its design point and stops with each of the 4
    points complete exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import optuna
    from optuna.trial import TrialState

    from tests.test_sweep import TINY

    data = {**TINY, "factors": {"model.init_args.loss": ["ns", "hinge"]}, "design": "factorial", "replicates": 2,
            "heartbeat_interval": 1, "grace_period": 2, "budget": 30, "metrics_every": 10}
    path = tmp_path / "designed.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'designed.db'}"
    argv = ["sweep", "--config", str(path), "--storage", url, "--runs-root", str(tmp_path / "runs"), "--no-progress",
            "--no-wandb"]
    proc = subprocess.Popen([sys.executable, "-m", "ganbench.cli", *argv], env={**os.environ, "WANDB_MODE": "offline"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            time.sleep(0.5)
            try:
                trials = optuna.load_study(study_name="tiny", storage=url).get_trials(deepcopy=False)
            except KeyError:
                continue
            if any(t.state == TrialState.COMPLETE for t in trials) and \
                    any(t.state == TrialState.RUNNING for t in trials):
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    time.sleep(3)  # past the grace period: the running trial's heartbeat is stale
    assert main(argv) == 0
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials(deepcopy=False)
    complete = sorted(t.user_attrs["design_point"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == [0, 1, 2, 3]
    assert [t.state for t in trials].count(TrialState.FAIL) == 1  # the killed one, retried as a new trial
    assert main(argv) == 0  # a finished design runs nothing more
    assert len(optuna.load_study(study_name="tiny", storage=url).get_trials(deepcopy=False)) == len(trials)


def test_a_cells_replicates_follow_one_another_and_share_the_structural_draw():
    """What lets --population-trials batch a cell's replicates: they are consecutive runs with one n_critic;
    lr is still drawn per replicate; the cells' order is random."""
    factors = {"model.init_args.loss": ("ns", "hinge"), "model.init_args.d_norm": ("layer", "spectral", "none")}
    nuisance = {"lr": Nuisance("lr", 1e-4, 1e-2, log=True), "n_critic": Nuisance("n_critic", 1, 5, integer=True)}
    design = build_design(DesignSpec("factorial", 3), factors, nuisance, structural=("n_critic",))
    runs = design.runs
    groups = [runs[i:i + 3] for i in range(0, len(runs), 3)]
    assert len(groups) == 6 and len({tuple(sorted(g[0].items())) for g in groups}) == 6
    for g in groups:
        assert len({(r["model.init_args.loss"], r["model.init_args.d_norm"], r["n_critic"]) for r in g}) == 1
        assert len({r["lr"] for r in g}) == 3
    cell_order = [(g[0]["model.init_args.loss"], g[0]["model.init_args.d_norm"]) for g in groups]
    assert cell_order != sorted(cell_order, key=lambda c: (factors["model.init_args.loss"].index(c[0]),
                                                           factors["model.init_args.d_norm"].index(c[1])))
    free = build_design(DesignSpec("factorial", 3), factors, nuisance)  # nothing structural: n_critic per replicate
    assert any(len({r["n_critic"] for r in free.runs[i:i + 3]}) > 1 for i in range(0, 18, 3))

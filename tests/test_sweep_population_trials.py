"""`ganbench sweep --population-trials K`: K trials of one cell train as one population fit, and each trial scores
what its own fits would score."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from ganbench.cli import main
from ganbench.sweep.objective import QUIET
from ganbench.sweep.outcome import metric_steps, seed_result
from ganbench.sweep.space import load_space, parse_space
from tests.test_sweep import TINY, write

#: 2 seeds per trial; d_norm is the factor, lr is drawn per trial, n_critic and the divergence bound (a float that
#: two independent draws never share) are structural; G without batch norm,
#: whose preceding bias is float noise that no two implementations agree on (docs/populations.md)
BATCHED: dict = {**TINY, "name": "batched", "seeds": [0, 1],
                 "factors": {"model.init_args.d_norm": ["spectral", "layer"], "model.init_args.penalty": ["none"]},
                 "overrides": {**{k: v for k, v in TINY["overrides"].items() if k != "model.init_args.n_critic"},
                               "model.init_args.g_norm": "none"},
                 "nuisance": {"lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
                              "n_critic": {"low": 1, "high": 3, "int": True},
                              "bound": {"low": 1.0e6, "high": 1.0e7}},
                 "bind": {"model.init_args.n_critic": "$n_critic", "model.init_args.divergence_threshold": "$bound",
                          "model.init_args.g_optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": "$lr"}},
                          "model.init_args.d_optimizer": {"class_path": "torch.optim.Adam",
                                                          "init_args": {"lr": "$lr"}}}}


def sweep(tmp_path, data: dict, n: int, k: int) -> tuple[optuna.Study, str]:
    config = write(tmp_path, data, f"{data['name']}.yaml")
    storage = f"sqlite:///{tmp_path / data['name']}.db"
    assert main(["sweep", "--config", str(config), "--storage", storage, "--n-trials", str(n), "--population-trials",
                 str(k), "--runs-root", str(tmp_path / "runs"), "--threads", "1", "--no-progress"]) == 0
    return optuna.load_study(study_name=data["name"], storage=storage), str(config)


def test_batched_trials_share_the_cell_and_score_like_their_own_fits(tmp_path, monkeypatch, capsys):
    """4 trials in 2 population fits of 2 trials x 2 seeds: every trial COMPLETE, a batch's trials share the
    factors and the structural nuisance and draw lr each, and each trial's seed qualities, value and intermediate
    values are those of ordinary fits of its seeds with its own parameters."""
    monkeypatch.setenv("GANBENCH_SWEEP_SEED", "2")
    study, config = sweep(tmp_path, BATCHED, 4, 2)
    err = capsys.readouterr().err
    assert "nothing is pruned" in err and "cannot train as one population fit" not in err
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    root = tmp_path / "runs" / "batched"
    space = load_space(config)
    curves, completed = 0, []
    for first in (0, 2):
        pair = trials[first:first + 2]
        fit = root / f"batch_{first:05d}"
        assert json.loads((fit / "batch.json").read_text())["replicas"] == {str(first): [0, 1], str(first + 1): [2, 3]}
        a, b = (t.params for t in pair)
        assert [a[k] for k in ("model.init_args.d_norm", "n_critic", "bound")] == \
            [b[k] for k in ("model.init_args.d_norm", "n_critic", "bound")]
        assert a["lr"] != b["lr"]
        for k, t in enumerate(pair):
            assert t.user_attrs["run_dirs"] == [str(fit.resolve())] * 2
            summary = json.loads((root / f"trial_{t.number:05d}" / "summary.json").read_text())
            assert (summary["state"], summary["replicas"], summary["quality"]) == ("COMPLETE", [2 * k, 2 * k + 1],
                                                                                   t.value)
            # the pruner is fed, after the fit: the first seed's (replica 2k's) curve, unless that seed diverged
            curve = {s: v for s, v in metric_steps(fit, f"val/w1_exact_1k/r{2 * k}") if s > 0}
            assert sorted(curve) == [2, 4]
            assert t.intermediate_values == (curve if t.user_attrs["seed_status"][0] == "completed" else {})
            curves += bool(t.intermediate_values)
            own = []
            for seed in (0, 1):
                run_dir = tmp_path / "own" / f"t{t.number}s{seed}"
                code = main(space.fit_argv(t.params, seed, run_dir, "own", [], QUIET))
                own.append(seed_result(space, seed, code, run_dir))
            assert t.user_attrs["seed_status"] == [s.status for s in own]
            assert t.user_attrs["seed_quality"] == pytest.approx([s.quality for s in own], rel=1e-4)
            assert t.value == pytest.approx(sum(s.quality for s in own) / 2, rel=1e-4)
            completed += [s.status == "completed" for s in own]
    assert curves >= 3 and sum(completed) >= 6  # (a seed that ends worse than it started counts as diverged)


def test_an_invalid_cell_marks_every_trial_of_its_batch_as_invalid(tmp_path, capsys):
    """The model refuses batch norm in D with a gradient penalty: each trial of the batch is PRUNED with the
    model's reason and its trial summary, as a trial that ran alone; no batch folder is left."""
    data = {**BATCHED, "name": "invalid", "factors": {"model.init_args.d_norm": ["batch"],
                                                       "model.init_args.penalty": ["gp"]}}
    study, _ = sweep(tmp_path, data, 2, 2)
    assert "cannot train as one population fit" not in capsys.readouterr().err
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    for t in study.trials:
        assert "cannot be combined with model.penalty='gp'" in t.user_attrs["invalid"]
        assert t.user_attrs["cell"] == "d_norm=batch penalty=gp"
        summary = json.loads((tmp_path / "runs" / "invalid" / f"trial_{t.number:05d}" / "summary.json").read_text())
        assert summary == {"state": "PRUNED", "params": t.params, "invalid": t.user_attrs["invalid"]}
    assert not list((tmp_path / "runs" / "invalid").glob("batch_*"))


def test_check_names_the_structural_nuisance(capsys):
    assert main(["sweep", "--config", "sweeps/toy_stability.yaml", "--check", "--population-trials", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("--population-trials 4: 4 trials x 2 seeds = 8 replicas per fit")
    assert "drawn per trial: lr (g_lr, d_lr); beta1 (g_beta1, d_beta1); beta2 (g_beta2, d_beta2)" in lines[1]
    assert "structural nuisance n_critic (bound to model.init_args.n_critic, not per replica)" in lines[1]


def test_check_says_when_the_family_cannot_be_batched(tmp_path, capsys):
    config = write(tmp_path, {**BATCHED, "base_config": "configs/stackgan.yaml", "factors": {}})
    assert main(["sweep", "--config", str(config), "--check", "--population-trials", "2"]) == 0
    assert "the stackgan family cannot be batched: " in capsys.readouterr().out.splitlines()[1]


def test_which_nuisance_a_population_can_set_per_replica():
    """Adam's lr and betas and the per-replica keys themselves are drawn per trial; anything else is structural."""
    data = {**BATCHED, "nuisance": {"lr": {"low": 1e-4, "high": 1e-3}, "b1": {"low": 0.0, "high": 0.5},
                                     "w": {"low": 1.0, "high": 10.0}, "n": {"low": 1, "high": 2, "int": True},
                                     "slr": {"low": 1e-4, "high": 1e-3}},
            "bind": {"model.init_args.g_optimizer": {"class_path": "torch.optim.Adam",
                                                     "init_args": {"lr": "$lr", "betas": ["$b1", 0.9]}},
                     "model.init_args.d_optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": "$slr"}},
                     "model.init_args.penalty_weight": "$w", "model.init_args.n_critic": "$n"}}
    space = parse_space(data, "per_replica.yaml")
    assert space.structural == ("n", "slr")
    assert space.replica_overrides({"lr": 1e-3, "b1": 0.1, "w": 5.0, "n": 2, "slr": 1e-4}) == {
        "g_lr": 1e-3, "g_beta1": 0.1, "penalty_weight": 5.0}


def test_each_seed_of_a_batch_gets_a_wandb_run_of_its_trial(tmp_path, monkeypatch):
    """W&B offline, 2 trials x 1 seed in one fit: the fit's run names both trials; each seed's run (written after
    the fit into ``t<trial>-s<seed>/``) is named, configured and scored as its own trial's seed."""
    from tests.wandb_log import inspect

    monkeypatch.setenv("WANDB_MODE", "offline")
    data = {**BATCHED, "name": "wb", "seeds": [3], "overrides": {**BATCHED["overrides"], "run.wandb": True}}
    study, _ = sweep(tmp_path, data, 2, 2)
    fit = tmp_path / "runs" / "wb" / "batch_00000"
    population = inspect(next((fit / "wandb").glob("offline-run-*")), summary=True)
    assert population["name"] == "wb-t0+1-s3" and population["config"]["trials"] == [0, 1]
    for k, t in enumerate(study.trials):
        (run_id,) = t.user_attrs["wandb_run_ids"]
        run = inspect(next((fit / f"t{t.number}-s3" / "wandb").glob(f"offline-run-*-{run_id}")), summary=True)
        cfg = run["config"]
        assert run["name"] == f"wb-t{t.number}-s3" and run["tags"] == [*t.user_attrs["cell"].split(), "seed=3"]
        assert (cfg["trial"], cfg["replica"], cfg["seed_everything"], cfg["lr"]) == (t.number, k, 3, t.params["lr"])
        assert "trials" not in cfg
        assert cfg["model"]["init_args"]["g_optimizer"]["init_args"]["lr"] == t.params["lr"]
        assert run["summary"]["quality"] == t.user_attrs["seed_quality"][0]
        assert run["summary"]["trial/quality"] == t.value


def test_a_waiting_trial_of_another_cell_leads_the_next_batch(tmp_path):
    """Two queued trials of different cells (as the heartbeat's retries are): the second cannot join the first's
    batch, so the first runs alone and the second leads a batch with a fresh trial of its own cell."""
    data = {**BATCHED, "name": "queued", "seeds": [0]}
    storage = f"sqlite:///{tmp_path / 'queued'}.db"
    queued = optuna.create_study(study_name="queued", storage=storage)
    for d_norm, lr in (("spectral", 1e-3), ("layer", 2e-3)):
        queued.enqueue_trial({"model.init_args.d_norm": d_norm, "model.init_args.penalty": "none", "lr": lr,
                              "n_critic": 1, "bound": 2.0e6})
    study, _ = sweep(tmp_path, data, 3, 2)
    t0, t1, t2 = study.trials
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert (t0.params["model.init_args.d_norm"], t1.params["model.init_args.d_norm"]) == ("spectral", "layer")
    assert {k: t2.params[k] for k in ("model.init_args.d_norm", "n_critic", "bound")} == \
        {"model.init_args.d_norm": "layer", "n_critic": 1, "bound": 2.0e6}
    root = tmp_path / "runs" / "queued"
    assert t0.user_attrs["run_dirs"] == [str((root / "trial_00000" / "seed_0").resolve())]
    assert json.loads((root / "batch_00001" / "batch.json").read_text())["trials"] == [1, 2]


def test_a_valid_cell_that_cannot_be_batched_runs_its_trials_alone(tmp_path, capsys):
    """grad_clip refuses a population but not a fit: the first batch's trials and every later one run on
    their own, after one line that says so."""
    data = {**BATCHED, "name": "clipped", "seeds": [0],
            "overrides": {**BATCHED["overrides"], "model.init_args.grad_clip": 1.0}}
    study, _ = sweep(tmp_path, data, 3, 2)
    err = capsys.readouterr().err
    assert err.count("cannot train as one population fit") == 1 and "grad_clip" in err
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    root = tmp_path / "runs" / "clipped"
    assert sorted(p.name for p in root.iterdir()) == ["trial_00000", "trial_00001", "trial_00002"]
    assert all(t.user_attrs["run_dirs"] == [str((root / f"trial_{t.number:05d}" / "seed_0").resolve())]
               for t in study.trials)


def test_a_designed_cells_replicates_train_as_one_population_fit(tmp_path, monkeypatch, capsys):
    """design: factorial, replicates 2, --population-trials 2: the 2 replicates of each of the 2 cells follow one
    another in the run order and share the cell's structural draws (n_critic, the bound), so each cell trains as
    one population fit of 2 trials x 2 seeds; lr is drawn per replicate."""
    data = {**BATCHED, "name": "designed", "design": "factorial", "replicates": 2}
    study, _ = sweep(tmp_path, data, 0, 2)  # --n-trials does not apply: the design's 4 points are the trials
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert sorted(t.user_attrs["design_point"] for t in trials) == [0, 1, 2, 3]
    root = tmp_path / "runs" / "designed"
    cells = set()
    for first in (0, 2):
        pair = trials[first:first + 2]
        assert json.loads((root / f"batch_{first:05d}" / "batch.json").read_text())["replicas"] == \
            {str(first): [0, 1], str(first + 1): [2, 3]}
        a, b = (t.params for t in pair)
        shared = ("model.init_args.d_norm", "model.init_args.penalty", "n_critic", "bound")
        assert [a[k] for k in shared] == [b[k] for k in shared] and a["lr"] != b["lr"]
        assert sorted(t.user_attrs["design_point"] for t in pair) == [first, first + 1]
        cells.add(a["model.init_args.d_norm"])
    assert cells == {"spectral", "layer"}
    assert "cannot train as one population fit" not in capsys.readouterr().err

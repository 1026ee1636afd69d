"""A study a researcher can read: names and links in Optuna (read back through Optuna's API), runs named and
described in W&B (read back with W&B's own offline reader) with their trial's result and, for a population, one
run per seed, one line per finished trial, every cell on the leaderboard, and one rule for diverged seeds."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from ganbench.cli import main
from ganbench.sweep.outcome import SeedResult, aggregate, divergence_reason, metric_steps
from ganbench.sweep.space import parse_space
from tests.wandb_log import inspect

STUDY: dict = {
    "name": "readable",
    "base_config": "configs/sngan.yaml",
    "budget": 4,
    "metrics_every": 2,
    "seeds": [0, 1],
    "quality": {"metric": "val/w1_exact_1k", "direction": "minimize", "worst": 10.0},
    "collapse": {"metric": "val/modes_covered_2k", "at_most": 1},
    "overrides": {"model.init_args.width": 8, "model.init_args.n_critic": 1, "data.dataset": "ring8",
                  "data.batch_size": 8, "data.n_toy_samples": 500, "run.sample_every": 1000,
                  "run.checkpoint_every": 1000, "run.diagnostics_every": 0, "trainer.accelerator": "cpu"},
    "factors": {"model.init_args.d_norm": ["batch", "spectral"], "model.init_args.penalty": ["none", "gp"]},
    "nuisance": {"lr": {"low": 1.0e-4, "high": 1.0e-3, "log": True}},
    "bind": {"model.init_args.d_optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": "$lr"}}},
}


def test_study_reads_back_through_optuna_and_wandb(tmp_path, monkeypatch, capsys):
    """3 trials (GANBENCH_SWEEP_SEED=25 samples batch+none twice, then the invalid batch+gp), 2 seeds each, W&B
    offline: metric names, space attributes, run dirs, W&B ids, picture artifacts and intermediate values in
    Optuna; run names, top-level config and verdicts in W&B; one info line per trial on a non-terminal."""
    monkeypatch.setenv("GANBENCH_SWEEP_SEED", "25")
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = tmp_path / "readable.yaml"
    config.write_text(yaml.safe_dump(STUDY))
    storage = f"sqlite:///{tmp_path / 'readable.db'}"
    code = main(["sweep", "--config", str(config), "--storage", storage, "--n-trials", "3",
                 "--runs-root", str(tmp_path / "runs"), "--threads", "1"])
    assert code == 0
    out = capsys.readouterr()
    assert "error" not in out.err + out.out
    study = optuna.load_study(study_name="readable", storage=storage)
    assert study.metric_names == ["quality: median val/w1_exact_1k over seeds"]
    assert study.user_attrs["factors"] == STUDY["factors"]
    assert study.user_attrs["nuisance"] == {"lr": {"low": 1.0e-4, "high": 1.0e-3, "log": True, "int": False}}
    assert study.user_attrs["quality"] == STUDY["quality"] and study.user_attrs["seeds"] == [0, 1]

    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    lines = [line for line in out.out.splitlines() if "trial " in line]
    assert len(lines) == 3 and lines[2].startswith("[3/3, ETA 0m00s] trial 2 skipped, invalid cell "
                                                   "d_norm=batch penalty=gp: model.d_norm='batch' cannot be combined")
    assert lines[0].startswith("[1/3, ETA ") and "trial 0 complete: quality=" in lines[0]
    store = Path(tmp_path / "readable.artifacts")
    for t in trials[:2]:
        dirs = [tmp_path / "runs" / "readable" / f"trial_{t.number:05d}" / f"seed_{s}" for s in (0, 1)]
        assert t.user_attrs["run_dirs"] == [str(d.resolve()) for d in dirs]
        artifacts = get_all_artifact_meta(t, storage=study._storage)
        assert [a.mimetype for a in artifacts] == ["image/png", "image/png"]
        assert all((store / a.artifact_id).read_bytes()[:4] == b"\x89PNG" for a in artifacts)
        # intermediate values: seed 0's quality curve, at the G iterations it was measured
        assert t.intermediate_values == dict((s, v) for s, v in metric_steps(dirs[0], "val/w1_exact_1k") if s > 0)
        assert sorted(t.intermediate_values) == [2, 4]
        ids = t.user_attrs["wandb_run_ids"]
        assert len(ids) == 2 and len(set(ids)) == 2
        for i, (seed, run_dir) in enumerate(zip((0, 1), dirs)):
            run = inspect(next(run_dir.glob(f"wandb/offline-run-*-{ids[i]}")), summary=True)
            assert run["name"] == f"readable-t{t.number}-s{seed}" and run["run_id"] == ids[i]
            cfg = run["config"]
            assert (cfg["trial"], cfg["seed_everything"], cfg["cell"]) == (t.number, seed, "d_norm=batch penalty=none")
            assert (cfg["d_norm"], cfg["penalty"], cfg["lr"]) == ("batch", "none", t.params["lr"])
            summary = run["summary"]
            assert summary["status"] == "completed"
            assert summary["diverged"] == (t.user_attrs["seed_status"][i] == "diverged")
            assert summary["quality"] == t.user_attrs["seed_quality"][i]
            assert isinstance(summary["collapsed"], bool)
            # the trial's result, written into each seed's run after both runs had ended
            assert {k: summary[f"trial/{k}"] for k in TRIAL_KEYS} == {k: t.user_attrs[k] for k in TRIAL_KEYS}
            assert summary["trial/quality"] == t.value
            assert run["state"] == "finished"


def space():
    return parse_space(STUDY, "readable.yaml")


#: the trial's result in every seed's W&B run summary, as ``trial/<attribute>``
TRIAL_KEYS = ("quality", "diverged_frac", "collapsed_frac", "instability", "spread", "oscillation")


def test_population_seeds_read_back_as_runs_of_their_own(tmp_path, monkeypatch):
    """A trial whose two seeds ran as one population fit: one W&B run per seed, written after the fit from its
    replica's record, named, tagged and configured like a seed's own fit, with its verdict and the trial's result
    in its summary and its replica's metrics.csv columns as its plain-key history."""
    import statistics

    from ganbench.sweep.objective import wandb_run_id
    from tests.wandb_log import history

    monkeypatch.setenv("WANDB_MODE", "offline")
    config = tmp_path / "popread.yaml"
    config.write_text(yaml.safe_dump({**STUDY, "name": "popread", "population": True, "prune": False, "factors": {
        "model.init_args.d_norm": ["spectral"], "model.init_args.penalty": ["none"]}}))
    storage = f"sqlite:///{tmp_path / 'popread.db'}"
    assert main(["sweep", "--config", str(config), "--storage", storage, "--n-trials", "1", "--no-progress",
                 "--runs-root", str(tmp_path / "runs"), "--threads", "1"]) == 0
    (t,) = optuna.load_study(study_name="popread", storage=storage).trials
    fit = tmp_path / "runs" / "popread" / "trial_00000" / "seeds_0-1"
    assert t.user_attrs["run_dirs"] == [str(fit.resolve())] * 2
    ids = t.user_attrs["wandb_run_ids"]
    assert len(set(ids)) == 2 and wandb_run_id(fit) not in ids
    population = inspect(next((fit / "wandb").glob("offline-run-*")), summary=True)
    assert population["name"] == "popread-t0-s0-1" and "quality" not in population["summary"]
    collapsed = []
    for k, seed in enumerate((0, 1)):
        path = next((fit / f"seed_{seed}" / "wandb").glob(f"offline-run-*-{ids[k]}"))
        run = inspect(path, summary=True)
        assert run["name"] == f"popread-t0-s{seed}"
        assert run["tags"] == ["d_norm=spectral", "penalty=none", f"seed={seed}"]
        cfg = run["config"]
        assert (cfg["trial"], cfg["seed_everything"], cfg["replica"]) == (0, seed, k)
        assert (cfg["cell"], cfg["d_norm"], cfg["penalty"], cfg["lr"]) == (t.user_attrs["cell"], "spectral", "none",
                                                                          t.params["lr"])
        summary = run["summary"]
        assert (summary["status"], summary["g_steps"]) == (t.user_attrs["seed_status"][k], 4) == ("completed", 4)
        assert summary["quality"] == t.user_attrs["seed_quality"][k] and summary["diverged"] is False
        collapsed.append(summary["collapsed"])
        assert {k: summary[f"trial/{k}"] for k in TRIAL_KEYS} == {k: t.user_attrs[k] for k in TRIAL_KEYS}
        assert summary["trial/quality"] == t.values[0]
        rows = history(path)
        assert [(r["trainer/global_step"], r["val/w1_exact_1k"]) for r in rows if "val/w1_exact_1k" in r] == \
            metric_steps(fit, f"val/w1_exact_1k/r{k}") and len(rows) == 3  # G iterations 0, 2, 4
        assert not [key for r in rows for key in r if "/r" in key]
    assert statistics.fmean(collapsed) == t.user_attrs["collapsed_frac"]


def test_replica_rows_are_one_replicas_columns_under_plain_keys(tmp_path):
    from ganbench.sweep.outcome import replica_rows

    (tmp_path / "metrics.csv").write_text("step,lr,val/w1/r0,val/w1/r1,train/g_loss/r1\n"
                                         "0,0.1,2.0,3.0,\n"
                                         "2,0.1,1.5,2.5,0.7\n"
                                         "2,0.2,1.4,,\n"  # step 2 again (a resumed segment): its last values
                                         "4,0.2,1.0,2.0,0.5\n")
    assert replica_rows(tmp_path, 1) == [(0, {"lr": 0.1, "val/w1": 3.0}),
                                         (2, {"lr": 0.2, "val/w1": 2.5, "train/g_loss": 0.7}),
                                         (4, {"lr": 0.2, "val/w1": 2.0, "train/g_loss": 0.5})]
    assert replica_rows(tmp_path, 0, last=2) == [(0, {"lr": 0.1, "val/w1": 2.0}), (2, {"lr": 0.2, "val/w1": 1.4})]


def test_a_closed_offline_runs_summary_takes_records_across_block_ends(tmp_path):
    """Values written into a finished offline run's transaction log read back with W&B's own reader, wherever
    its exit record then starts in a 32 KiB block: after zero padding (fewer than 7 bytes left), after an empty
    first chunk (7 left), and a value longer than a block. The first goes in as soon as ``wandb.finish()`` has
    returned, when W&B's service may not have written the log out yet."""
    import wandb

    from ganbench.callbacks.log import _BLOCK, _log_records, add_to_offline_summary

    with wandb.init(project="p", dir=str(tmp_path), mode="offline", name="closed",
                    settings=wandb.Settings(console="off", x_disable_stats=True)) as run:
        run.log({"m": 1.0})
        run.summary["q"] = 3.0
    log = next(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    expected = {"big": "b" * 70000}
    add_to_offline_summary(log, expected)
    for gap in (0, 3, 6, 7, 8):  # bytes left in its block after the record written last
        start = _log_records(log.read_bytes())[-1][0]  # of the exit record: the next record goes there
        target = start - start % _BLOCK + _BLOCK - gap
        target += _BLOCK if target - start < 64 else 0
        n, copy = target - start - 64, tmp_path / "copy.wandb"
        for _ in range(5):  # a longer value, a longer record: step to the length that ends at `target`
            copy.write_bytes(log.read_bytes())
            add_to_offline_summary(copy, {f"v{gap}": "x" * n})
            end = _log_records(copy.read_bytes())[-2][1]
            if end == target:
                break
            n += target - end
        assert end == target
        copy.replace(log)
        expected[f"v{gap}"] = "x" * n
    run = inspect(log, summary=True)
    assert run["state"] == "finished" and run["summary"]["q"] == 3
    assert {k: run["summary"][k] for k in expected} == expected


@pytest.mark.parametrize("status,final,initial,diverged", [
    ("completed", 1.5, 2.0, False),
    ("completed", 2.5, 2.0, True),       # worse than G at initialization
    ("completed", 12.0, None, True),     # worse than quality.worst
    ("completed", math.nan, 2.0, True),  # non-finite quality
    ("diverged", 1.0, 2.0, True),        # the fit's loss bound
    ("completed", 9.99, 10.5, False),
])
def test_one_rule_for_diverged(status, final, initial, diverged):
    assert (divergence_reason(space().quality, status, final, initial) is not None) == diverged


def test_a_diverged_seed_never_scores_better_than_a_completed_one():
    """Every completed seed is at most `worst` and at most its initial quality; a diverged one is `worst`."""
    s = space()
    done = SeedResult(0, "completed", 0, 9.5, 3.0, [9.5], "a")
    blown = SeedResult(1, "diverged", 3, s.quality.worst, None, [], "b")
    assert aggregate(s, [done]).quality < aggregate(s, [blown]).quality == 10.0


BOARD_SPACE: dict = {
    **STUDY, "name": "board", "overrides": {k: v for k, v in STUDY["overrides"].items() if k != "data.dataset"},
    "factors": {"data.dataset": ["ring8", "grid25"], "model.init_args.loss": ["ns", "hinge"],
                "model.init_args.d_norm": ["batch", "spectral"]},
}


def hand_made_study(storage=None) -> optuna.Study:
    """Trials written through Optuna's API: scored cells with known qualities, an invalid-only cell and a
    pruned-only cell, on two data sets."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from ganbench.sweep.study import open_study

    space = parse_space(BOARD_SPACE, "board.yaml")
    study = open_study(space, storage or optuna.storages.InMemoryStorage(), "board")
    dists = {k: CategoricalDistribution(v) for k, v in space.factors.items()}
    dists["lr"] = FloatDistribution(1e-4, 1e-3, log=True)

    def add(dataset, loss, norm, quality=None, state=TrialState.COMPLETE, **attrs):
        params = {"data.dataset": dataset, "model.init_args.loss": loss, "model.init_args.d_norm": norm, "lr": 3e-4}
        if quality is not None:
            attrs.update(quality=quality, diverged_frac=0.5 if quality >= 10 else 0.0, collapsed_frac=0.0,
                         spread=0.0, oscillation=0.0)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, state=state, user_attrs={
            "cell": f"dataset={dataset} loss={loss} d_norm={norm}", **attrs}, value=quality))

    add("ring8", "hinge", "spectral", 1.0)
    add("ring8", "hinge", "spectral", 3.0)
    add("grid25", "hinge", "spectral", 10.0)  # the same pair on the other data set: its own panel
    add("ring8", "ns", "spectral", 1.5)
    add("ring8", "ns", "batch", state=TrialState.PRUNED, invalid="model.d_norm='batch' cannot be combined …")
    add("ring8", "ns", "batch", state=TrialState.PRUNED, invalid="model.d_norm='batch' cannot be combined …")
    add("grid25", "ns", "batch", state=TrialState.PRUNED, pruned_at=2)
    return study


def test_leaderboard_shows_every_cell_and_a_panel_per_data_set(tmp_path):
    import csv

    from ganbench.sweep.leaderboard import build_leaderboard, load_board
    from ganbench.sweep.plots import facets, heatmap_grid

    study = hand_made_study()
    board = load_board(study)
    assert board.counts() == "4 scored trials; 2 invalid, 1 pruned, 0 failed"
    assert facets(board) == [(("data.dataset", "ring8"),), (("data.dataset", "grid25"),)]
    rows, cols, grid, counts = heatmap_grid(board, "quality", (("data.dataset", "ring8"),))
    assert (rows, cols) == (["ns", "hinge"], ["batch", "spectral"])  # every value of the space, invalid ones too
    assert grid[1, 1] == 2.0 and counts[1, 1] == 2  # median of 1 and 3: grid25's 10 is not pooled in
    assert grid[0, 1] == 1.5 and math.isnan(grid[0, 0]) and counts[0, 0] == 0
    _, _, grid25, _ = heatmap_grid(board, "quality", (("data.dataset", "grid25"),))
    assert grid25[1, 1] == 10.0

    build_leaderboard(study, tmp_path, wandb_log=False, show=False)
    with open(tmp_path / "leaderboard.csv") as f:
        table = {r["cell"]: r for r in csv.DictReader(f)}
    assert list(table) == ["dataset=ring8 loss=ns d_norm=spectral", "dataset=ring8 loss=hinge d_norm=spectral",
                           "dataset=grid25 loss=hinge d_norm=spectral", "dataset=grid25 loss=ns d_norm=batch",
                           "dataset=ring8 loss=ns d_norm=batch"]
    invalid = table["dataset=ring8 loss=ns d_norm=batch"]
    assert (invalid["trials"], invalid["invalid"], invalid["note"]) == ("0", "2", "invalid only")
    assert table["dataset=grid25 loss=ns d_norm=batch"]["note"] == "pruned only"
    assert float(table["dataset=ring8 loss=hinge d_norm=spectral"]["median"]) == 2.0
    page = (tmp_path / "report.html").read_text()
    # five leaderboard pictures and the ring8 forest plot of effects (grid25 has one scored trial: no effects)
    assert page.count("<figcaption>") == 6 and "one panel per dataset" in page and "invalid: rejected" in page
    assert (tmp_path / "effects_ring8.png").is_file() and not (tmp_path / "effects_grid25.png").exists()
    assert "a colour scale per dataset" in page


def test_heatmap_colour_range_is_best_square_to_90th_percentile():
    import numpy as np

    from ganbench.sweep.plots import _scale

    assert _scale([np.array([[1.0, np.nan]]), np.array([[3.0]])], "quality") == (1.0, 2.8, True)
    assert _scale([np.array([[0.25]])], "divergence") == (0.0, 1.0, False)


def test_leaderboard_wandb_run_holds_the_space_and_one_row_per_trial(tmp_path, monkeypatch, capfd):
    from ganbench.sweep.leaderboard import build_leaderboard

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    build_leaderboard(hand_made_study(), tmp_path, wandb_log=True, show=False)
    printed = capfd.readouterr()
    run_dir = next(tmp_path.glob("wandb/offline-run-*"))
    # ganbench's one line says where the run is; wandb's own banner is not printed
    assert printed.out.splitlines() == [f"W&B summary run: {run_dir} (offline; upload with: wandb sync {run_dir})"]
    assert "wandb:" not in printed.err
    run = inspect(run_dir, summary=True)
    assert run["name"] == "board-leaderboard"
    assert run["config"]["factors"] == BOARD_SPACE["factors"] and run["config"]["seeds"] == [0, 1]
    trials = [r for r in inspect(next(tmp_path.glob("wandb/offline-run-*")))
              if r.get("type") == "history" and "trials._type" in r["history"]["item"]]
    assert trials and trials[0]["history"]["item"]["trials.nrows"] == 7


def test_check_states_the_space_in_words(capsys):
    assert main(["sweep", "--config", "sweeps/toy_stability.yaml", "--check"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sweeps/toy_stability.yaml: valid; 6 factors (640 cells), 4 nuisance parameters, 2 seeds per trial, "
        "300 G iterations per fit"]


@pytest.mark.parametrize("url,expected", [
    ("sqlite:///sweeps/toy.db", "sweeps/toy.artifacts"),
    ("journal:///shared/toy.log", "/shared/toy.artifacts"),
    ("postgresql://u@h/db", "runs/sweeps/toy.artifacts"),  # beside the study's trial folders, not inside
])
def test_artifacts_live_next_to_the_storage(url, expected):
    from ganbench.sweep.study import artifact_dir

    assert artifact_dir(url, "toy", "runs/sweeps") == Path(expected)

"""`ganbench sweep` / `ganbench leaderboard`: spaces, trial scoring, a real tiny study and its leaderboard."""

from __future__ import annotations

import csv
import itertools
import json
import statistics
from pathlib import Path

import optuna
import pytest
import yaml

from ganbench import GanbenchError
from ganbench.cli import EXIT_USAGE, main
from ganbench.sweep.leaderboard import top_quantile
from ganbench.sweep.outcome import SeedResult, aggregate
from ganbench.sweep.plots import PLOTS, expected_best
from ganbench.sweep.space import load_space, parse_space

TINY: dict = {
    "name": "tiny",
    "base_config": "configs/sngan.yaml",
    "budget": 4,
    "metrics_every": 2,
    "seeds": [0],
    "quality": {"metric": "val/w1_exact_1k", "direction": "minimize", "worst": 10.0},
    "collapse": {"metric": "val/modes_covered_2k", "at_most": 1},
    "overrides": {"model.init_args.width": 8, "model.init_args.n_critic": 1, "data.dataset": "ring8",
                  "data.batch_size": 8, "data.n_toy_samples": 500, "run.sample_every": 1000,
                  "run.checkpoint_every": 1000, "run.diagnostics_every": 0, "run.wandb": False,
                  "trainer.accelerator": "cpu"},
    "factors": {"model.init_args.d_norm": ["batch", "spectral"], "model.init_args.penalty": ["none", "gp"],
                "model.init_args.divergence_threshold": [1.0e6, 1.0e-9]},
    "nuisance": {"lr": {"low": 1.0e-4, "high": 1.0e-3, "log": True}},
    "bind": {"model.init_args.d_optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": "$lr"}}},
}


def write(tmp_path: Path, data: dict, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", sorted(str(p) for p in Path("sweeps").glob("*.yaml")))
def test_every_sweep_yaml_builds_and_its_trials_instantiate(path, tmp_path):
    """Parsed, validated, one trial sampled, and that trial's fit command accepted by the real CLI."""
    from ganbench.cli import GanbenchCLI

    space = load_space(path)
    assert space.name == Path(path).stem
    assert len(space.directions) == len(space.objectives)
    study = optuna.create_study(directions=space.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(50):  # the first valid cell (invalid ones become pruned trials, tested elsewhere)
        params = space.suggest(study.ask())
        if not (params.get("model.init_args.penalty", "none") != "none"
                and params.get("model.init_args.d_norm") == "batch"):
            break
    else:
        pytest.fail("50 sampled trials were all invalid cells")
    assert set(params) == set(space.factors) | set(space.nuisance)
    argv = space.fit_argv(params, 0, tmp_path / "run", space.name, ["t"])
    assert argv[:3] == ["fit", "--config", space.base_config]
    cli = GanbenchCLI(args=[*argv[1:], "--data.download", "false"], run=False)
    assert cli.trainer.max_steps == space.budget
    for key, value in space.config_values(params).items():
        if key.startswith("model.init_args.") and "." not in key[len("model.init_args."):] \
                and not key.endswith("optimizer"):
            assert cli.model.hparams[key.rsplit(".", 1)[1]] == value


BAD = {
    "unknown factor": ({"factors": {"model.init_args.los": ["ns"]}}, "'model.init_args.los' is not a parameter"),
    "empty choices": ({"factors": {"model.init_args.loss": []}}, "factors.model.init_args.loss has an empty choice"),
    "low > high": ({"nuisance": {"lr": {"low": 1.0e-2, "high": 1.0e-3}}}, "nuisance.lr has low=0.01 > high=0.001"),
    "bad choice": ({"factors": {"model.init_args.d_norm": ["batch", "spectal"]}},
                   "model.init_args.d_norm='spectal' is not valid; choose one of: none, batch"),
    "unbound": ({"nuisance": {"lr": {"low": 1.0e-4, "high": 1.0e-3}, "b1": {"low": 0.0, "high": 0.5}}},
                "nuisance.b1 is sampled but bound to no config key"),
    "data key": ({"overrides": {"data.datset": "ring8"}}, "'data.datset' is not a parameter of data"),
    "objective": ({"objectives": ["quality", "beauty"]}, "objective 'beauty' is not valid"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_space_is_one_line_before_any_trial(case, tmp_path, capsys):
    change, message = BAD[case]
    assert_one_line_before_any_trial({**TINY, **change}, message, tmp_path, capsys)


def assert_one_line_before_any_trial(data: dict, message: str, tmp_path: Path, capsys) -> None:
    """Parsing the sweep file raises one line holding ``message``; ``ganbench sweep`` on it prints that
    line alone, exits 2 and creates no storage."""
    with pytest.raises(GanbenchError) as err:
        parse_space(data, "bad.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)
    db = tmp_path / "bad.db"
    code = main(["sweep", "--config", str(write(tmp_path, data, "bad.yaml")), "--storage", f"sqlite:///{db}",
                 "--n-trials", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(lines) == 1 and message in lines[0]
    assert not db.exists()


def test_unreachable_storage_is_one_line(tmp_path, capsys):
    code = main(["sweep", "--config", str(write(tmp_path, TINY)), "--storage",
                 "postgresql+psycopg2://nobody@127.0.0.1:1/none", "--n-trials", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(lines) == 1
    assert lines[0].startswith("ganbench: error: --storage postgresql+psycopg2://nobody@127.0.0.1:1/none "
                               "is unreachable")


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_expected_best_equals_enumerated_resampling(direction):
    """Closed form = mean over all n^k ordered draws with replacement of the best draw."""
    values = [3.0, 1.0, 4.0, 1.5, 9.0]
    best = min if direction == "minimize" else max
    for k in (1, 2, 3):
        draws = list(itertools.product(values, repeat=k))
        assert expected_best(values, k, direction) == pytest.approx(
            sum(best(d) for d in draws) / len(draws), rel=1e-12)
    assert expected_best(values, 1, direction) == pytest.approx(statistics.fmean(values), rel=1e-12)


def test_top_quantile_is_the_good_side():
    values = [float(v) for v in range(21)]  # 0..20: the 5 % and 95 % quantiles are exactly 1 and 19
    assert top_quantile(values, "minimize") == 1.0
    assert top_quantile(values, "maximize") == 19.0


def test_trial_scores_from_seeds():
    space = parse_space(TINY, "tiny.yaml")
    seeds = [SeedResult(0, "completed", 0, 1.0, 8.0, [1.5, 1.2, 1.0, 2.0, 1.0], "a"),
             SeedResult(1, "completed", 0, 3.0, 1.0, [3.0, 3.0], "b"),
             SeedResult(2, "diverged", 3, 10.0, None, [], "c")]
    r = aggregate(space, seeds)
    assert r.quality == 3.0  # median of 1, 3 and the worst value 10 of the diverged seed
    assert r.diverged_frac == pytest.approx(1 / 3)
    assert r.collapsed_frac == pytest.approx(2 / 3)  # seed 1 covers 1 mode; the diverged seed counts
    assert r.instability == pytest.approx(2 / 3)
    assert r.spread == 1.0  # population std of 1 and 3
    # last 5 evaluations of seed 0: std of (1.5, 1.2, 1.0, 2.0, 1.0); seed 1: 0
    assert r.oscillation == pytest.approx(statistics.pstdev([1.5, 1.2, 1.0, 2.0, 1.0]) / 2, rel=1e-12)


def test_tiny_study_end_to_end_then_leaderboard(tmp_path, monkeypatch):
    """4 trials on SQLite: invalid cells are PRUNED with the model's reason, a diverging cell scores the worst
    value, the others score their fit's own final metric; the leaderboard's ranking is the trials' medians."""
    monkeypatch.setenv("GANBENCH_SWEEP_SEED", "1")
    config = write(tmp_path, TINY)
    db = tmp_path / "tiny.db"
    storage = f"sqlite:///{db}"
    code = main(["sweep", "--config", str(config), "--storage", storage, "--n-trials", "4",
                 "--runs-root", str(tmp_path / "runs"), "--threads", "1", "--no-progress"])
    assert code == 0
    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    kinds = set()
    for t in trials:
        p = t.params
        invalid = p["model.init_args.d_norm"] == "batch" and p["model.init_args.penalty"] == "gp"
        run = tmp_path / "runs" / "tiny" / f"trial_{t.number:05d}"
        trial_summary = json.loads((run / "summary.json").read_text())
        if invalid:
            kinds.add("invalid")
            assert t.state == optuna.trial.TrialState.PRUNED
            assert "cannot be combined with model.penalty='gp'" in t.user_attrs["invalid"]
            assert trial_summary["state"] == "PRUNED"
            continue
        assert t.state == optuna.trial.TrialState.COMPLETE
        seed = json.loads((run / "seed_0" / "summary.json").read_text())
        cfg = yaml.safe_load((run / "seed_0" / "config.yaml").read_text())
        assert cfg["run"]["wandb_group"] == "tiny" and cfg["seed_everything"] == 0
        assert cfg["run"]["wandb_tags"] == [f"{k.rsplit('.', 1)[1]}={p[k]}" for k in yaml.safe_load(
            config.read_text())["factors"]] + ["seed=0"]
        assert cfg["model"]["init_args"]["d_optimizer"]["init_args"]["lr"] == p["lr"]
        assert trial_summary["quality"] == t.user_attrs["quality"] == t.value
        if p["model.init_args.divergence_threshold"] < 1:
            kinds.add("diverged")
            assert seed["status"] == "diverged"
            assert t.value == 10.0 and t.user_attrs["diverged_frac"] == 1.0 and t.user_attrs["diverged"] is True
        else:
            kinds.add("completed")
            assert seed["status"] == "completed" and seed["g_steps"] == 4
            assert t.value == seed["metrics"]["val/w1_exact_1k"] and t.user_attrs["diverged_frac"] == 0.0
    assert kinds == {"invalid", "diverged", "completed"}, "GANBENCH_SWEEP_SEED=1 samples all three kinds"

    out = tmp_path / "board"
    assert main(["leaderboard", "--study", "tiny", "--storage", storage, "--out", str(out)]) == 0
    for name in ("leaderboard.csv", "leaderboard.md", "report.html", *PLOTS):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    effects = sorted(p.name for p in out.glob("effects_*.png"))  # the forest plot of factor effects
    assert effects == ["effects_all.png"] and (out / "effects.csv").is_file()
    assert html.count("data:image/png;base64,") == len(PLOTS) + 1 and "src=\"http" not in html
    assert len(list(out.glob("wandb/*run-*/run-*.wandb"))) == 1
    with open(out / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    rows = [r for r in table if int(r["trials"]) > 0]  # scored cells first; the invalid cell follows, marked
    assert [r["note"] for r in table[len(rows):]] == ["invalid only"] * (len(table) - len(rows))
    cells: dict[str, list[float]] = {}
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            cells.setdefault(t.user_attrs["cell"], []).append(t.user_attrs["quality"])
    expected = sorted(((statistics.median(v), c) for c, v in cells.items()))
    assert [(float(r["median"]), r["cell"]) for r in rows] == expected
    assert [int(r["rank"]) for r in rows] == list(range(1, len(expected) + 1))
    assert [int(r["trials"]) for r in rows] == [len(cells[c]) for _, c in expected]

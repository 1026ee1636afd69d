"""A study never scores what it did not measure: a stopped, killed or crashed fit makes its trial FAIL (never
COMPLETE, never "diverged"), and the next `ganbench sweep` resumes that trial's fits from their checkpoints,
ending with the trials an uninterrupted run of the same study would hold."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from ganbench.sweep.outcome import SeedResult, aggregate, seed_result
from ganbench.sweep.resume import MEASURED, NotMeasured
from ganbench.sweep.space import parse_space
from tests.test_sweep import TINY
from tests.test_sweep_population_trials import BATCHED

#: one cell, lr drawn per trial, 2 seeds; 24 G iterations with a checkpoint every 4; heartbeat every second
RESUME: dict = {**BATCHED, "name": "resume", "budget": 24, "metrics_every": 8, "prune": False,
                "factors": {"model.init_args.d_norm": ["spectral"]},
                "overrides": {**BATCHED["overrides"], "run.checkpoint_every": 4},
                "nuisance": {"lr": BATCHED["nuisance"]["lr"]},
                "bind": {k: v for k, v in BATCHED["bind"].items() if "$lr" in json.dumps(v)},
                "heartbeat_interval": 1, "grace_period": 2}
#: user attributes that name places (run folders, W&B ids) or the batch a trial happened to share
PLACES = ("run_dirs", "wandb_run_ids", "batch_trials")


class CrashAt(L.Callback):
    """Raises at G iteration ``step`` while the file ``flag`` exists: a bug inside a trial's fit."""

    def __init__(self, step: int, flag: str):
        self.step, self.flag = step, flag

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and Path(self.flag).exists():
            raise RuntimeError(f"boom at G iteration {self.step}")


def _argv(tmp_path: Path, name: str, n: int, workers: int, k: int) -> list[str]:
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({**RESUME, "name": name}))
    return ["sweep", "--config", str(config), "--storage", f"sqlite:///{tmp_path / name}.db", "--n-trials", str(n),
            "--workers", str(workers), "--population-trials", str(k), "--runs-root", str(tmp_path / "runs"),
            "--threads", "1", "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "GANBENCH_SWEEP_SEED": "3", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(Path.cwd())}


def _run(argv: list[str], log: Path) -> int:
    with open(log, "a") as err:
        return subprocess.run([sys.executable, "-m", "ganbench.cli", *argv], stdout=subprocess.DEVNULL,
                              stderr=err, env=_env(), timeout=600).returncode


def _trials(tmp_path: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / name}.db").trials
    except KeyError:  # not created yet
        return []


def _interrupt(tmp_path: Path, argv: list[str], name: str, log: Path, delay: float, how: str) -> int:
    """Start the sweep, wait until a fit is under way (for a kill: until both population fits wrote their first
    checkpoint) plus ``delay`` seconds, then: ``term`` (SIGTERM to its process group, as `timeout`, Ctrl-C or
    SLURM do), ``kill`` (SIGKILL of the sweep process) or ``worker`` (SIGKILL of one worker process alone).
    Returns the sweep's exit code."""
    with open(log, "a") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ganbench.cli", *argv], stdout=subprocess.DEVNULL, stderr=err,
                                env=_env(), start_new_session=True)
    try:
        end = time.monotonic() + 300
        while not any(t.state == TrialState.RUNNING for t in _trials(tmp_path, name)):
            if proc.poll() is not None:  # nothing left to run
                return proc.returncode
            assert time.monotonic() < end, "no trial started"
            time.sleep(0.2)
        while how != "term" and len(list(tmp_path.glob("runs/*/batch_*/checkpoints/step_0000004.ckpt"))) < 2:
            if proc.poll() is not None:  # a kill is to find both fits under way, past their first checkpoint
                return proc.returncode
            time.sleep(0.1)
        time.sleep(delay)
        if how == "term":
            os.killpg(proc.pid, signal.SIGTERM)
        elif how == "kill":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.kill(min(_workers(proc.pid)), signal.SIGKILL)
        return proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _workers(pid: int) -> list[int]:
    """The sweep's spawned worker processes (not multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if parent == str(pid) and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _outcome(trials: list[optuna.trial.FrozenTrial]) -> dict[int, tuple]:
    """Finished trials by the number of the trial they are (a retry: the trial it retries)."""
    out = {}
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            root = t.system_attrs.get("failed_trial", t.number)
            assert root not in out, f"trial {root} finished twice"
            out[root] = (t.state, t.params, t.values, {k: v for k, v in t.user_attrs.items() if k not in PLACES})
    return out


def _no_incomplete_fit_scored(trials: list[optuna.trial.FrozenTrial]) -> None:
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert set(t.user_attrs["seed_status"]) <= set(MEASURED), t.number
            for run_dir in set(t.user_attrs["run_dirs"]):
                summary = json.loads((Path(run_dir) / "summary.json").read_text())
                assert summary["status"] in MEASURED and summary["g_steps"] == summary["max_steps"], (t.number, run_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, tuple]:
    """The study run without interruption: 4 trials, 2 workers, 2 trials per population fit."""
    tmp = tmp_path_factory.mktemp("reference")
    assert _run(_argv(tmp, "ref", 4, 2, 2), tmp / "log") == 0
    trials = _trials(tmp, "ref")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    return _outcome(trials)


def _resumed_equals_reference(tmp_path: Path, reference: dict, how: str, stops: int) -> str:
    argv, log, rng = _argv(tmp_path, "ref", 4, 2, 2), tmp_path / "log", random.Random(28)
    stopped_fits = 0
    for _ in range(stops):
        code = _interrupt(tmp_path, argv, "ref", log, rng.uniform(0.0, 6.0 if how == "term" else 1.0), how)
        trials = _trials(tmp_path, "ref")
        _no_incomplete_fit_scored(trials)
        if code == 0:  # it finished before the signal: nothing to resume
            break
        expected = {"term": 143, "kill": -signal.SIGKILL, "worker": 2}[how]
        assert code == expected, log.read_text()[-3000:]
        if how == "term":
            assert not [t for t in trials if t.state == TrialState.RUNNING]
            assert {t.user_attrs.get("not_measured") for t in trials if t.state == TrialState.FAIL} <= {"interrupted"}
            stopped_fits += sum(t.state == TrialState.FAIL for t in trials)
        else:
            # (the other worker's heartbeat check may have failed a killed worker's trials already)
            stopped_fits += sum(t.state in (TrialState.RUNNING, TrialState.FAIL) for t in trials)
            time.sleep(3.0)  # past the grace period: the killed trials' heartbeats are stale
    assert stopped_fits >= 1, "no fit was stopped: nothing was resumed"
    assert _run(argv, log) == 0, log.read_text()[-3000:]
    trials = _trials(tmp_path, "ref")
    _no_incomplete_fit_scored(trials)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert _outcome(trials) == reference
    segments = [json.loads(p.read_text())["segments"] for p in tmp_path.glob("runs/ref/batch_*/summary.json")]
    assert any(len(s) > 1 or s[0]["from_step"] > 0 for s in segments), "no fit resumed from a checkpoint"
    return log.read_text()


@pytest.mark.slow
def test_sigterm_three_times_then_resume_equals_uninterrupted(tmp_path, reference):
    text = _resumed_equals_reference(tmp_path, reference, "term", 3)
    assert "resume with" not in text or "ganbench sweep" in text
    assert "stopped; its interrupted trials resume" in text


@pytest.mark.slow
def test_sigkill_of_the_sweep_then_resume_equals_uninterrupted(tmp_path, reference):
    _resumed_equals_reference(tmp_path, reference, "kill", 1)


@pytest.mark.slow
def test_one_killed_worker_then_resume_equals_uninterrupted(tmp_path, reference):
    _resumed_equals_reference(tmp_path, reference, "worker", 1)


def test_interrupted_or_crashed_seeds_are_not_measured(tmp_path):
    """seed_result keeps what a fit that did not finish says; aggregate refuses it; a diverged fit is measured."""
    space = parse_space(TINY, "tiny.yaml")
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"status": "interrupted", "g_steps": 2, "metrics": {},
                                                  "error": "SIGTERMException: "}))
    stopped = seed_result(space, 0, 143, run)
    crashed = seed_result(space, 0, 1, run, error="RuntimeError: boom")
    missing = seed_result(space, 0, 0, tmp_path / "nothing")
    assert [(s.status, s.error) for s in (stopped, crashed, missing)] == [
        ("interrupted", "SIGTERMException: "), ("crashed", "RuntimeError: boom"), ("missing", "missing")]
    assert all(math.isnan(s.quality) for s in (stopped, crashed, missing))
    done = SeedResult(1, "completed", 0, 1.0, 8.0, [1.0], "a")
    blown = SeedResult(2, "diverged", 3, 10.0, None, [], "b")
    assert aggregate(space, [done, blown]).diverged_frac == 0.5
    for s in (stopped, crashed, missing):
        with pytest.raises(ValueError, match="measured nothing"):
            aggregate(space, [done, s])


def test_a_crashing_fit_fails_its_trial_once_and_the_rerun_retries_it(tmp_path, monkeypatch, capfd):
    """trial 0's fit raises at G iteration 5: FAIL with that line (said once), not on the leaderboard or scored in
    the W&B table; once the bug is gone the rerun retries it, resuming its fit from the checkpoint at G iteration
    4, and completes it."""
    from ganbench.sweep.leaderboard import load_board, trial_table
    from ganbench.sweep.study import run_sweep

    monkeypatch.setenv("GANBENCH_SWEEP_SEED", "3")
    flag = tmp_path / "crash"
    flag.write_text("")
    config = tmp_path / "crash.yaml"
    config.write_text(yaml.safe_dump({**RESUME, "name": "crash", "seeds": [0], "budget": 6}))
    storage = f"sqlite:///{tmp_path / 'crash.db'}"
    spec = {"class_path": f"{__name__}.CrashAt", "init_args": {"step": 5, "flag": str(flag)}}
    once = [f"--trainer.callbacks+={json.dumps(spec)}"]

    def sweep(n: int) -> optuna.Study:
        return run_sweep(str(config), storage, None, n, 1, runs_root=str(tmp_path / "runs"), threads=1,
                         extra_args=once, progress=False)

    study = sweep(1)
    err = capfd.readouterr().err
    (t0,) = study.trials
    assert t0.state == TrialState.FAIL
    assert (t0.user_attrs["not_measured"], t0.user_attrs["error"]) == ("crashed", "RuntimeError: boom at G iteration 5")
    assert err.count("boom at G iteration 5") == 1
    assert "trial 0 FAIL, not measured (crashed: RuntimeError: boom at G iteration 5)" in err
    assert load_board(study).rows == []  # nothing scored
    cols, rows = trial_table(study)  # the W&B table: listed, with no result
    assert {k: dict(zip(cols, rows[0]))[k] for k in ("state", "quality", "diverged_frac", "not_measured")} == {
        "state": "FAIL", "quality": None, "diverged_frac": None, "not_measured": "crashed"}
    fit = tmp_path / "runs" / "crash" / "trial_00000" / "seed_0"
    assert sorted(p.name for p in (fit / "checkpoints").glob("*.ckpt")) == ["last.ckpt", "step_0000004.ckpt"]
    flag.unlink()  # the bug is fixed
    study = sweep(1)
    t0, retry = study.trials
    assert (t0.state, retry.state, retry.system_attrs["failed_trial"]) == (TrialState.FAIL, TrialState.COMPLETE, 0)
    assert retry.params == t0.params and "not_measured" not in retry.user_attrs
    summary = json.loads((fit / "summary.json").read_text())
    assert [(s["from_step"], s["to_step"], s["status"]) for s in summary["segments"]] == [
        (0, 5, "interrupted"), (4, 6, "completed")]
    assert [r.number for r in load_board(study).rows] == [1]


def test_not_measured_is_what_a_trial_raises():
    err = NotMeasured("interrupted", "SIGTERMException: ")
    assert (err.status, err.error, str(err)) == ("interrupted", "SIGTERMException: ", "interrupted: SIGTERMException: ")

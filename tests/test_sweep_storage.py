"""Sweep storage for real: two worker processes on one PostgreSQL study, and a SIGKILLed worker whose
trial is failed by the heartbeat and retried when the sweep is restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from ganbench.cli import main
from tests.test_sweep import TINY

VALID = {**TINY, "factors": {"model.init_args.loss": ["hinge", "ns", "ls"], "model.init_args.d_norm": ["spectral"]}}


def test_two_workers_on_postgres_record_every_trial_once(tmp_path):
    """Default suite: CI installs Debian's postgresql for it (tests/pg.py skips with the reason otherwise)."""
    from tests.pg import postgres_url

    config = tmp_path / "pg.yaml"
    config.write_text(yaml.safe_dump({**VALID, "name": "pg"}))
    with postgres_url() as url:
        code = main(["sweep", "--config", str(config), "--storage", url, "--n-trials", "4", "--workers", "2",
                     "--runs-root", str(tmp_path / "runs"), "--threads", "1", "--no-progress"])
        assert code == 0
        trials = optuna.load_study(study_name="pg", storage=url).trials
    assert len(trials) == 4
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({t.params["lr"] for t in trials}) == 4  # four distinct samples, none run twice
    dirs = sorted(p.name for p in (tmp_path / "runs" / "pg").iterdir())
    assert dirs == [f"trial_{n:05d}" for n in range(4)]
    for t in trials:  # each trial's folder holds exactly its one seed run
        assert [p.name for p in (tmp_path / "runs" / "pg" / f"trial_{t.number:05d}").glob("seed_*")] == ["seed_0"]


def _poll(storage: str, predicate, timeout: float, name: str = "kill") -> list:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
            if predicate(trials):
                return trials
        except KeyError:  # study not created yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"condition not reached within {timeout} s")


def test_killed_worker_trial_fails_by_heartbeat_and_is_retried(tmp_path):
    config = tmp_path / "kill.yaml"
    config.write_text(yaml.safe_dump({**VALID, "name": "kill", "budget": 60, "metrics_every": 20,
                                      "heartbeat_interval": 1, "grace_period": 3}))
    storage = f"sqlite:///{tmp_path / 'kill.db'}"
    argv = ["sweep", "--config", str(config), "--storage", storage, "--n-trials", "3",
            "--runs-root", str(tmp_path / "runs"), "--threads", "1", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "ganbench.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE": "offline"})
    try:
        before = _poll(storage, lambda ts: any(t.state == TrialState.COMPLETE for t in ts)
                       and any(t.state == TrialState.RUNNING for t in ts), timeout=300)
        time.sleep(1.0)  # mid-trial: the fit of the running trial is under way
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    trials = optuna.load_study(study_name="kill", storage=storage).trials
    done = {t.number: t for t in trials if t.state == TrialState.COMPLETE}
    killed = [t for t in trials if t.state == TrialState.RUNNING]
    assert len(killed) == 1 and set(done) >= {t.number for t in before if t.state == TrialState.COMPLETE}
    killed_number = killed[0].number
    time.sleep(4.0)  # past the grace period: the killed trial's heartbeat is stale

    assert main(argv) == 0
    after = optuna.load_study(study_name="kill", storage=storage).trials
    by_number = {t.number: t for t in after}
    assert by_number[killed_number].state == TrialState.FAIL
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed[0].params
    assert sum(t.state == TrialState.COMPLETE for t in after) == 3
    assert [t.number for t in after if t.state == TrialState.FAIL] == [killed_number]
    for number, t in done.items():  # finished trials untouched
        again = by_number[number]
        assert (again.state, again.value, again.params, again.datetime_complete) == (
            t.state, t.value, t.params, t.datetime_complete)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_killed_two_worker_sweep_leaves_no_worker_and_reruns_to_exactly_n(tmp_path):
    """SIGKILL of `ganbench sweep --workers 2`: both spawned workers die with it (they used to keep running
    their shares, so the rerun overshot), and the rerun ends with exactly --n-trials finished trials."""
    config = tmp_path / "kill2.yaml"
    config.write_text(yaml.safe_dump({**VALID, "name": "kill2", "budget": 60, "metrics_every": 20,
                                      "heartbeat_interval": 1, "grace_period": 3}))
    storage = f"sqlite:///{tmp_path / 'kill2.db'}"
    n = 4
    argv = ["sweep", "--config", str(config), "--storage", storage, "--n-trials", str(n), "--workers", "2",
            "--runs-root", str(tmp_path / "runs"), "--threads", "1", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "ganbench.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE": "offline"})
    try:
        _poll(storage, lambda ts: any(t.state == TrialState.COMPLETE for t in ts), timeout=300, name="kill2")
        workers = [pid for pid in _children(proc.pid) if _alive(pid)]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and len(workers) >= 2
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)]
    finished_before = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                          for t in optuna.load_study(study_name="kill2", storage=storage).trials)
    assert 1 <= finished_before < n
    time.sleep(4.0)  # past the grace period: the killed trials' heartbeats are stale
    assert main(argv) == 0
    after = optuna.load_study(study_name="kill2", storage=storage).trials
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after) == n

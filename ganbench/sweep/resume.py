"""Stopping and resuming a study: what a trial measured, signals, retries and the fits they resume.

**Measured or not.** A seed is *measured* when its fit ran to its end (``completed``) or was stopped by the
training dynamics (``diverged``: a non-finite or out-of-bound loss, or the quality rule of
:func:`ganbench.sweep.outcome.divergence_reason`). Anything else — ``interrupted`` (SIGTERM/SIGINT),
``crashed`` (an exception in ganbench or a callback), ``missing`` (no summary.json), ``no_metric`` (the
evaluation produced no value) — is *not measured*: the trial raises :class:`NotMeasured` instead of a
score, Optuna records it as FAIL with ``not_measured`` and ``error`` in its user attributes, and nothing
(leaderboard, statistics, W&B) counts it.

**Stopping.** :class:`StopSignals` turns the first SIGTERM or SIGINT of a sweep into a request: no new trial
starts, a running fit ends its G iteration and writes ``last.ckpt`` (Lightning's SIGTERM handling; a SIGINT
is handed to it as a SIGTERM), its trials are recorded as interrupted, and the sweep exits 128 + the
signal (143, 130). A second signal, a second or more after the first, ends every process at once.

**Resuming.** A rerun of ``ganbench sweep`` on the same study first fails trials whose heartbeat is stale
(a killed sweep), then re-enqueues every FAIL trial that measured nothing (:func:`enqueue_retries`) with
Optuna's retry format (``failed_trial``, ``retry_history``, as
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback` writes them). A retry runs in the directory of
the trial it retries (:func:`root_number`): each fit that is already measured is read back, each other
fit resumes from its newest intact checkpoint (``--ckpt_path last``), bit-exactly. The trials of one
population fit are retried together, as that same fit (``ganbench_batch_retry``).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from optuna.samplers import RandomSampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import FrozenTrial, TrialState

from ganbench import GanbenchError

#: a seed with one of these statuses was measured; any other status means its fit did not finish
MEASURED = ("completed", "diverged")
#: exit code given to a fit that raised an exception (its seed is ``crashed``)
EXIT_CRASHED = 1


class NotMeasured(Exception):
    """A trial whose seeds are not all measured: ``status`` of the first such seed and its error line."""

    def __init__(self, status: str, error: str):
        super().__init__(f"{status}: {error}" if error else status)
        self.status, self.error = status, error


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


class SweepStopped(Exception):
    """A sweep stopped by a signal once its running trials were recorded; ``code`` is 128 + the signal."""

    def __init__(self, code: int, study: str):
        super().__init__(f"study {study} stopped; its interrupted trials resume where their fits stopped when the "
                         "same `ganbench sweep` command runs again")
        self.code = code


# ------------------------------------------------------------------------------------ signals
class StopSignals:
    """SIGTERM/SIGINT in a sweep process: the first one is a request to stop (:attr:`stopped`), handed to the
    running fit and to ``forward_to()`` (the spawned workers); a second one at least ``debounce_s`` later ends the
    process at once. A signal delivered twice (to the process group and by the parent) counts once."""

    def __init__(self, debounce_s: float = 1.0):
        self.signum: int | None = None
        self.debounce_s = debounce_s
        self.forward_to: Callable[[], list[int]] = lambda: []
        self.announce = False
        self._t = 0.0
        self._forwarding = False
        self._previous: dict[int, Any] = {}

    @property
    def stopped(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or 0)

    def install(self, announce: bool = False) -> None:
        self.signum, self.announce = None, announce
        for s in (signal.SIGINT, signal.SIGTERM):
            self._previous[s] = signal.signal(s, self.handle)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def handle(self, signum: int, frame: Any) -> None:
        if self._forwarding:
            return
        now = time.monotonic()
        if self.signum is not None:
            if now - self._t < self.debounce_s:
                return
            self._send(signum)
            os._exit(128 + signum)
        self.signum, self._t = signum, now
        if self.announce:
            print(f"ganbench: {signal.Signals(signum).name}: the running fits stop and write their checkpoints, no "
                  "new trial starts (a second signal stops at once)", file=sys.stderr, flush=True)
        self._send(signum)
        lightning = signal.getsignal(signal.SIGTERM)
        if signum != signal.SIGTERM and callable(lightning) and lightning != self.handle:
            self._forwarding = True  # a fit is running: Lightning's SIGTERM handling ends its G iteration
            try:
                lightning(signal.SIGTERM, frame)
            finally:
                self._forwarding = False

    def _send(self, signum: int) -> None:
        for pid in self.forward_to():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


#: this process's stop request (installed by ``ganbench sweep`` and its workers)
STOP = StopSignals()


class SweepStop(L.Callback):
    """Given to every fit of a sweep: a stop requested before Lightning's SIGTERM handler was installed (while
    the fit was being set up) still ends the fit at its next G iteration, with ``last.ckpt`` written."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if STOP.stopped:
            trainer._signal_connector.received_sigterm = True


# ------------------------------------------------------------------------------------ fits
def measured_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary.json of a fit that already ended measured (completed or diverged), else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("status") in MEASURED else None


def run_fit(argv: list[str], run_dir: Path) -> tuple[int, str | None]:
    """One fit of a trial: its exit code and the error line of a crash. A fit that already ended measured is
    not run again (code 0, or 3 when it diverged); one with checkpoints resumes from its newest intact one;
    none starts once the sweep is stopping (code 143). A user error (:class:`GanbenchError`) propagates."""
    from ganbench.cli import EXIT_DIVERGED, run
    from ganbench.reliability import EXIT_INTERRUPTED

    done = measured_summary(run_dir)
    if done is not None:
        return (EXIT_DIVERGED if done["status"] == "diverged" else 0), None
    if STOP.stopped:
        return EXIT_INTERRUPTED, "the sweep was stopping; the fit did not start"
    if any((run_dir / "checkpoints").glob("*.ckpt")):
        argv = [*argv, "--ckpt_path", "last"]
    try:
        code = run(argv)
        return code, (f"stopped by {signal.Signals(STOP.signum).name}" if code == EXIT_INTERRUPTED and STOP.signum
                      else None)
    except GanbenchError:
        raise
    except Exception as err:  # a bug in ganbench or a callback, out of memory, ...: this fit measured nothing
        return EXIT_CRASHED, one_line(err)


# ------------------------------------------------------------------------------------ retries
def frozen(trial: Any) -> FrozenTrial:
    return trial if isinstance(trial, FrozenTrial) else trial.storage.get_trial(trial._trial_id)


def root_number(trial: Any) -> int:
    """The number of the trial a retry retries (its run directories are that trial's), else its own."""
    return frozen(trial).system_attrs.get("failed_trial", trial.number)


#: user attributes a retry keeps from the trial it retries (the rest is that attempt's outcome)
KEPT = ("cell", "batch_trials", "design_point")


def _copy(t: FrozenTrial, state: TrialState, chain: list[FrozenTrial], extra: dict[str, Any]) -> FrozenTrial:
    copy = optuna.trial.create_trial(
        state=TrialState.WAITING, params=t.params, distributions=t.distributions,
        user_attrs={k: v for k, v in t.user_attrs.items() if k in KEPT},
        system_attrs={"failed_trial": root_number(t), "retry_history": [c.number for c in chain], **extra})
    if state == TrialState.RUNNING:
        copy.state, copy.datetime_start = state, datetime.datetime.now()
    return copy


def _chains(study: optuna.Study) -> dict[int, list[FrozenTrial]]:
    chains: dict[int, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        chains.setdefault(root_number(t), []).append(t)
    return chains


def enqueue_retries(study: optuna.Study, max_retry: int) -> list[int]:
    """A WAITING retry for every trial whose every attempt FAILed without an invalid cell (not measured,
    or stale), until ``max_retry`` attempts crashed or were killed (a stopped attempt does not count); the
    trials of one population fit get one retry, of their first such trial, which names the others
    (``ganbench_batch_retry``). Returns the retried trials' numbers."""
    chains = _chains(study)

    def failures(ts: list[FrozenTrial]) -> int:  # a stop (SIGTERM/SIGINT) is no failure of the trial's
        return sum(t.user_attrs.get("not_measured") != "interrupted" for t in ts)

    todo = {r: ts for r, ts in chains.items() if all(t.state == TrialState.FAIL for t in ts) and ts[-1].params
            and "invalid" not in ts[-1].user_attrs and failures(ts) <= max_retry}
    done: set[int] = set()
    for root in sorted(todo):
        if root in done:
            continue
        members = [m for m in todo[root][-1].user_attrs.get("batch_trials") or [root] if m in todo]
        done.update(members)
        extra = {"ganbench_batch_retry": {str(m): todo[m][-1].number for m in members[1:]}} \
            if len(todo[root][-1].user_attrs.get("batch_trials") or []) > 1 else {}
        study.add_trial(_copy(todo[members[0]][-1], TrialState.WAITING, todo[members[0]], extra))
    return sorted(done)


def resume_failed(study: optuna.Study, max_retry: int) -> list[int]:
    """:func:`enqueue_retries`, said on stderr in one line when it retried anything."""
    retried = enqueue_retries(study, max_retry)
    if retried:
        print(f"ganbench: resuming trial{'s' if len(retried) > 1 else ''} {', '.join(map(str, retried))} (they "
              "measured nothing: interrupted, killed or crashed); their fits continue from their checkpoints",
              file=sys.stderr)
    return retried


def retry_batch(study: optuna.Study, trial: optuna.Trial) -> list[Any] | None:
    """The population fit a retry belongs to, member by member in its original order: ``trial`` itself,
    a new RUNNING retry of each other member to retry, and the FrozenTrial of a member that already
    finished (its replicas train again, it is not told). None when ``trial`` retries no population fit."""
    own = frozen(trial)
    others = own.system_attrs.get("ganbench_batch_retry")
    if others is None:
        return None
    chains = _chains(study)
    storage, members = study._storage, []
    for root in own.user_attrs["batch_trials"]:
        if root == root_number(own):
            members.append(trial)
        elif str(root) in others:
            last = storage.get_trial(chains[root][-1]._trial_id)
            trial_id = storage.create_new_trial(study._study_id, _copy(last, TrialState.RUNNING, chains[root], {}))
            members.append(optuna.Trial(study, trial_id))
        else:
            members.append(chains[root][0])
    return members


class OrdinalRandomSampler(RandomSampler):
    """Random sampling whose draws for a trial depend on the seed and on the trial's ordinal among the
    study's first attempts (retries excluded) only, not on which worker asks or on earlier calls: a
    study stopped and resumed draws the same parameters as one run without a stop."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self._seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        earlier = [t for t in study._storage.get_all_trials(study._study_id, deepcopy=False)
                   if t.number < trial.number and "failed_trial" not in t.system_attrs]
        self._rng = LazyRandomState((self._seed * 1_000_003 + len(earlier)) % 2**32)

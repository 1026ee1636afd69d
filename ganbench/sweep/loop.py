"""A sweep worker's loop: ask Optuna for trials (one, or K that train as one population fit), run them, tell
each its own result — COMPLETE, PRUNED, or FAIL when it measured nothing (:mod:`ganbench.sweep.resume`)."""

from __future__ import annotations

import gc
import sys
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from ganbench import GanbenchError
from ganbench.sweep.resume import STOP, NotMeasured, frozen, retry_batch, root_number


class Budget:
    """Trials a sweep call still starts, shared by its workers (a ``multiprocessing.Value``, or a plain
    count in one process): a retry of a population fit takes all its trials at once, so a fixed share per
    worker could overshoot ``--n-trials``."""

    def __init__(self, value: Any):
        self.value = value

    def take(self, n: int) -> int:
        """Up to ``n`` trials (at least one when a retry needs them); 0 when none is left."""
        left = self.value.value
        got = min(n, left)
        self.value.value = left - got
        return got

    def lock(self) -> Any:
        import contextlib

        return self.value.get_lock() if hasattr(self.value, "get_lock") else contextlib.nullcontext()


def ask_batch(study: optuna.Study, objective: Any, size: int, first: optuna.Trial | None = None,
              asked: Callable[[optuna.Trial], None] = lambda trial: None
              ) -> tuple[list[tuple[Any, dict[str, Any], str]], optuna.Trial | None]:
    """Up to ``size`` new trials that can train as one population fit: ``first`` (else a new trial) is sampled
    as usual; the others are asked with the study's sampler wrapped in :class:`optuna.samplers.PartialFixedSampler`,
    which returns the first trial's values for the parameters the trials of a fit share (the factors and the
    structural nuisance, :attr:`SweepSpace.shared`) and lets the sampler draw every other parameter afresh.

    Why not ``study.enqueue_trial(shared)`` and ``study.ask()``: an enqueued trial is a WAITING trial in the
    shared storage, and any worker's next ``ask`` pops it, so with several workers one worker's partial trial
    would become another's. The wrapped sampler lives in this process only. Waiting trials exist all the same
    (``study.enqueue_trial``; retries, :func:`ganbench.sweep.resume.enqueue_retries`): one whose fixed parameters
    disagree with the batch's shared values, and any retry (it runs as the fit it retries — alone, or with the other
    trials of its population fit, :func:`ganbench.sweep.resume.retry_batch`), ends the batch early and is
    returned, to lead the next. ``asked`` is called with every trial as soon as it exists."""
    def ask() -> optuna.Trial:
        with warnings.catch_warnings():  # (its heartbeat is started by the caller: ``asked``)
            warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
            trial = study.ask()
        asked(trial)
        return trial

    first = first if first is not None else ask()
    members = retry_batch(study, first)
    if members is not None:  # the population fit of a retried trial, as it was
        for m in members[1:]:
            if isinstance(m, optuna.Trial):
                asked(m)
        return [(m, *objective.suggest(m)) for m in members], None
    params, cell = objective.suggest(first)
    if "failed_trial" in frozen(first).system_attrs:
        return [(first, params, cell)], None
    fixed = {key: params[key] for key in objective.space.shared}
    batch = [(first, params, cell)]
    base = study.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.PartialFixedSampler(fixed, base)
    try:
        while len(batch) < size:
            trial = ask()
            attrs = frozen(trial).system_attrs
            own = attrs.get("fixed_params") or {}
            if "failed_trial" in attrs or any(key in own and own[key] != value for key, value in fixed.items()):
                return batch, trial
            batch.append((trial, *objective.suggest(trial)))
    finally:
        study.sampler = base
    return batch, None


def optimize_batches(study: optuna.Study, objective: Any, budget: Budget, k: int) -> None:
    """Trials in batches of ``k`` (1: one at a time) through Optuna's ask-and-tell interface, while ``budget``
    lasts and no stop was requested (:data:`ganbench.sweep.resume.STOP`).

    The trials of a batch (:func:`ask_batch`) train as one population fit (:meth:`Objective.run_batch`); each
    is then scored and told its own result exactly as if it had run alone (:meth:`Objective.finish`, the code
    every trial is scored with). A batch of one trial, and each trial of a batch whose fit the model refuses (an
    invalid cell, an option that cannot be batched), runs as without batching (:meth:`Objective.run_trial`,
    which records an invalid cell as PRUNED with the model's reason). Nothing is pruned inside a batch: its
    trials train as one fit, which no trial can stop alone; each trial's quality curve is reported as its
    intermediate values after the fit. A trial that measured nothing is told FAIL, with ``not_measured`` and
    ``error`` in its user attributes and one line on stderr per batch. As ``study.optimize`` does: stale trials
    are failed before each batch, every asked trial beats until it is told (storages with a heartbeat), and an
    exception fails every trial not yet told and ends the worker."""
    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled

    storage = study._storage
    beating: dict[int, tuple[optuna.Trial, Any]] = {}  # asked, not yet told

    def asked(trial: optuna.Trial) -> None:
        beat = get_heartbeat_thread(trial._trial_id, storage)
        beat.start()
        beating[trial._trial_id] = (trial, beat)

    def tell(trial: optuna.Trial, run: Callable[..., Any], *args: Any) -> NotMeasured | None:
        failed = None
        try:
            values, state = run(trial, *args), None
        except optuna.TrialPruned:
            values, state = None, TrialState.PRUNED
        except NotMeasured as err:
            values, state, failed = None, TrialState.FAIL, err
            objective.record_failure(trial, err)
        beating.pop(trial._trial_id)[1].join()
        study.tell(trial, values, state=state)
        return failed

    carried = None
    try:
        while not STOP.stopped:
            if is_heartbeat_enabled(storage):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
            with budget.lock():  # asked under the lock: what is taken is what runs
                size = budget.take(k) if carried is None else 1 + budget.take(k - 1)
                if size == 0:
                    break
                batch, carried_next = ask_batch(study, objective, size, carried, asked)
                live = sum(isinstance(t, optuna.Trial) for t, _, _ in batch) + (carried_next is not None)
                budget.value.value -= live - size  # a retried population fit takes what it holds
            carried = carried_next
            results, refused, failures = None, None, []
            if len(batch) > 1:  # before the fit: a retry of any of them is a retry of this fit
                members = [root_number(t) for t, _, _ in batch]
                for trial, _, _ in batch:
                    if isinstance(trial, optuna.Trial):
                        trial.set_user_attr("batch_trials", members)
                try:
                    results = objective.run_batch(batch)
                except GanbenchError as err:
                    refused = err
            for i, (trial, params, cell) in enumerate(batch):
                if not isinstance(trial, optuna.Trial):
                    continue  # finished before its population fit was retried
                if results is None:
                    failed = tell(trial, objective.run_trial, params, cell)
                else:
                    record = {"batch": str(objective.batch_dir(root_number(batch[0][0])).resolve()),
                              "replicas": [s.replica for s in results[i]]}
                    failed = tell(trial, objective.finish, params, results[i], record)
                failures += [(trial.number, failed)] if failed else []
            report(failures)
            gc.collect()
            if refused is not None and "invalid" not in storage.get_trial(batch[0][0]._trial_id).user_attrs:
                # a valid cell whose fit cannot be batched (convolutional networks, image metrics, ...); an
                # invalid cell's trials are recorded as such, and batching goes on with the next cell
                numbers = ", ".join(str(t.number) for t, _, _ in batch)
                print(f"ganbench: trials {numbers} cannot train as one population fit ({refused}); they ran on their "
                      f"own, and so do this worker's other trials", file=sys.stderr)
                k = 1
    finally:  # an exception (or a second signal): the trials not told fail, as study.optimize fails its trial
        for trial, beat in list(beating.values()):
            beat.join()
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def report(failures: list[tuple[int, NotMeasured]]) -> None:
    """One line per distinct reason: which trials measured nothing, why, and that a rerun retries them."""
    by_reason: dict[str, list[int]] = {}
    for number, err in failures:
        by_reason.setdefault(str(err), []).append(number)
    for reason, numbers in by_reason.items():
        which = "trial" + ("s " if len(numbers) > 1 else " ") + ", ".join(map(str, numbers))
        print(f"ganbench: {which} FAIL, not measured ({reason}); the next `ganbench sweep` on this study retries "
              f"{'them' if len(numbers) > 1 else 'it'}", file=sys.stderr, flush=True)

"""Studies: storage, samplers, heartbeats, resumption and local worker processes.

Storage URLs:

* ``sqlite:///sweeps/NAME.db`` (default) and any SQLAlchemy URL (``postgresql://user@host/db``):
  :class:`optuna.storages.RDBStorage` with a heartbeat — a trial whose process stops beating for
  ``grace_period`` seconds (default 2 × ``heartbeat_interval``) is marked FAIL and
  :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues a copy of its parameters, which the
  next worker runs first;
* ``journal:///path/to/study.log``: :class:`optuna.storages.JournalStorage` over a shared file
  (NFS), for many machines without a database server. Optuna's journal storage has no heartbeat,
  so a killed trial stays RUNNING there.

``--n-trials N`` is the number of finished (COMPLETE or PRUNED) trials the study should hold: a
call runs ``N - finished`` more, split over its ``--workers`` processes, so a killed study resumes
where it stopped (``load_if_exists``). Spawned workers die with the ``ganbench sweep`` process that
started them (:func:`die_with_parent`), so a killed sweep leaves nothing running that would add trials
beyond ``N`` once it is rerun.

``--population-trials K`` (:func:`optimize_batches`): each worker asks Optuna for K trials at a time that
share the cell and the structural nuisance (:func:`ask_batch`), trains them as one population fit and tells
each trial its own result.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ganbench import GanbenchError
from ganbench.sweep.space import SweepSpace, load_space

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

#: sampler name → factory(seed, n_objectives); random sampling keeps the per-cell distributions unbiased
SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
}


def default_storage(space: SweepSpace) -> str:
    return f"sqlite:///sweeps/{space.name}.db"


def make_storage(url: str, space: SweepSpace | None = None) -> optuna.storages.BaseStorage:
    """Open (creating when needed) the storage at ``url``; unreachable storage is one GanbenchError line."""
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal://"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise GanbenchError(f"--storage {url}: cannot open the journal file ({err.strerror or err})") from None
    url = _driver(url)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kwargs: dict[str, Any] = {}
            if space is not None and space.heartbeat_interval > 0:
                kwargs = {"heartbeat_interval": space.heartbeat_interval, "grace_period": space.grace_period,
                          "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                              max_retry=space.max_retry)}
            return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
    except Exception as err:  # sqlalchemy's OperationalError / ArgumentError / missing driver
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GanbenchError(f"--storage {_redact(url)} is unreachable: {first}") from None


def _driver(url: str) -> str:
    """``postgresql://`` with the installed driver: SQLAlchemy 2.1 means psycopg 3 by it, while
    ``ganbench[postgres]`` installs psycopg2."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {}


def _redact(url: str) -> str:
    """The URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_study(space: SweepSpace, storage: optuna.storages.BaseStorage, study_name: str,
               seed: int | None = None) -> optuna.Study:
    """Create the study or load it (``load_if_exists``); the space is kept as a study attribute."""
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(space.metrics_every, 1))
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, directions=space.directions,
                                    sampler=SAMPLERS[space.sampler](seed), pruner=pruner, load_if_exists=True)
    except ValueError as err:  # existing study with other directions
        raise GanbenchError(f"--study-name {study_name}: {str(err).splitlines()[0]}") from None
    if [d.name.lower() for d in study.directions] != space.directions:
        raise GanbenchError(f"--study-name {study_name} exists with directions "
                            f"{[d.name.lower() for d in study.directions]}, the sweep has {space.directions}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(space.metric_names)
    for key, value in space.to_dict().items():  # one attribute per part: readable in optuna-dashboard
        study.set_user_attr(key, value)
    return study


def study_space(study: optuna.Study) -> dict[str, Any] | None:
    """The space a study was created with (its user attributes; older studies kept it as ``space``)."""
    attrs = study.user_attrs
    if "factors" in attrs and "quality" in attrs:
        return attrs
    return attrs.get("space")


def artifact_dir(storage_url: str, study_name: str, runs_root: str | Path) -> Path:
    """Where a study's Optuna artifacts (trial pictures) go: next to a SQLite or journal file
    (``sweeps/NAME.db`` → ``sweeps/NAME.artifacts/``), else ``RUNS_ROOT/STUDY.artifacts`` (beside the
    study's trial folders); give optuna-dashboard the same folder (``--artifact-dir``)."""
    for prefix in ("sqlite:///", "journal://"):
        if storage_url.startswith(prefix):
            path = Path(storage_url[len(prefix):])
            return path.with_name(path.stem + ".artifacts")
    return Path(runs_root) / f"{study_name}.artifacts"


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def split(n: int, k: int) -> list[int]:
    """``n`` trials over ``k`` workers, as evenly as possible (the first ones get one more)."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def worker(config: str, storage_url: str, study_name: str, n_trials: int, runs_root: str, index: int,
           threads: int, extra_args: list[str] | None = None, population_trials: int = 1) -> int:
    """One sweep worker: load the study and run ``n_trials`` trials (a spawned process or the caller), in
    batches of ``population_trials`` when that is above 1."""
    import torch

    from ganbench.callbacks.log import quiet_library_noise
    from ganbench.sweep.objective import Objective

    torch.set_num_threads(max(1, threads))
    quiet_library_noise()
    os.environ.setdefault("WANDB_SILENT", "true")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric"):  # one fit per seed: keep quiet
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    space = load_space(config)
    storage = make_storage(storage_url, space)
    seed = None if os.environ.get("GANBENCH_SWEEP_SEED") is None else int(os.environ["GANBENCH_SWEEP_SEED"]) + index
    study = open_study(space, storage, study_name, seed)
    objective = Objective(space, study_name, Path(runs_root), extra_args,
                          artifact_dir=artifact_dir(storage_url, study_name, runs_root))
    if population_trials > 1:
        optimize_batches(study, objective, n_trials, population_trials)
    else:
        study.optimize(objective, n_trials=n_trials, catch=(), gc_after_trial=True)
    return 0


def ask_batch(study: optuna.Study, objective: Any, size: int, first: optuna.Trial | None = None,
              asked: Callable[[optuna.Trial], None] = lambda trial: None
              ) -> tuple[list[tuple[optuna.Trial, dict[str, Any], str]], optuna.Trial | None]:
    """Up to ``size`` new trials that can train as one population fit: ``first`` (else a new trial) is sampled
    as usual; the others are asked with the study's sampler wrapped in :class:`optuna.samplers.PartialFixedSampler`,
    which returns the first trial's values for the parameters the trials of a fit share (the factors and the
    structural nuisance, :attr:`SweepSpace.shared`) and lets the sampler draw every other parameter afresh.

    Why not ``study.enqueue_trial(shared)`` and ``study.ask()``: an enqueued trial is a WAITING trial in the
    shared storage, and any worker's next ``ask`` pops it, so with several workers one worker's partial trial
    would become another's. The wrapped sampler lives in this process only. Waiting trials exist all the same
    (the heartbeat's retry of a failed trial): one whose fixed parameters disagree with the batch's shared
    values ends the batch early and is returned, to lead the next batch. ``asked`` is called with every trial
    as soon as it exists."""
    def ask() -> optuna.Trial:
        with warnings.catch_warnings():  # (its heartbeat is started by the caller: ``asked``)
            warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
            trial = study.ask()
        asked(trial)
        return trial

    first = first if first is not None else ask()
    params, cell = objective.suggest(first)
    fixed = {key: params[key] for key in objective.space.shared}
    batch = [(first, params, cell)]
    base = study.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.PartialFixedSampler(fixed, base)
    try:
        while len(batch) < size:
            trial = ask()
            own = trial.storage.get_trial(trial._trial_id).system_attrs.get("fixed_params") or {}
            if any(key in own and own[key] != value for key, value in fixed.items()):
                return batch, trial
            batch.append((trial, *objective.suggest(trial)))
    finally:
        study.sampler = base
    return batch, None


def optimize_batches(study: optuna.Study, objective: Any, n_trials: int, k: int) -> None:
    """``n_trials`` trials in batches of ``k``, through Optuna's ask-and-tell interface.

    The trials of a batch (:func:`ask_batch`) train as one population fit (:meth:`Objective.run_batch`); each
    is then scored and told its own result exactly as if it had run alone (:meth:`Objective.finish`, the code
    every trial is scored with). A batch of one trial, and each trial of a batch whose fit the model refuses (an
    invalid cell, an option that cannot be batched), runs as without batching (:meth:`Objective.run_trial`,
    which records an invalid cell as PRUNED with the model's reason). Nothing is pruned inside a batch: its
    trials train as one fit, which no trial can stop alone; each trial's quality curve is reported as its
    intermediate values after the fit. As ``study.optimize`` does: stale trials are failed before each batch,
    every asked trial beats until it is told (storages with a heartbeat), and an exception fails every trial
    not yet told and ends the worker."""
    import gc
    import sys

    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled

    storage = study._storage
    beating: dict[int, tuple[optuna.Trial, Any]] = {}  # asked, not yet told

    def asked(trial: optuna.Trial) -> None:
        beat = get_heartbeat_thread(trial._trial_id, storage)
        beat.start()
        beating[trial._trial_id] = (trial, beat)

    def tell(trial: optuna.Trial, run: Callable[..., Any], *args: Any) -> None:
        try:
            values, state = run(trial, *args), None
        except optuna.TrialPruned:
            values, state = None, TrialState.PRUNED
        beating.pop(trial._trial_id)[1].join()
        study.tell(trial, values, state=state)

    done, carried = 0, None
    try:
        while done < n_trials:
            if is_heartbeat_enabled(storage):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
            batch, carried = ask_batch(study, objective, min(k, n_trials - done), carried, asked)
            results, refused = None, None
            if len(batch) > 1:
                try:
                    results = objective.run_batch(batch)
                except GanbenchError as err:
                    refused = err
            for i, (trial, params, cell) in enumerate(batch):
                if results is None:
                    tell(trial, objective.run_trial, params, cell)
                else:
                    record = {"batch": str(objective.batch_dir(batch[0][0].number).resolve()),
                              "replicas": [s.replica for s in results[i]]}
                    tell(trial, objective.finish, params, results[i], record)
            done += len(batch)
            gc.collect()
            if refused is not None and "invalid" not in storage.get_trial(batch[0][0]._trial_id).user_attrs:
                # a valid cell whose fit cannot be batched (convolutional networks, image metrics, ...); an
                # invalid cell's trials are recorded as such, and batching goes on with the next cell
                numbers = ", ".join(str(t.number) for t, _, _ in batch)
                print(f"ganbench: trials {numbers} cannot train as one population fit ({refused}); they ran on their "
                      f"own, and so do this worker's {n_trials - done} other trials", file=sys.stderr)
                if carried is not None:  # asked for the next batch: it runs on its own too
                    tell(carried, objective)
                    done += 1
                study.optimize(objective, n_trials=max(n_trials - done, 0), catch=(), gc_after_trial=True)
                return
    finally:  # an exception (or Ctrl-C): the trials not told fail, as study.optimize fails its trial
        for trial, beat in list(beating.values()):
            beat.join()
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def die_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """End this process when its parent ``parent`` dies, so a killed ``ganbench sweep`` leaves no worker
    running trials beyond its ``--n-trials``: Linux's parent-death signal (``PR_SET_PDEATHSIG``, SIGKILL)
    where available, and on every system a daemon thread that watches the parent id."""
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(128 + signal.SIGKILL)
            threading.Event().wait(poll_s)

    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(128 + signal.SIGKILL)
    threading.Thread(target=watch, name="ganbench-parent-watch", daemon=True).start()


def _spawned(parent: int, *args: Any) -> None:
    import sys

    die_with_parent(parent)
    try:
        worker(*args)
    except GanbenchError as err:
        print(f"ganbench: error: {err}", file=sys.stderr)
        sys.exit(2)


def batch_size(space: SweepSpace, k: int) -> tuple[int, str | None]:
    """The trials per population fit that ``--population-trials k`` gives with this space, and the one line
    saying what changes (None when nothing does): 1 when the family cannot be batched or the sweep file
    says ``population: false``; above 1, nothing is pruned inside a batch."""
    if k <= 1:
        return 1, None
    why = space.unbatchable or ("the sweep file says population: false" if not space.population else None)
    if why:
        return 1, f"--population-trials {k}: {why}, which cannot run as a population; every trial runs on its own"
    if space.prunes:
        return k, (f"--population-trials {k}: the {k} trials of a batch train as one fit, which no trial can stop "
                   f"alone: nothing is pruned; each trial's quality curve is reported to Optuna after its batch")
    return k, None


def run_sweep(config: str, storage_url: str | None, study_name: str | None, n_trials: int, workers: int,
              runs_root: str | None = None, threads: int | None = None, extra_args: list[str] | None = None,
              progress: bool = True, population_trials: int = 1) -> optuna.Study:
    """Validate, open the study, fail stale trials, and run the missing trials on ``workers`` processes
    (in population fits of ``population_trials`` trials each, :func:`optimize_batches`)."""
    import sys

    space = load_space(config)
    url = storage_url or default_storage(space)
    name = study_name or space.name
    if n_trials < 0 or workers < 1:
        raise GanbenchError(f"--n-trials must be >= 0 and --workers >= 1, got {n_trials} and {workers}")
    if population_trials < 1:
        raise GanbenchError(f"--population-trials must be >= 1, got {population_trials}")
    population_trials, note = batch_size(space, population_trials)
    if note:
        print(f"ganbench: {note}", file=sys.stderr)
    storage = make_storage(url, space)
    study = open_study(space, storage, name)
    if isinstance(storage, optuna.storages.RDBStorage) and space.heartbeat_interval > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    todo = max(0, n_trials - finished_count(study))
    runs_root = runs_root or str(Path("runs") / "sweeps")
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    shares = [s for s in split(todo, workers) if s > 0]
    stop = threading.Event()
    bar = threading.Thread(target=_progress, args=(study, n_trials, stop), daemon=True) if progress else None
    if bar is not None:
        bar.start()
    try:
        if len(shares) == 1:
            worker(config, url, name, shares[0], runs_root, 0, threads, extra_args, population_trials)
        elif shares:
            ctx = mp.get_context("spawn")
            procs = [ctx.Process(target=_spawned,
                                 args=(os.getpid(), config, url, name, share, runs_root, i, threads, extra_args,
                                       population_trials))
                     for i, share in enumerate(shares)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            bad = [p.exitcode for p in procs if p.exitcode]
            if bad:
                raise GanbenchError(f"{len(bad)} of {len(procs)} sweep workers failed (exit codes {bad}); "
                                    f"rerun the same command to resume study {name}")
    finally:
        stop.set()
        if bar is not None:
            bar.join()
    return study


def trial_line(t: optuna.trial.FrozenTrial, names: list[str] | None = None) -> str:
    """One line about a finished trial: state, objective values (or why it was skipped) and its cell."""
    a = t.user_attrs
    cell = a.get("cell", "")
    if "invalid" in a:
        return f"trial {t.number} skipped, invalid cell {cell}: {a['invalid']}"
    if t.state == TrialState.PRUNED:
        return f"trial {t.number} pruned at G iteration {a.get('pruned_at', '?')}: {cell}"
    if t.state == TrialState.COMPLETE and t.values is not None:
        labels = [n.split(":")[0] for n in names] if names else [f"value {i}" for i in range(len(t.values))]
        values = " ".join(f"{n}={v:.4g}" for n, v in zip(labels, t.values))
        return f"trial {t.number} complete: {values} diverged={a.get('diverged_frac', 0):.2g} " \
               f"collapsed={a.get('collapsed_frac', 0):.2g} {cell}"
    return f"trial {t.number} {t.state.name.lower()}: {cell}"


def eta(elapsed_s: float, done: int, todo: int) -> str:
    """Remaining time at the rate of the trials finished so far in this call (``?`` before the first)."""
    if done <= 0:
        return "?"
    left = round(elapsed_s / done * max(todo - done, 0))
    return f"{left // 3600}h{left % 3600 // 60:02d}m" if left >= 3600 else f"{left // 60}m{left % 60:02d}s"


def _progress(study: optuna.Study, total: int, stop: threading.Event) -> None:
    """Progress over finished trials, read from the storage every second: a rich bar with an ETA on a
    terminal (skipped invalid cells printed above it, once per cell); one line per finished trial with
    the count and ETA when stdout is a file or pipe."""
    import sys
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tty = sys.stdout.isatty()
    t0, seen, invalid_cells = time.perf_counter(), None, set()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[states]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"))
    with Progress(*columns, transient=False, disable=not tty) as bar:
        task = bar.add_task(f"study {study.study_name}", total=total, states="", eta="?")
        while True:
            done = stop.wait(1.0)
            try:
                trials = study.get_trials(deepcopy=False)
                names = study.metric_names
            except Exception:  # storage busy: try again next second
                continue
            finished = [t for t in trials if t.state in FINISHED]
            if seen is None:  # trials finished before this call: not reported again
                seen, start_count = {t.number for t in finished}, len(finished)
            new = [t for t in finished if t.number not in seen]
            seen.update(t.number for t in new)
            todo = max(total - start_count, 0)
            left = eta(time.perf_counter() - t0, len(finished) - start_count, todo)
            for t in sorted(new, key=lambda t: t.number):
                if tty:
                    cell = t.user_attrs.get("cell")
                    if "invalid" in t.user_attrs and cell not in invalid_cells:
                        invalid_cells.add(cell)
                        bar.console.print(trial_line(t, names), markup=False, highlight=False)
                else:
                    print(f"[{len(finished)}/{total}, ETA {left}] {trial_line(t, names)}", flush=True)
            counts: dict[str, int] = {}
            for t in trials:
                counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
            bar.update(task, completed=len(finished), eta=left,
                       states=" ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            if done:
                return

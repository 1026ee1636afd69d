"""Studies: storage, samplers, heartbeats, resumption and local worker processes.

Storage URLs:

* ``sqlite:///sweeps/NAME.db`` (default) and any SQLAlchemy URL (``postgresql://user@host/db``):
  :class:`optuna.storages.RDBStorage` with a heartbeat — a trial whose process stops beating for
  ``grace_period`` seconds (default 2 × ``heartbeat_interval``) is marked FAIL;
* ``journal:///path/to/study.log``: :class:`optuna.storages.JournalStorage` over a shared file
  (NFS), for many machines without a database server. Optuna's journal storage has no heartbeat,
  so a killed trial stays RUNNING there.

``--n-trials N`` is the number of finished (COMPLETE or PRUNED) trials the study should hold: a
call first re-enqueues the FAIL trials that measured nothing (:func:`ganbench.sweep.resume.enqueue_retries`:
interrupted, crashed, or failed by the heartbeat), whose fits resume from their checkpoints, and runs
``N - finished`` trials in all, shared by its ``--workers`` processes, so a stopped or killed study resumes
where it stopped (``load_if_exists``). Spawned workers die with the ``ganbench sweep`` process that
started them (:func:`die_with_parent`), so a killed sweep leaves nothing running that would add trials
beyond ``N`` once it is rerun; SIGTERM/SIGINT stop it in order (:class:`ganbench.sweep.resume.StopSignals`).

``--population-trials K`` (:func:`ganbench.sweep.loop.optimize_batches`): each worker asks Optuna for K trials
at a time that share the cell and the structural nuisance (:func:`ganbench.sweep.loop.ask_batch`), trains them
as one population fit and tells each trial its own result.
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
from ganbench.sweep.resume import STOP, OrdinalRandomSampler, resume_failed
from ganbench.sweep.space import SweepSpace, load_space

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

#: sampler name → factory(seed, n_objectives); random sampling keeps the per-cell distributions unbiased
SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "random": lambda seed: optuna.samplers.RandomSampler() if seed is None else OrdinalRandomSampler(seed),
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
                # a stale trial is failed; the next `ganbench sweep` retries it (enqueue_retries)
                kwargs = {"heartbeat_interval": space.heartbeat_interval, "grace_period": space.grace_period}
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


def storage_file(storage_url: str) -> Path | None:
    """The file of a SQLite or journal storage (None for a database server)."""
    for prefix in ("sqlite:///", "journal://"):
        if storage_url.startswith(prefix):
            return Path(storage_url[len(prefix):])
    return None


def worker_threads(workers: int) -> int:
    """Torch threads per worker when the sweep is not told: the cores shared out."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def artifact_dir(storage_url: str, study_name: str, runs_root: str | Path) -> Path:
    """Where a study's Optuna artifacts (trial pictures) go: next to a SQLite or journal file
    (``sweeps/NAME.db`` → ``sweeps/NAME.artifacts/``), else ``RUNS_ROOT/STUDY.artifacts`` (beside the
    study's trial folders); give optuna-dashboard the same folder (``--artifact-dir``)."""
    path = storage_file(storage_url)
    return path.with_name(path.stem + ".artifacts") if path else Path(runs_root) / f"{study_name}.artifacts"


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def worker(config: str, storage_url: str, study_name: str, budget: Any, runs_root: str, index: int,
           threads: int, extra_args: list[str] | None = None, population_trials: int = 1) -> int:
    """One sweep worker: load the study and run trials while ``budget`` (an object with a ``value``: the trials
    this sweep call still starts, :class:`ganbench.sweep.loop.Budget`) lasts, in batches of ``population_trials``
    when that is above 1 (a spawned process or the caller). Returns 0, or 128 + the signal that stopped it."""
    import torch

    from ganbench.callbacks.log import quiet_library_noise
    from ganbench.sweep.loop import Budget, optimize_batches
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
    seed = None if os.environ.get("GANBENCH_SWEEP_SEED") is None else int(os.environ["GANBENCH_SWEEP_SEED"])
    if seed is not None and space.sampler != "random":  # random draws depend on the trial, not on the worker
        seed += index
    study = open_study(space, storage, study_name, seed)
    objective = Objective(space, study_name, Path(runs_root), extra_args,
                          artifact_dir=artifact_dir(storage_url, study_name, runs_root))
    optimize_batches(study, objective, Budget(budget), population_trials)
    return STOP.exit_code if STOP.stopped else 0


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
    STOP.install()
    try:
        code = worker(*args)
    except GanbenchError as err:
        print(f"ganbench: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


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
    """Validate, open the study, fail stale trials, enqueue the retries of trials that measured nothing, and run
    the missing trials on ``workers`` processes (in population fits of ``population_trials`` trials each,
    :func:`ganbench.sweep.loop.optimize_batches`). A SIGTERM/SIGINT stops it (:data:`ganbench.sweep.resume.STOP`):
    :class:`ganbench.sweep.resume.SweepStopped` is raised once every worker has recorded its trials."""
    import sys
    from types import SimpleNamespace

    from ganbench.sweep.resume import SweepStopped

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
    resume_failed(study, space.max_retry)
    todo = max(0, n_trials - finished_count(study))
    runs_root = runs_root or str(Path("runs") / "sweeps")
    threads = threads or worker_threads(workers)
    n_procs = min(workers, todo)
    stop = threading.Event()
    bar = threading.Thread(target=_progress, args=(study, n_trials, stop), daemon=True) if progress else None
    if bar is not None:
        bar.start()
    procs: list[Any] = []
    STOP.forward_to = lambda: [p.pid for p in procs if p.pid is not None and p.exitcode is None]
    STOP.install(announce=True)
    try:
        if n_procs == 1:
            worker(config, url, name, SimpleNamespace(value=todo), runs_root, 0, threads, extra_args,
                   population_trials)
        elif n_procs:
            ctx = mp.get_context("spawn")
            budget = ctx.Value("i", todo)
            procs += [ctx.Process(target=_spawned, args=(os.getpid(), config, url, name, budget, runs_root, i,
                                                         threads, extra_args, population_trials))
                      for i in range(n_procs)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            bad = [p.exitcode for p in procs if p.exitcode]
            if bad and not STOP.stopped:
                raise GanbenchError(f"{len(bad)} of {len(procs)} sweep workers failed (exit codes {bad}); "
                                    f"rerun the same command to resume study {name}")
    finally:
        STOP.restore()
        STOP.forward_to = lambda: []
        stop.set()
        if bar is not None:
            bar.join()
    if STOP.stopped:
        raise SweepStopped(STOP.exit_code, name)
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

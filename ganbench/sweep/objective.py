"""One Optuna trial = one ordinary ``ganbench fit`` per seed, then the trial's quality and stability.

Each seed runs through :func:`ganbench.cli.main` in this process — the same code path as a user's
``ganbench fit`` — with the trial's overrides, ``--trainer.default_root_dir <study>/trial_NNNNN/seed_S``,
``--seed_everything S``, ``--run.wandb_group <study>`` and ``--run.wandb_tags`` naming the cell and
seed. The fit's metric callbacks (``--run.metrics_every``) write the protocol'd metrics into
``metrics.csv`` and ``summary.json``; nothing is re-measured here.

A trial's seeds may instead be replicas of one population fit: its own (:meth:`Objective.run_population`,
``trial_NNNNN/seeds_<first>-<last>/``) or one shared with the other trials of its batch
(``ganbench sweep --population-trials K``, :meth:`Objective.run_batch`, ``batch_<first trial>/``). Either
way each seed is read from its replica's record and the trial is scored by the same code
(:meth:`Objective.finish`).

Per trial (Lucic et al. 2018 §4; Kurach et al. 2019 §3), stored as Optuna user attributes and in
``trial_NNNNN/summary.json``:

* ``quality``: median over seeds of the final quality metric; a diverged seed (summary.json status
  ``diverged``, exit code 3) counts as the configured ``worst`` value;
* ``diverged_frac``: fraction of seeds that diverged;
* ``collapsed_frac``: fraction of seeds whose final ``collapse.metric`` (``val/modes_covered_2k`` on
  toys) is ``<= collapse.at_most`` (1 mode); a diverged seed counts as collapsed;
* ``instability``: fraction of seeds that diverged or collapsed;
* ``spread``: population standard deviation of the final quality over the seeds that did not diverge
  (0 with fewer than two);
* ``oscillation``: mean over non-diverged seeds of the population standard deviation of the quality
  metric over the last ``oscillation_window`` evaluations in ``metrics.csv`` — late-training
  oscillation that a final value hides.

In W&B (:meth:`Objective.publish`), once the trial's last seed has finished, every seed's run carries these
as ``trial/<attribute>`` in its summary beside the seed's own verdict (:class:`SeedVerdict`), and each seed of
a population fit gets a W&B run of its own, written from its replica's record (:meth:`Objective.replica_run`).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from optuna_integration import PyTorchLightningPruningCallback

from ganbench import GanbenchError
from ganbench.callbacks.log import add_to_wandb_summary, wandb_run_folder
from ganbench.sweep.outcome import (
    SeedResult,
    SeedVerdict,
    aggregate,
    collapsed,
    metric_steps,
    replica_rows,
    seed_result,
)
from ganbench.sweep.resume import MEASURED, NotMeasured, root_number, run_fit
from ganbench.sweep.space import SweepSpace, short

#: the trial whose fit is running in this process (read by :class:`TrialPruning`)
_CURRENT: dict[str, Any] = {"trial": None}

#: fit options every trial adds: no per-step console output inside a sweep; the sweep's stop request (SweepStop)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         '--trainer.callbacks+={"class_path": "ganbench.sweep.resume.SweepStop"}']


class TrialPruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, reporting at metric evaluations instead of epochs.

    ganbench's metric callbacks evaluate every ``every_n_steps`` G iterations inside the training
    loop (there is no validation loop), so the value of ``monitor`` logged at G iteration ``s`` is
    reported to the trial as step ``s`` at the start of the next G iteration. When the pruner says
    so, training stops (``trainer.should_stop``) and the sweep records the trial as PRUNED; the run
    directory keeps its summary.json. The trial is taken from the sweep worker running this fit,
    so the callback can be given on the command line
    (``--trainer.callbacks+={"class_path": "ganbench.sweep.objective.TrialPruning", ...}``).
    """

    def __init__(self, monitor: str, every_n_steps: int):
        if _CURRENT["trial"] is None:
            raise GanbenchError("TrialPruning runs only inside `ganbench sweep` (no Optuna trial is active)")
        super().__init__(_CURRENT["trial"], monitor)
        self.every_n_steps = every_n_steps
        self.pruned_at: int | None = None
        self._reported: set[int] = set()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Metrics are not produced by a validation loop in ganbench; see :meth:`on_train_batch_start`."""

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step <= 0 or step % self.every_n_steps or step in self._reported:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        self._reported.add(step)
        value = float(value)
        self._trial.report(value if math.isfinite(value) else float("nan"), step=step)
        if self._trial.should_prune():
            self.pruned_at = step
            trainer.should_stop = True


class Objective:
    """Runs the seeds of one trial through ``ganbench fit`` (callable as ``study.optimize``'s objective; the sweep's
    worker loop, :func:`ganbench.sweep.loop.optimize_batches`, calls :meth:`run_trial`/:meth:`run_batch`).

    Returns the trial's objective values (:meth:`TrialResult.objective_values`, one float for a
    single-objective study). Per seed, :func:`seed_result` reads the fit's ``summary.json`` and
    ``metrics.csv``; :func:`aggregate` turns the seeds into the trial's result.
    """

    def __init__(self, space: SweepSpace, study_name: str, runs_root: Path, extra_args: list[str] | None = None,
                 artifact_dir: Path | None = None):
        self.space, self.study_name, self.runs_root = space, study_name, Path(runs_root)
        self.extra_args = list(extra_args or [])
        self.artifact_dir = artifact_dir

    def trial_dir(self, number: int) -> Path:
        return self.runs_root / self.study_name / f"trial_{number:05d}"

    def batch_dir(self, first: int) -> Path:
        """The population fit of a batch of trials (``--population-trials``), named by its first trial."""
        return self.runs_root / self.study_name / f"batch_{first:05d}"

    def pruning_args(self) -> list[str]:
        s = self.space
        if not s.prunes:
            return []
        spec = {"class_path": f"{__name__}.TrialPruning",
                "init_args": {"monitor": s.quality.metric, "every_n_steps": s.metrics_every}}
        return [f"--trainer.callbacks+={json.dumps(spec)}"]

    def wandb_args(self, trial: optuna.Trial, params: dict[str, Any], cell: str, seed: int | str,
                   verdict: bool = True) -> list[str]:
        """Run name ``<study>-t<trial>-s<seed>``; trial, cell, factors and nuisance at the top of its config;
        the seed's verdict (:class:`SeedVerdict`) in its summary."""
        s = self.space
        config = self.sweep_keys(root_number(trial), params, cell)  # seed: seed_everything
        spec = {"class_path": f"{SeedVerdict.__module__}.SeedVerdict",
                   "init_args": {"metric": s.quality.metric, "direction": s.quality.direction, "worst": s.quality.worst,
                                 **({"collapse_metric": s.collapse["metric"], "at_most": s.collapse["at_most"]}
                                    if s.collapse else {})}}
        args = ["--run.wandb_name", f"{self.study_name}-t{root_number(trial)}-s{seed}",
                "--run.wandb_config", json.dumps(config)]
        # (a population's run has no one-seed verdict: each seed gets a run of its own after the fit, replica_run)
        return args + ([f"--trainer.callbacks+={json.dumps(spec)}"] if verdict else [])

    def sweep_keys(self, trial: int, params: dict[str, Any], cell: str) -> dict[str, Any]:
        """The sweep's keys at the top of a seed's W&B config: study, trial, cell, factors, nuisance."""
        s = self.space
        return {"study": self.study_name, "trial": trial, "cell": cell, **{short(k): params[k] for k in s.factors},
                **{n: params[n] for n in s.nuisance}}

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...] | float:
        params, cell = self.suggest(trial)
        return self.run_trial(trial, params, cell)

    def suggest(self, trial: optuna.Trial) -> tuple[dict[str, Any], str]:
        """Sample the trial's parameters; its cell's label (``loss=hinge d_norm=spectral``) is attribute ``cell``."""
        params = self.space.suggest(trial)
        cell = " ".join(self.tags(params))
        trial.set_user_attr("cell", cell)
        return params, cell

    def tags(self, params: dict[str, Any]) -> list[str]:
        return [f"{short(k)}={params[k]}" for k in self.space.factors]

    def run_trial(self, trial: optuna.Trial, params: dict[str, Any], cell: str) -> tuple[float, ...] | float:
        """One trial on its own: its seeds as one population fit, else one fit per seed (a retry: in the
        folder of the trial it retries, each fit read back or resumed, :func:`run_fit`)."""
        space = self.space
        tags = self.tags(params)
        out = self.trial_dir(root_number(trial))
        seeds = self.run_population(trial, params, cell, out)
        if seeds is None:  # one fit per seed
            seeds = []
            for i, seed in enumerate(space.seeds):
                run_dir = out / f"seed_{seed}"
                pruning = self.pruning_args() if i == 0 else []
                argv = space.fit_argv(params, seed, run_dir, self.study_name, [*tags, f"seed={seed}"],
                                      [*QUIET, *pruning, *self.wandb_args(trial, params, cell, seed),
                                       *self.extra_args])
                _CURRENT["trial"] = trial
                try:
                    (code, error), rejected = run_fit(argv, run_dir), None
                except GanbenchError as err:
                    code, error, rejected = 2, None, err
                finally:
                    _CURRENT["trial"] = None
                if code == 2:  # the model or data refused this combination: a recorded, skipped trial
                    reason = str(rejected or "rejected by ganbench fit")
                    trial.set_user_attr("invalid", reason)
                    _write_trial_summary(out, {"state": "PRUNED", "params": params, "invalid": reason})
                    raise optuna.TrialPruned(reason)
                seeds.append(seed_result(space, seed, code, run_dir, error=error))
                self.record_runs(trial, seeds)
                if i == 0 and pruning:
                    step = _pruned_step(trial)
                    if step is not None:
                        trial.set_user_attr("pruned_at", step)
                        _write_trial_summary(out, {"state": "PRUNED", "params": params, "pruned_at": step})
                        raise optuna.TrialPruned(f"pruned at G iteration {step}")
        return self.finish(trial, params, seeds)

    def finish(self, trial: optuna.Trial, params: dict[str, Any], seeds: list[SeedResult],
               record: dict[str, Any] | None = None) -> tuple[float, ...] | float:
        """Score a trial from its seeds' results, whichever fit they came from: user attributes, intermediate
        values, W&B, ``trial_NNNNN/summary.json`` (with ``record`` added); returns its objective values."""
        space = self.space
        trial.set_user_attr("seed_status", [s.status for s in seeds])
        missing = [s for s in seeds if s.status not in MEASURED]
        if missing:  # never scored: the trial FAILs and a rerun of the sweep retries it
            raise NotMeasured(missing[0].status, missing[0].error or "")
        result = aggregate(space, seeds)
        attrs = {k: v for k, v in asdict(result).items() if k != "seeds"}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("seed_quality", [s.quality for s in seeds])
        trial.set_user_attr("seed_diverged_reason", [s.reason or "" for s in seeds])
        trial.set_user_attr("diverged", result.diverged_frac > 0)
        self.report_history(trial, seeds[0])
        self.publish(trial, seeds, attrs)
        _write_trial_summary(self.trial_dir(root_number(trial)),
                             {"state": "COMPLETE", "params": params, **(record or {}), **asdict(result)})
        values = result.objective_values(space.objectives)
        return values[0] if len(values) == 1 else values

    def record_failure(self, trial: optuna.Trial, err: NotMeasured) -> None:
        """A trial that measured nothing: why (``not_measured``: the first such seed's status) and its error line
        (``error``) in its user attributes and in ``trial_NNNNN/summary.json``; Optuna records it as FAIL."""
        trial.set_user_attr("not_measured", err.status)
        trial.set_user_attr("error", err.error)
        _write_trial_summary(self.trial_dir(root_number(trial)), {"state": "FAIL", "params": trial.params,
                                                                 "not_measured": err.status, "error": err.error})

    def run_population(self, trial: optuna.Trial, params: dict[str, Any], cell: str,
                       out: Path) -> list[SeedResult] | None:
        """The trial's seeds as one population fit (``model.init_args.population``; replica r is the
        fit with seed ``seeds[0] + r``), when the study allows it and its seeds are consecutive.
        None when they run one fit each: the family (or an option) cannot be batched, the study
        prunes (the pruner follows one fit), or ``population: false`` in the sweep file."""
        space = self.space
        seeds = list(space.seeds)
        if (not space.population or len(seeds) < 2 or seeds != list(range(seeds[0], seeds[0] + len(seeds)))
                or self.pruning_args()):
            return None
        run_dir = out / f"seeds_{seeds[0]}-{seeds[-1]}"
        name = f"{seeds[0]}-{seeds[-1]}"
        argv = space.fit_argv(params, seeds[0], run_dir, self.study_name, [*cell.split(), f"seeds={name}"],
                              [*QUIET, "--model.init_args.population", str(len(seeds)),
                               *self.wandb_args(trial, params, cell, name, verdict=False), *self.extra_args])
        try:
            code, error = run_fit(argv, run_dir)
        except GanbenchError:
            code, error = 2, None
        if code == 2:  # not batchable, or an invalid cell: the seeds run one by one and the first says which
            return None
        results = [seed_result(space, seed, code, run_dir, replica=r, error=error) for r, seed in enumerate(seeds)]
        self.record_runs(trial, results)
        return results

    def run_batch(self, batch: list[tuple[optuna.Trial, dict[str, Any], str]]) -> list[list[SeedResult]]:
        """Several trials as ONE population fit (``ganbench sweep --population-trials K``): trial k's seed i is
        replica ``k·S + i`` (S seeds), with seed ``seeds[i]`` (``model.init_args.population_seeds``) and
        trial k's per-replica nuisance values (``model.init_args.population_overrides``,
        :meth:`SweepSpace.replica_overrides`). The trials share the cell and the structural nuisance
        (:attr:`SweepSpace.shared`), which the fit takes from the first trial. The fit runs in
        ``batch_<first trial>/`` with ``batch.json`` mapping each trial to its replicas; each trial's seeds
        are read as :meth:`run_population` reads them. A fit the model refuses (an invalid cell, a family or
        option that cannot be batched) raises its :class:`GanbenchError`, and nothing is recorded. Trials are
        named by :func:`root_number`, so a retried batch is the same fit, resumed; a member given as a
        FrozenTrial (finished before the retry) trains again and is not recorded."""
        from ganbench.callbacks import write_json_atomic

        space = self.space
        seeds = list(space.seeds)
        first, params, cell = batch[0]
        shared = {k: params[k] for k in space.shared}
        for trial, other, _ in batch[1:]:
            if any(other[k] != v for k, v in shared.items()):
                raise ValueError(f"trial {trial.number} differs from trial {first.number} in a parameter the "
                                 f"trials of a population fit share ({', '.join(space.shared)})")
        numbers = [root_number(t) for t, _, _ in batch]
        label, seed_label = "+".join(map(str, numbers)), _span(seeds)
        run_dir = self.batch_dir(numbers[0])
        overrides = [space.replica_overrides(p) for _, p, _ in batch]
        config = {"study": self.study_name, "trials": numbers, "cell": cell,
                  **{short(k): params[k] for k in space.factors}, **{n: params[n] for n in space.structural}}
        argv = space.fit_argv(params, seeds[0], run_dir, self.study_name,
                              [*self.tags(params), f"trials={label}", f"seeds={seed_label}"],
                              [*QUIET, "--model.init_args.population", str(len(batch) * len(seeds)),
                               "--model.init_args.population_seeds", json.dumps(seeds * len(batch)),
                               "--model.init_args.population_overrides",
                               json.dumps([o for o in overrides for _ in seeds]),
                               "--run.wandb_name", f"{self.study_name}-t{label}-s{seed_label}",
                               "--run.wandb_config", json.dumps(config), *self.extra_args])
        code, error = run_fit(argv, run_dir)  # a refusal raises GanbenchError
        if code == 2:
            raise GanbenchError("rejected by ganbench fit")
        replicas = [list(range(k * len(seeds), (k + 1) * len(seeds))) for k in range(len(batch))]
        write_json_atomic(run_dir / "batch.json", {
            "trials": numbers, "seeds": seeds, "shared": shared,
            "replicas": {str(n): r for n, r in zip(numbers, replicas)},
            "population_overrides": {str(n): o for n, o in zip(numbers, overrides)}})
        results = []
        for (trial, _, _), mine in zip(batch, replicas):
            seeds_of_trial = [seed_result(space, seed, code, run_dir, replica=r, error=error)
                              for seed, r in zip(seeds, mine)]
            if isinstance(trial, optuna.Trial):
                self.record_runs(trial, seeds_of_trial)
            results.append(seeds_of_trial)
        return results

    def record_runs(self, trial: optuna.Trial, seeds: list[SeedResult]) -> None:
        """Links out of the trial: run directories, W&B run ids, and the last picture of the newest seed
        as an Optuna artifact (the dashboard shows it)."""
        trial.set_user_attr("run_dirs", [str(Path(s.run_dir).resolve()) for s in seeds])
        ids = [i for s in seeds if (i := wandb_run_id(Path(s.run_dir)))]
        trial.set_user_attr("wandb_run_ids", list(dict.fromkeys(ids)))  # a population's seeds share one fit
        picture = final_picture(Path(seeds[-1].run_dir), seeds[-1].replica)
        if self.artifact_dir is not None and picture is not None:
            from optuna.artifacts import FileSystemArtifactStore, upload_artifact

            self.artifact_dir.mkdir(parents=True, exist_ok=True)
            upload_artifact(artifact_store=FileSystemArtifactStore(str(self.artifact_dir)), file_path=str(picture),
                            study_or_trial=trial, mimetype="image/png")

    def publish(self, trial: optuna.Trial, seeds: list[SeedResult], result: dict[str, Any]) -> None:
        """W&B, once the trial's last seed has finished: every seed's run gets the trial's result in its
        summary as ``trial/<attribute>`` (``trial/quality``, ``trial/diverged_frac``, ``trial/collapsed_frac``,
        …: the trial's user attributes of the same names) through :func:`add_to_wandb_summary`, and each seed
        of a population fit gets a run of its own (:meth:`replica_run`); ``wandb_run_ids`` then names the
        seeds' runs. W&B is a view of the trial: a run that cannot be written is one warning line, and the
        trial keeps its result."""
        values = {f"trial/{k}": v for k, v in result.items()}
        ids = []
        for s in seeds:
            try:
                run_id = (add_to_wandb_summary(Path(s.run_dir), values) if s.replica is None
                          else self.replica_run(trial, s, values))
            except Exception as err:  # a W&B server that cannot be reached, a full disk
                print(f"ganbench: warning: trial {trial.number} seed {s.seed}: its W&B run does not carry the "
                      f"trial's result ({type(err).__name__}: {err})", file=sys.stderr)
                run_id = wandb_run_id(Path(s.run_dir)) if s.replica is None else None
            if run_id:
                ids.append(run_id)
        trial.set_user_attr("wandb_run_ids", ids)

    def replica_run(self, trial: optuna.Trial, seed: SeedResult, result: dict[str, Any]) -> str | None:
        """One W&B run for one seed of a population fit, written from the fit's record after the trial:
        named ``<study>-t<trial>-s<seed>`` and tagged ``seed=<seed>`` as the seed's own fit would be; its
        config the fit's config.yaml with ``seed_everything`` = the seed, ``replica`` = its index and the
        sweep's keys (study, trial, cell, factors, nuisance) at the top; its history the replica's
        ``…/r<k>`` columns of metrics.csv under their plain keys (:func:`replica_rows`) up to its last G
        iteration, keyed by ``trainer/global_step`` as Lightning keys a fit's rows; its summary the
        replica's ``status`` and ``g_steps`` (summary.json ``replicas``), the seed's verdict (``quality``,
        ``initial_quality``, ``diverged``, ``diverged_reason``, ``collapsed``: what :class:`SeedVerdict`
        writes for a seed's own fit) and ``result``. It lies in ``<population run>/seed_<seed>/wandb/``,
        offline when the population's own run is; there is none when that fit logged no W&B run."""
        import wandb
        import yaml

        run_dir = Path(seed.run_dir)
        fit_run = wandb_run_folder(run_dir)
        if fit_run is None or seed.replica is None:
            return None
        entries = json.loads((run_dir / "summary.json").read_text()).get("replicas") or []
        entry = entries[seed.replica] if seed.replica < len(entries) else {}
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        opts = dict(config.get("run") or {})
        name = f"{self.study_name}-t{root_number(trial)}-s{seed.seed}"
        tags = [t for t in opts.get("wandb_tags") or [] if not t.startswith(("seeds=", "trials="))] + \
            [f"seed={seed.seed}"]
        config["seed_everything"], config["run"] = seed.seed, {**opts, "wandb_name": name, "wandb_tags": tags}
        config.update(opts.get("wandb_config") or {})  # as ConfigToLoggers does for a fit
        config.pop("trials", None)  # a batch's fit: this seed's own trial, its own nuisance values
        cell = trial.user_attrs.get("cell", config.get("cell"))
        config.update(self.sweep_keys(root_number(trial), trial.params, cell))
        for path, nuisance, _ in self.space.replica_bind:
            _set_existing(config, path, trial.params[nuisance])
        config["replica"] = seed.replica
        summary = {"status": entry.get("status", seed.status), "g_steps": entry.get("g_steps"),
                   "quality": seed.quality, "initial_quality": seed.initial, "diverged": seed.reason is not None,
                   "diverged_reason": seed.reason or "", "collapsed": collapsed(self.space, seed), **result}
        several = len(entries) > len(self.space.seeds)  # a batch of trials: seeds repeat across its trials
        out = run_dir / (f"t{root_number(trial)}-s{seed.seed}" if several else f"seed_{seed.seed}")
        out.mkdir(parents=True, exist_ok=True)
        with wandb.init(project=opts.get("wandb_project"), group=opts.get("wandb_group"), name=name, tags=tags,
                        config=config, dir=str(out), mode="offline" if fit_run.name.startswith("offline-") else None,
                        settings=wandb.Settings(console="off", x_disable_stats=True, save_code=False)) as run:
            run.define_metric("trainer/global_step")
            run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
            for step, row in replica_rows(run_dir, seed.replica, last=entry.get("g_steps")):
                run.log({**row, "trainer/global_step": step})
            run.summary.update(summary)
            return run.id

    def report_history(self, trial: optuna.Trial, seed: SeedResult) -> None:
        """Single-objective studies: the first seed's quality curve as intermediate values, when pruning
        did not already report it while the fit ran."""
        if len(self.space.objectives) != 1 or seed.status != "completed":
            return
        reported = trial.storage.get_trial(trial._trial_id).intermediate_values
        suffix = "" if seed.replica is None else f"/r{seed.replica}"
        for step, value in metric_steps(Path(seed.run_dir), self.space.quality.metric + suffix):
            if step > 0 and step not in reported:
                trial.report(value, step=step)


def wandb_run_id(run_dir: Path) -> str | None:
    """The id of the W&B run a fit wrote under ``<run>/wandb/`` (``[offline-]run-<time>-<id>``)."""
    folder = wandb_run_folder(run_dir)
    return folder.name.rsplit("-", 1)[1] if folder else None


def final_picture(run_dir: Path, replica: int | None = None) -> Path | None:
    """The last toy scatter (real and generated points; a population's replica: its own) or else the last
    sample grid of a run."""
    patterns = ([f"r{replica}/toy_step_*.png"] if replica is not None else []) + ["toy_step_*.png", "step_*.png"]
    for pattern in patterns:
        pictures = sorted((run_dir / "samples").glob(pattern))
        if pictures:
            return pictures[-1]
    return None


def _span(seeds: list[int]) -> str:
    """``0-2`` for consecutive seeds, ``0+5+9`` otherwise, ``3`` for one."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return "+".join(map(str, seeds))


def _set_existing(config: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    """Set ``config[path]`` when every container on the way exists (a fit's config holds what it was given)."""
    node: Any = config
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node)):
        node[path[-1]] = value


def _pruned_step(trial: optuna.Trial) -> int | None:
    """The G iteration at which the pruner stopped the first seed's fit, if it did."""
    if not trial.should_prune():
        return None
    steps = trial.storage.get_trial(trial._trial_id).intermediate_values
    return max(steps) if steps else 0


def _write_trial_summary(out: Path, data: dict[str, Any]) -> None:
    from ganbench.callbacks import write_json_atomic

    write_json_atomic(out / "summary.json", data)

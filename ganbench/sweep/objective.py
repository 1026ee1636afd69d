"""One Optuna trial = one ordinary ``ganbench fit`` per seed, then the trial's quality and stability.

Each seed runs through :func:`ganbench.cli.main` in this process — the same code path as a user's
``ganbench fit`` — with the trial's overrides, ``--trainer.default_root_dir <study>/trial_NNNNN/seed_S``,
``--seed_everything S``, ``--run.wandb_group <study>`` and ``--run.wandb_tags`` naming the cell and
seed. The fit's metric callbacks (``--run.metrics_every``) write the protocol'd metrics into
``metrics.csv`` and ``summary.json``; nothing is re-measured here.

Per trial (Lucic et al. 2018 §4; Kurach et al. 2019 §3), stored as Optuna user attributes and in
``trial_NNNNN/summary.json``:

* ``quality``: median over seeds of the final quality metric; a diverged seed (summary.json status
  ``diverged``, exit code 3) counts as the configured ``worst`` value;
* ``diverged_frac``: fraction of seeds that diverged;
* ``collapsed_frac``: fraction of seeds whose final ``collapse.metric`` (``val/modes_covered`` on
  toys) is ``<= collapse.at_most`` (1 mode); a diverged seed counts as collapsed;
* ``instability``: fraction of seeds that diverged or collapsed;
* ``spread``: population standard deviation of the final quality over the seeds that did not diverge
  (0 with fewer than two);
* ``oscillation``: mean over non-diverged seeds of the population standard deviation of the quality
  metric over the last ``oscillation_window`` evaluations in ``metrics.csv`` — late-training
  oscillation that a final value hides.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna_integration import PyTorchLightningPruningCallback

from ganbench import GanbenchError
from ganbench.sweep.space import SweepSpace, short

#: the trial whose fit is running in this process (read by :class:`TrialPruning`)
_CURRENT: dict[str, Any] = {"trial": None}

#: fit options every trial adds: no per-step console output inside a sweep
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


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


@dataclass
class SeedResult:
    seed: int
    status: str
    exit_code: int
    quality: float
    collapse_value: float | None
    history: list[float]
    run_dir: str


@dataclass
class TrialResult:
    quality: float
    diverged_frac: float
    collapsed_frac: float
    instability: float
    spread: float
    oscillation: float
    seeds: list[SeedResult]

    def objective_values(self, names: tuple[str, ...]) -> tuple[float, ...]:
        return tuple(getattr(self, n) for n in names)


def metric_history(run_dir: Path, key: str) -> list[float]:
    """Values of ``key`` in ``<run>/metrics.csv`` in step order (rows without it skipped)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get(key) not in (None, "")]
    rows.sort(key=lambda r: int(r["step"]))
    return [float(r[key]) for r in rows]


def pstdev(values: list[float]) -> float:
    """Population standard deviation, 0 for fewer than two values."""
    return statistics.pstdev(values) if len(values) >= 2 else 0.0


def seed_result(space: SweepSpace, seed: int, code: int, run_dir: Path) -> SeedResult:
    """Read one finished fit: a diverged or unreadable run gets the worst quality, never an error."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"status": "missing"}
    status = "diverged" if code == 3 else summary.get("status", "missing")
    metrics = summary.get("metrics") or {}
    value = metrics.get(space.quality.metric)
    ok = status == "completed" and isinstance(value, (int, float)) and math.isfinite(value)
    collapse_value = None
    if space.collapse is not None:
        c = metrics.get(space.collapse["metric"])
        collapse_value = float(c) if isinstance(c, (int, float)) and status != "diverged" else None
    return SeedResult(seed=seed, status=status if ok or status != "completed" else "no_metric", exit_code=code,
                      quality=float(value) if ok else space.quality.worst, collapse_value=collapse_value,
                      history=metric_history(run_dir, space.quality.metric) if ok else [], run_dir=str(run_dir))


def aggregate(space: SweepSpace, seeds: list[SeedResult]) -> TrialResult:
    """Quality and stability of one trial from its seeds (definitions in the module docstring)."""
    n = len(seeds)
    diverged = [s.status != "completed" for s in seeds]
    collapsed = [d or (space.collapse is not None and (s.collapse_value is None
                                                       or s.collapse_value <= space.collapse["at_most"]))
                 for s, d in zip(seeds, diverged)]
    alive = [s for s, d in zip(seeds, diverged) if not d]
    window = space.oscillation_window
    osc = [pstdev(s.history[-window:]) for s in alive]
    return TrialResult(
        quality=float(statistics.median(s.quality for s in seeds)),
        diverged_frac=sum(diverged) / n,
        collapsed_frac=sum(collapsed) / n,
        instability=sum(c or d for c, d in zip(collapsed, diverged)) / n,
        spread=pstdev([s.quality for s in alive]),
        oscillation=float(statistics.fmean(osc)) if osc else 0.0,
        seeds=seeds,
    )


class Objective:
    """The callable given to ``study.optimize``: runs the seeds of one trial through ``ganbench fit``."""

    def __init__(self, space: SweepSpace, study_name: str, runs_root: Path, extra_args: list[str] | None = None):
        self.space, self.study_name, self.runs_root = space, study_name, Path(runs_root)
        self.extra_args = list(extra_args or [])

    def trial_dir(self, number: int) -> Path:
        return self.runs_root / self.study_name / f"trial_{number:05d}"

    def pruning_args(self) -> list[str]:
        s = self.space
        if not (s.prune and s.metrics_every and len(s.objectives) == 1):
            return []  # Optuna prunes single-objective studies only
        spec = {"class_path": f"{__name__}.TrialPruning",
                "init_args": {"monitor": s.quality.metric, "every_n_steps": s.metrics_every}}
        return [f"--trainer.callbacks+={json.dumps(spec)}"]

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...] | float:
        from ganbench.cli import run

        space = self.space
        params = space.suggest(trial)
        tags = [f"{short(k)}={params[k]}" for k in space.factors]
        trial.set_user_attr("cell", " ".join(tags))
        out = self.trial_dir(trial.number)
        seeds: list[SeedResult] = []
        for i, seed in enumerate(space.seeds):
            run_dir = out / f"seed_{seed}"
            pruning = self.pruning_args() if i == 0 else []
            argv = space.fit_argv(params, seed, run_dir, self.study_name, [*tags, f"seed={seed}"],
                                  [*QUIET, *pruning, *self.extra_args])
            _CURRENT["trial"] = trial
            try:
                code = run(argv)
            except GanbenchError as err:  # the model or data refused this combination: a recorded, skipped trial
                reason = str(err)
                print(f"ganbench: error: {reason}", file=sys.stderr)
                trial.set_user_attr("invalid", reason)
                _write_trial_summary(out, {"state": "PRUNED", "params": params, "invalid": reason})
                raise optuna.TrialPruned(reason) from None
            finally:
                _CURRENT["trial"] = None
            seeds.append(seed_result(space, seed, code, run_dir))
            if i == 0 and pruning:
                step = _pruned_step(trial)
                if step is not None:
                    trial.set_user_attr("pruned_at", step)
                    _write_trial_summary(out, {"state": "PRUNED", "params": params, "pruned_at": step})
                    raise optuna.TrialPruned(f"pruned at G iteration {step}")
        result = aggregate(space, seeds)
        attrs = {k: v for k, v in asdict(result).items() if k != "seeds"}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("seed_status", [s.status for s in seeds])
        trial.set_user_attr("seed_quality", [s.quality for s in seeds])
        trial.set_user_attr("diverged", result.diverged_frac > 0)
        _write_trial_summary(out, {"state": "COMPLETE", "params": params, **asdict(result)})
        values = result.objective_values(space.objectives)
        return values[0] if len(values) == 1 else values


def _pruned_step(trial: optuna.Trial) -> int | None:
    """The G iteration at which the pruner stopped the first seed's fit, if it did."""
    if not trial.should_prune():
        return None
    steps = trial.storage.get_trial(trial._trial_id).intermediate_values
    return max(steps) if steps else 0


def _write_trial_summary(out: Path, data: dict[str, Any]) -> None:
    from ganbench.callbacks import write_json_atomic

    write_json_atomic(out / "summary.json", data)

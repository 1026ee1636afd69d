"""What a seed and a trial scored: a seed's final quality, divergence and collapse read from its run's
``metrics.csv`` and ``summary.json`` (or its replica's record in a population fit), and a trial's aggregate
over its seeds (:mod:`ganbench.sweep.objective` runs the fits; the attributes are listed there)."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from ganbench.reliability import EXIT_INTERRUPTED
from ganbench.sweep.resume import EXIT_CRASHED, MEASURED
from ganbench.sweep.space import Quality, SweepSpace


class SeedVerdict(L.Callback):
    """Writes a sweep seed's verdict into its W&B run summary when its fit ends: ``quality`` (the
    final quality metric, or ``worst`` when diverged), ``initial_quality``, ``diverged`` with
    ``diverged_reason`` (:func:`divergence_reason`) and ``collapsed``: the same rule the sweep scores
    the seed with, so W&B runs can be filtered by it. Given by the sweep on the fit command line."""

    def __init__(self, metric: str, direction: str, worst: float, collapse_metric: str | None = None,
                 at_most: float | None = None):
        self.quality = Quality(metric, direction, worst)  # type: ignore[arg-type]
        self.collapse_metric, self.at_most = collapse_metric, at_most
        self.initial: float | None = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 0 and self.initial is None and self.quality.metric in trainer.callback_metrics:
            self.initial = float(trainer.callback_metrics[self.quality.metric])  # measured at G iteration 0

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        status = getattr(pl_module, "status", "running")
        status = "completed" if status == "running" else status
        metrics = trainer.callback_metrics
        final = float(metrics[self.quality.metric]) if self.quality.metric in metrics else None
        reason = divergence_reason(self.quality, status, final, self.initial)
        c = metrics.get(self.collapse_metric) if self.collapse_metric else None
        collapsed_ = reason is not None or (self.collapse_metric is not None and (
            c is None or float(c) <= float(self.at_most)))
        verdict = {"quality": self.quality.worst if reason else final, "initial_quality": self.initial,
                   "diverged": reason is not None, "diverged_reason": reason or "", "collapsed": collapsed_}
        for logger in trainer.loggers:
            summary = getattr(getattr(logger, "experiment", None), "summary", None)
            if summary is not None:
                summary.update(verdict)


@dataclass
class SeedResult:
    seed: int
    status: str
    exit_code: int
    quality: float
    collapse_value: float | None
    history: list[float]
    run_dir: str
    reason: str | None = None  # why the seed counts as diverged
    initial: float | None = None  # quality of G at initialization (G iteration 0)
    replica: int | None = None  # its replica in the population fit at run_dir; None: a fit of its own
    error: str | None = None  # a seed that was not measured: why (the fit's error line)


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


def metric_steps(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """``(G iteration, value)`` of ``key`` in ``<run>/metrics.csv`` in step order (rows without it skipped;
    a step written twice, by a resumed segment, keeps its last value)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        by_step = {int(float(r["step"])): float(r[key]) for r in csv.DictReader(f) if r.get(key) not in (None, "")}
    return sorted(by_step.items())


def replica_rows(run_dir: Path, replica: int, last: int | None = None) -> list[tuple[int, dict[str, float]]]:
    """``(G iteration, {key: value})`` of one replica in a population's ``<run>/metrics.csv``, in step order:
    its ``…/r<replica>`` columns under their plain keys and the columns without a replica suffix, up to
    G iteration ``last`` (a step written twice, by a resumed segment, keeps its last values)."""
    path = run_dir / "metrics.csv"
    rows: dict[int, dict[str, float]] = {}
    if not path.is_file():
        return []
    with open(path) as f:
        for r in csv.DictReader(f):
            step = int(float(r["step"]))
            if last is not None and step > last:
                continue
            row = rows.setdefault(step, {})
            for key, value in r.items():
                tagged = re.fullmatch(r"(.+)/r(\d+)", key or "")
                if key == "step" or value in (None, "") or (tagged and int(tagged[2]) != replica):
                    continue
                row[tagged[1] if tagged else key] = float(value)
    return [(step, row) for step, row in sorted(rows.items()) if row]


def metric_history(run_dir: Path, key: str) -> list[float]:
    """Values of ``key`` in ``<run>/metrics.csv`` after G iteration 0, in step order."""
    return [v for step, v in metric_steps(run_dir, key) if step > 0]


def pstdev(values: list[float]) -> float:
    """Population standard deviation, 0 for fewer than two values."""
    return statistics.pstdev(values) if len(values) >= 2 else 0.0


def divergence_reason(q: Quality, status: str, final: float | None, initial: float | None) -> str | None:
    """The one rule for a diverged seed (docs/sweeps.md, "Diverged and collapsed"), or None when it did not.

    A seed diverged when its fit stopped on a non-finite or out-of-bound loss (``divergence_threshold``),
    or its final quality is non-finite, worse than ``quality.worst``, or worse than the quality of G's
    samples at initialization (G iteration 0, measured by the same metric against the same data)."""
    if status == "diverged":
        return "loss non-finite or above divergence_threshold"
    if status != "completed":
        return None
    if final is None or not math.isfinite(final):
        return f"final {q.metric} is not finite"
    if q.better(q.worst, final):
        return f"final {q.metric} {final:.4g} is worse than quality.worst {q.worst:g}"
    if initial is not None and math.isfinite(initial) and q.better(initial, final):
        return f"final {q.metric} {final:.4g} is worse than G at initialization ({initial:.4g})"
    return None


def seed_result(space: SweepSpace, seed: int, code: int, run_dir: Path, replica: int | None = None,
                error: str | None = None) -> SeedResult:
    """Read one fit that ended — or, with ``replica``, one replica of a population fit (its entry in
    summary.json's ``replicas``, its ``…/r<k>`` metrics.csv columns): a diverged run gets the worst quality;
    a fit that measured nothing (:data:`ganbench.sweep.resume.MEASURED`: interrupted, crashed, missing,
    no metric) keeps its status and error line, and no quality."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"status": "missing"}
    error = error or summary.get("error")  # the fit's own (a population's replicas share it)
    if replica is not None:
        entries = summary.get("replicas") or []
        summary = entries[replica] if replica < len(entries) else {"status": "missing"}
    status = {3: "diverged", EXIT_CRASHED: "crashed", EXIT_INTERRUPTED: "interrupted"}.get(code) or \
        summary.get("status", "missing")
    metrics = summary.get("metrics") or {}
    suffix = "" if replica is None else f"/r{replica}"
    value = metrics.get(space.quality.metric)
    final = float(value) if isinstance(value, (int, float)) else None
    if status == "completed" and value is None:
        status = "no_metric"
    steps = metric_steps(run_dir, space.quality.metric + suffix)
    initial = steps[0][1] if steps and steps[0][0] == 0 else None
    reason = divergence_reason(space.quality, status, final, initial)
    if reason is not None:
        status = "diverged"
    ok = status == "completed"
    collapse_value = None
    if space.collapse is not None:
        c = metrics.get(space.collapse["metric"])
        collapse_value = float(c) if isinstance(c, (int, float)) and status != "diverged" else None
    quality = final if ok else space.quality.worst if status == "diverged" else math.nan
    return SeedResult(seed=seed, status=status, exit_code=code, quality=quality,
                      collapse_value=collapse_value, history=[v for s, v in steps if s > 0] if ok else [],
                      run_dir=str(run_dir), reason=reason, initial=initial, replica=replica,
                      error=None if status in MEASURED else error or status)


def collapsed(space: SweepSpace, seed: SeedResult) -> bool:
    """Diverged, or the final ``collapse.metric`` is missing or at most ``collapse.at_most``."""
    return seed.status != "completed" or (space.collapse is not None and (
        seed.collapse_value is None or seed.collapse_value <= space.collapse["at_most"]))


def aggregate(space: SweepSpace, seeds: list[SeedResult]) -> TrialResult:
    """Quality and stability of one trial from its measured seeds (definitions in the module docstring); a seed
    that measured nothing is refused: it is no evidence of instability."""
    n = len(seeds)
    if any(s.status not in MEASURED for s in seeds):
        raise ValueError(f"seeds {[s.seed for s in seeds if s.status not in MEASURED]} measured nothing")
    diverged = [s.status == "diverged" for s in seeds]
    collapsed_ = [collapsed(space, s) for s in seeds]
    alive = [s for s, d in zip(seeds, diverged) if not d]
    window = space.oscillation_window
    osc = [pstdev(s.history[-window:]) for s in alive]
    return TrialResult(
        quality=float(statistics.median(s.quality for s in seeds)),
        diverged_frac=sum(diverged) / n,
        collapsed_frac=sum(collapsed_) / n,
        instability=sum(c or d for c, d in zip(collapsed_, diverged)) / n,
        spread=pstdev([s.quality for s in alive]),
        oscillation=float(statistics.fmean(osc)) if osc else 0.0,
        seeds=seeds,
    )

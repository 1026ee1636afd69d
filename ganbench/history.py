"""A run directory is append-only history: metrics.csv, config.yaml of each segment, summary.json.

* :class:`HistoryCSVLogger` is Lightning's :class:`~lightning.pytorch.loggers.CSVLogger` with a writer
  that never deletes an existing ``metrics.csv`` (Lightning's removes it when a logger starts), writes
  each row as soon as it is logged (a SIGKILL loses nothing that was logged), rewrites the file
  atomically when new columns appear, and, when a run resumes, drops the rows that a killed run logged
  after the checkpoint it resumes from (:meth:`HistoryCSVLogger.resume_at`), so that after the resume the
  file holds exactly the rows of an uninterrupted run.
* :func:`check_resume_compatible` compares the configured model and data with those stored in the
  checkpoint (Lightning keeps both init-argument sets) before anything in the run directory is touched.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from ganbench import GanbenchError

__all__ = ["HistoryCSVLogger", "HistoryWriter", "SAFE_CHANGES", "check_resume_compatible", "config_changes"]


def _write_rows_atomic(path: Path, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class HistoryWriter(ExperimentWriter):
    """Lightning's CSV experiment writer that continues an existing ``metrics.csv`` instead of removing it."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)

    _last_written: dict[str, Any] | None = None

    def _check_log_dir_exists(self) -> None:
        """A run directory is history: an existing metrics.csv is continued, never removed."""

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        """One row per step: the scalars of one G iteration that arrive in several calls (Lightning's
        training values, an evaluation logged by a callback) join the same row, also one already written."""
        row = {k: v.item() if hasattr(v, "item") else v for k, v in metrics_dict.items()}
        last = self.metrics[-1] if self.metrics else self._last_written
        if last is None or step is None or last.get("step") != step or set(row) & (set(last) - {"step"}):
            return super().log_metrics(metrics_dict, step)
        if self.metrics:  # not written yet
            last.update(row)
            return
        merged = {**last, **row}
        new_keys = set(merged) - set(self.metrics_keys)
        self.metrics_keys = sorted(set(self.metrics_keys) | new_keys)
        path = Path(self.metrics_file_path)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        _write_rows_atomic(path, self.metrics_keys, [*rows[:-1], merged])
        self._last_written = merged

    def save(self) -> None:
        if self.metrics:
            self._last_written = dict(self.metrics[-1])
        super().save()

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        path = Path(self.metrics_file_path)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        _write_rows_atomic(path, fieldnames, rows)

    def keep_steps_below(self, step: int) -> int:
        """Drop the rows whose ``step`` is ``>= step`` (and a last row cut short by a kill); returns how
        many rows were dropped."""
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return 0
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fieldnames = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [r for r in rows if None not in r and None not in r.values() and _step(r) is not None
                and _step(r) < step]
        if len(kept) != len(rows):
            _write_rows_atomic(path, fieldnames, kept)
        self._last_written = None
        return len(rows) - len(kept)


def _step(row: dict[str, Any]) -> int | None:
    try:
        return int(row.get("step") or "")
    except ValueError:
        return None


class HistoryCSVLogger(CSVLogger):
    """``<run>/metrics.csv`` as an append-only record (see the module docstring). Every logged row is
    written at once (``flush_logs_every_n_steps=1``): rows are logged every ``log_every_n_steps``, so
    this is one small append per logged step."""

    def __init__(self, save_dir: str | os.PathLike) -> None:
        super().__init__(save_dir=save_dir, name="", version="", flush_logs_every_n_steps=1)

    @property
    @rank_zero_experiment
    def experiment(self) -> HistoryWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = HistoryWriter(log_dir=self.log_dir)
        return self._experiment

    def resume_at(self, next_step: int) -> int:
        """A resumed run logs its first row at ``next_step``: drop the rows a killed run wrote from there on."""
        return self.experiment.keep_steps_below(next_step)


# ------------------------------------------------------------------------------- resume compatibility
#: init arguments that may differ between a checkpoint and the resumed run: they change how a run is
#: executed or watched, not what it computes
SAFE_CHANGES: dict[str, frozenset[str]] = {
    "model": frozenset({"divergence_threshold", "check_every", "channels_last", "compile", "cuda_graph"}),
    "data": frozenset({"root", "num_workers", "download"}),
}
#: not compared: Lightning's bookkeeping, and the model arguments linked from the data (their source differs)
_IGNORED = frozenset({"_instantiator", "_class_path"})
_LINKED = frozenset({"data_shape", "num_classes"})


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    """Nested init arguments (``g_optimizer: {class_path, init_args: {...}}``) as dotted keys."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in _IGNORED:
                continue
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def signature_defaults(obj: Any) -> dict[str, Any]:
    """The default of every ``__init__`` argument of ``obj``'s class and its bases (the nearest wins)."""
    import inspect

    out: dict[str, Any] = {}
    for cls in reversed(type(obj).__mro__):
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for name, p in inspect.signature(init).parameters.items():
            if p.default is not inspect.Parameter.empty:
                out[name] = p.default
    return out


def config_changes(saved: dict[str, Any], now: dict[str, Any], section: str,
                   defaults: dict[str, Any] | None = None) -> list[str]:
    """``key: saved -> now`` for each init argument of ``section`` that differs and is not safe to change.
    An argument the checkpoint does not know (added to ganbench after it was written) that is at its
    ``defaults`` value is no change: the run trains as it did."""
    a, b = _flat(saved, ""), _flat(now, "")
    defaults = defaults or {}
    changes = []
    for key in sorted(set(a) | set(b)):
        if key.split(".", 1)[0] in SAFE_CHANGES.get(section, ()):
            continue
        if key not in a and key in defaults and _same(defaults[key], b[key]):
            continue
        if key not in a or key not in b or not _same(a[key], b[key]):
            changes.append(f"{section}.{key}: {a.get(key, '(unset)')!r} -> {b.get(key, '(unset)')!r}")
    return changes


def check_resume_compatible(ckpt: dict[str, Any], path: Path, model_hparams: dict[str, Any],
                            data_hparams: dict[str, Any] | None, max_steps: int | None,
                            allow_changed: bool, model_defaults: dict[str, Any] | None = None,
                            data_defaults: dict[str, Any] | None = None) -> list[str]:
    """Refuse a resume whose model or data settings differ from the checkpoint's (unless ``allow_changed``)
    and one whose ``max_steps`` is below the checkpoint's G iteration; returns the (allowed) changes.
    ``*_defaults``: argument defaults (:func:`signature_defaults`), so arguments newer than the
    checkpoint, left at their default, are not changes."""
    model_saved = {k: v for k, v in (ckpt.get("hyper_parameters") or {}).items() if k not in _LINKED}
    changes = config_changes(model_saved, {k: v for k, v in model_hparams.items() if k not in _LINKED}, "model",
                             model_defaults)
    if data_hparams is not None and ckpt.get("datamodule_hyper_parameters") is not None:
        changes += config_changes(dict(ckpt["datamodule_hyper_parameters"]), dict(data_hparams), "data",
                                  data_defaults)
    if changes and not allow_changed:
        raise GanbenchError(
            f"resume from {path} with settings that differ from the checkpoint's: {'; '.join(changes)}; resume with "
            f"the run's config.yaml, or pass --run.allow_changed_config true to continue with the new settings")
    step = int(ckpt.get("global_step", 0))
    if max_steps is not None and 0 <= max_steps < step:
        raise GanbenchError(f"trainer.max_steps={max_steps} is below G iteration {step} of checkpoint {path}; "
                            f"give --trainer.max_steps >= {step} to continue the run")
    return changes

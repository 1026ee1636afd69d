"""Run bookkeeping: summary.json, the G-iteration progress bar and the checkpoint policy."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only


def write_json_atomic(path: Path, data: dict[str, Any], allow_nan: bool = True) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file
    (``allow_nan=False``: strict JSON, a NaN/inf is an error, not a bare ``NaN``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=allow_nan) + "\n")
    os.replace(tmp, path)


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        return v.item() if v.numel() == 1 else v.tolist()
    return v


class RunSummary(L.Callback):
    """Writes ``<run>/summary.json``: status, G iterations, wall time, final metrics and protocol.

    ``status`` is ``completed`` when training reached its end, ``diverged`` when the module stopped
    on a NaN/inf or exploding loss (with the step and reason), and ``interrupted`` for
    Ctrl-C/SIGTERM or any other exception (with the error).
    """

    def __init__(self, filename: str = "summary.json"):
        self.filename = filename
        self._t0: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._g0 = trainer.global_step

    def on_fit_end(self, trainer, pl_module) -> None:
        status = getattr(pl_module, "status", "running")
        if status == "running":
            status = "completed"
            pl_module.status = status
        self.write(trainer, pl_module, status)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if getattr(pl_module, "status", None) != "diverged":
            pl_module.status = "interrupted"
        self.write(trainer, pl_module, pl_module.status, error=f"{type(exception).__name__}: {exception}")

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module, status: str, error: str | None = None) -> None:
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
        protocol: dict[str, Any] = {"g_step_definition": "one G update after n_critic D updates",
                                    "n_critic": getattr(pl_module, "n_critic", None)}
        for cb in trainer.callbacks:
            if getattr(cb, "protocol", None):
                protocol.update(cb.protocol)
        summary = {
            "status": status,
            "family": getattr(pl_module, "family", type(pl_module).__name__),
            "g_steps": int(trainer.global_step),
            "max_steps": int(trainer.max_steps),
            "wall_s": round(time.perf_counter() - (self._t0 or time.perf_counter()), 3),
            "metrics": {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()},
            "protocol": protocol,
        }
        if getattr(pl_module, "divergence", None):
            summary["divergence"] = pl_module.divergence
        if error and status != "diverged":
            summary["error"] = error
        write_json_atomic(Path(trainer.default_root_dir) / self.filename, summary)


class GIterationBar(TQDMProgressBar):
    """One bar over the whole run counting generator iterations (not batches per epoch), with the
    latest D and G losses."""

    def on_train_start(self, trainer, pl_module) -> None:
        # here, not per epoch: a run resumed from a mid-epoch checkpoint gets no on_train_epoch_start
        super().on_train_start(trainer, pl_module)
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else (
            trainer.num_training_batches * max(trainer.max_epochs or 1, 1))
        bar = self.train_progress_bar
        bar.reset(total=total)
        bar.initial = bar.n = trainer.global_step
        bar.set_description("G-iterations")

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        """One bar for the whole run: nothing restarts at an epoch boundary."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = trainer.global_step
        bar = self.train_progress_bar
        if bar is not None and (n % self.refresh_rate == 0 or n == bar.total):
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.update(n - bar.n)  # tqdm redraws at most every `mininterval` s, not on every fast step
            if n == bar.total:
                bar.refresh()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """End the bar's line, so the one-line error that follows starts a line of its own."""
        for bar in (self._train_progress_bar, self._val_progress_bar):
            if bar is not None and not bar.disable:
                bar.close()

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class GANCheckpoint(ModelCheckpoint):
    """``<run>/checkpoints/step_XXXXXXX.ckpt`` every ``every_n_train_steps`` G iterations (all kept)
    plus ``last.ckpt``, which is also written when training stops between two intervals."""

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 1000, **kwargs: Any):
        kwargs.setdefault("filename", "step_{step:07d}")
        kwargs.setdefault("auto_insert_metric_name", False)
        kwargs.setdefault("save_top_k", -1)
        kwargs.setdefault("save_last", True)
        kwargs.setdefault("enable_version_counter", False)  # a resumed run rewrites step_N.ckpt, not step_N-v1
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, **kwargs)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._last_global_step_saved != trainer.global_step and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

"""Run bookkeeping: summary.json, the G-iteration progress bar and the checkpoint policy."""

from __future__ import annotations

import json
import math
import os
import shutil
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
    from ganbench.signals import deferred

    tmp = path.with_suffix(path.suffix + ".tmp")
    text = json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=allow_nan) + "\n"
    with deferred():  # a signal (ganbench.signals) waits for the file to be in place
        tmp.write_text(text)
        os.replace(tmp, path)


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        return v.item() if v.numel() == 1 else v.tolist()
    return v


def replica_summaries(pl_module, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{replica, seed, status, g_steps, metrics}, …]`` of a population: each replica's own
    ``…/r<k>`` metrics under their plain keys; a diverged replica's status, step and reason."""
    out = []
    for k, seed in enumerate(pl_module.replica_seeds):
        tag = f"/r{k}"
        metrics = {key[: -len(tag)]: v for key, v in summary["metrics"].items() if key.endswith(tag)}
        div = pl_module.replica_divergence[k]
        entry: dict[str, Any] = {"replica": k, "seed": seed,
                                 "status": "diverged" if div else summary["status"],
                                 "g_steps": div["step"] if div else summary["g_steps"], "metrics": metrics}
        if div:
            entry["divergence"] = div
        out.append(entry)
    return out


class RunSummary(L.Callback):
    """Writes ``<run>/summary.json``: status, G iterations, wall time, final metrics and protocol.

    ``status`` is ``completed`` when training reached its end, ``diverged`` when the module stopped
    on a NaN/inf or exploding loss (with the step and reason), and ``interrupted`` for
    Ctrl-C/SIGTERM or any other exception (with the error).

    A resumed run updates the summary of the run it continues: ``segments`` lists every segment
    (first and last G iteration, status, wall time), ``wall_s`` is their sum, and metrics the new
    segment did not compute keep their earlier values.
    """

    def __init__(self, filename: str = "summary.json"):
        self.filename = filename
        self._t0: float | None = None
        self._g0 = 0
        self._earlier: dict[str, Any] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._earlier = {}
        path = Path(trainer.default_root_dir) / self.filename
        if trainer.ckpt_path is not None and path.is_file():
            try:
                self._earlier = json.loads(path.read_text())
            except (OSError, ValueError):  # an unreadable summary is replaced, the checkpoints hold the state
                self._earlier = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self._g0 = trainer.global_step  # after the checkpoint is restored

    def on_fit_end(self, trainer, pl_module) -> None:
        status = getattr(pl_module, "status", "running")
        if status == "running":
            status = "completed"
            pl_module.status = status
        self.write(trainer, pl_module, status)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if getattr(pl_module, "status", None) != "diverged":
            pl_module.status = "interrupted"
        try:
            self.write(trainer, pl_module, pl_module.status, error=f"{type(exception).__name__}: {exception}")
        except OSError:  # a full or read-only disk: the exception being handled is what the user must see
            pass

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module, status: str, error: str | None = None) -> None:
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items() if k != "step"}  # step: LogStep
        protocol: dict[str, Any] = {"g_step_definition": "one G update after n_critic D updates",
                                    "n_critic": getattr(pl_module, "n_critic", None)}
        for cb in trainer.callbacks:
            if getattr(cb, "protocol", None):
                protocol.update(cb.protocol)
        wall = round(time.perf_counter() - (self._t0 or time.perf_counter()), 3)
        earlier = self._earlier
        segments = list(earlier.get("segments") or ([{"from_step": 0, "to_step": earlier.get("g_steps"),
                                                       "status": earlier.get("status"),
                                                       "wall_s": earlier.get("wall_s")}] if earlier else []))
        segments.append({"from_step": int(self._g0), "to_step": int(trainer.global_step), "status": status,
                         "wall_s": wall})
        summary = {
            "status": status,
            "family": getattr(pl_module, "family", type(pl_module).__name__),
            "g_steps": int(trainer.global_step),
            "max_steps": int(trainer.max_steps),
            "wall_s": round(sum(s.get("wall_s") or 0 for s in segments), 3),
            "segments": segments,
            "metrics": {**(earlier.get("metrics") or {}),
                        **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                           for k, v in metrics.items()}},
            "protocol": protocol,
        }
        if getattr(pl_module, "divergence", None):
            summary["divergence"] = pl_module.divergence
        if getattr(pl_module, "population", 1) > 1:
            summary["replicas"] = replica_summaries(pl_module, summary)
        if error and status != "diverged":
            summary["error"] = error
        write_json_atomic(Path(trainer.default_root_dir) / self.filename, summary)
        for logger in trainer.loggers:  # W&B: runs can be filtered by how they ended
            wandb_summary = getattr(getattr(logger, "experiment", None), "summary", None)
            if wandb_summary is not None:
                wandb_summary.update({"status": status, "g_steps": summary["g_steps"]})
                if wandb_summary.get("diverged") is None:  # a sweep's stricter rule may have written it already
                    wandb_summary["diverged"] = status == "diverged"


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


def non_finite_tensor(module: torch.nn.Module) -> str | None:
    """The name of the first floating-point entry of ``module``'s state that holds NaN/inf (None when all
    are finite); one host sync."""
    state = [(k, v) for k, v in module.state_dict().items() if torch.is_tensor(v) and v.is_floating_point()]
    if not state:
        return None
    finite = torch.stack([torch.isfinite(v).all() for _, v in state]).cpu()
    bad = (~finite).nonzero()
    return state[int(bad[0])][0] if len(bad) else None


class GANCheckpoint(ModelCheckpoint):
    """``<run>/checkpoints/step_XXXXXXX.ckpt`` every ``every_n_train_steps`` G iterations (all kept)
    plus ``last.ckpt``, which is also written when training stops between two intervals.

    Nothing non-finite is ever written: before each save the module's divergence flag is read and its
    weights are checked for NaN/inf; a diverged run is stopped instead of saved. When a run diverges,
    the newest checkpoint written before (finite by construction) is copied to ``last_finite.ckpt``
    and named in ``summary.json`` (``divergence.last_finite``).
    """

    LAST_FINITE = "last_finite.ckpt"

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 1000, **kwargs: Any):
        kwargs.setdefault("filename", "step_{step:07d}")
        kwargs.setdefault("auto_insert_metric_name", False)
        kwargs.setdefault("save_top_k", -1)
        kwargs.setdefault("save_last", True)
        kwargs.setdefault("enable_version_counter", False)  # a resumed run rewrites step_N.ckpt, not step_N-v1
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, **kwargs)
        self._newest: str | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._newest = None
        if trainer.ckpt_path is not None and Path(trainer.ckpt_path).is_file():
            self._newest = str(trainer.ckpt_path)  # written by a run that checked it, or the user's choice

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        module = trainer.lightning_module
        if hasattr(module, "check_divergence"):
            if module.check_divergence():
                return
            # (a population keeps a diverged replica's values frozen in its slice: recorded, not saved over)
            bad = non_finite_tensor(module) if getattr(module, "population", 1) == 1 else None
            if trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
                module.mark_diverged(f"non-finite weights ({bad or 'on another rank'}) at the checkpoint "
                                     f"of G iteration {trainer.global_step}")
                return
        super()._save_checkpoint(trainer, filepath)
        self._newest = filepath

    def on_train_end(self, trainer, pl_module) -> None:
        if self._last_global_step_saved != trainer.global_step and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        if getattr(pl_module, "status", None) == "diverged" and pl_module.divergence is not None:
            pl_module.divergence["last_finite"] = self.keep_last_finite(trainer)

    def keep_last_finite(self, trainer) -> str | None:
        """Copy the newest checkpoint written before the divergence to ``last_finite.ckpt``; its path."""
        if self._newest is None or not Path(self._newest).is_file() or self.dirpath is None:
            return None
        target = Path(self.dirpath) / self.LAST_FINITE
        if trainer.is_global_zero and Path(self._newest).resolve() != target.resolve():
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            try:
                shutil.copyfile(self._newest, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        trainer.strategy.barrier("ganbench-last-finite")
        return str(target)

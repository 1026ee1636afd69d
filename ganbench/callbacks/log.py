"""What a run sends to its loggers, and at which step.

Rules (docs/metrics.md, "Logging"):

* every logged row is keyed by the **G iteration** (``trainer.global_step``) it describes: training
  scalars through Lightning (``self.log``; :class:`LogStep` gives Lightning the step), evaluations
  (metric callbacks, sample grids) through :func:`log_evaluation`, which writes the scalars and the
  pictures of one evaluation once, at the G iteration they measured, and never again at later
  logging steps;
* the last G iteration of a fit is always in ``metrics.csv``, also when the run is shorter than
  ``log_every_n_steps``;
* ``metrics.csv`` is appended to: the run directory already holds ``config.yaml``, checkpoints and
  samples, and a resumed run keeps the rows of the segment before it (``ganbench.history.HistoryCSVLogger``).

:func:`quiet_library_noise` is the one place where warnings of the libraries that a ganbench user
cannot act on are filtered (by their exact message); every other warning is still shown.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.loggers import WandbLogger

#: (message regex, why a ganbench user cannot act on it)
UNACTIONABLE: tuple[tuple[str, str], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning's pytree helper against a newer torch"),
    (r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a "
     r"`LightningDataModule`", "GANModule moves batches itself on purpose (one place for every data module)"),
    (r"Metric `(Kernel Inception Distance|InceptionScore)` will save all extracted features",
     "torchmetrics' note on KID/IS buffers; ganbench bounds them by --run.image_metrics_n"),
    (r"LightningCLI's args parameter", "ganbench passes the command line to LightningCLI on purpose"),
)

#: info lines of Lightning that advertise instead of inform
_ADVERTS = ("💡 Tip:",)


class _NoAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_ADVERTS)


def quiet_library_noise() -> None:
    """Filter the warnings listed in :data:`UNACTIONABLE` and Lightning's adverts (idempotent)."""
    for pattern, _why in UNACTIONABLE:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoAdverts) for f in log.filters):
            log.addFilter(_NoAdverts())


class RunWandbLogger(WandbLogger):
    """Lightning's W&B logger without the ``anonymous`` argument, which wandb >= 0.19 ignores and
    warns about on every run."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)


class ParameterSummary(RichModelSummary):
    """Lightning's model summary without the FLOPs column: GANModule has no example input, so
    Lightning would print 0 FLOPs for every layer."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int, **kwargs: Any) -> None:
        from lightning.pytorch.utilities.model_summary import get_human_readable_count
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style="bold magenta")
        for name, _ in columns:
            table.add_column(name, justify="right" if name == "Params" else "left", no_wrap=name == "Name")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        console.print(f"[bold]Parameters[/]: {get_human_readable_count(int(trainable_parameters))} trainable, "
                      f"{get_human_readable_count(int(total_parameters - trainable_parameters))} frozen, "
                      f"{model_size:,.3f} MB")


def log_evaluation(trainer: L.Trainer, values: dict[str, float], images: dict[str, Path] | None = None,
                   reduce: tuple[str, ...] = ()) -> dict[str, float]:
    """Log one evaluation at the G iteration it measured: scalars and pictures at the same step, once.

    ``values`` also become ``trainer.callback_metrics`` (read by summary.json, the progress bar and
    pruning) until the next evaluation replaces them. Keys in ``reduce`` are averaged over DDP ranks
    (each rank measured its own samples); every other value must already be global.
    """
    step = int(trainer.global_step)
    out: dict[str, float] = {}
    for key, value in values.items():
        v = torch.as_tensor(float(value), dtype=torch.float32)
        if key in reduce and trainer.world_size > 1:
            v = trainer.strategy.reduce(v.to(trainer.strategy.root_device), reduce_op="mean").cpu()
        trainer.callback_metrics[key] = v
        out[key] = float(v)
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            if out:
                logger.log_metrics(dict(out), step=step)
            for key, path in (images or {}).items():
                if hasattr(logger, "log_image"):
                    logger.log_image(key=key, images=[str(path)], step=step)
    return out


class LogStep(L.Callback):
    """Makes Lightning key its logged rows by the G iteration, and logs the last G iteration of a fit.

    Lightning's loggers otherwise count batches from 0 (one behind ``global_step`` when a row is
    written) and write only every ``log_every_n_steps`` batches, so a fit shorter than that has no
    row at all. Logging ``step`` is Lightning's documented way to set the step of a row.
    """

    def __init__(self) -> None:
        self._last_row: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        every = trainer.log_every_n_steps
        if every and (step % every == 0 or trainer.should_stop):  # the batches Lightning writes a row for
            pl_module.log("step", float(step))
            self._last_row = step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if self._last_row == step or not trainer.is_global_zero or step == 0:
            return
        final = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if k.startswith("train/") and torch.as_tensor(v).numel() == 1}
        for logger in trainer.loggers:
            if final:
                logger.log_metrics(final, step=step)
        self._last_row = step

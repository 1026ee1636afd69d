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

A W&B run that has ended can still take values into its summary (:func:`add_to_wandb_summary`): a sweep
writes the trial's result into each seed's run once the trial's last seed has finished.

:func:`quiet_library_noise` is the one place where warnings of the libraries that a ganbench user
cannot act on are filtered (by their exact message); every other warning is still shown.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.loggers import WandbLogger

from ganbench import GanbenchError

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


# ------------------------------------------------------------------ a closed W&B run's summary
#: W&B's transaction log (``run-<id>.wandb``): a 7-byte file header (``:W&B``, 0xBEE1, version 0), then
#: LevelDB-style 32 KiB blocks of chunks, each with a 7-byte header (CRC-32 of its type byte and data,
#: length, type); a record (a ``wandb_internal_pb2.Record``) is one FULL chunk or FIRST, MIDDLE…, LAST
_BLOCK, _CHUNK = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_run_folder(run_dir: Path) -> Path | None:
    """The newest W&B run folder a fit wrote under ``<run>/wandb/`` (``[offline-]run-<time>-<id>``)."""
    runs = sorted(p for p in (Path(run_dir) / "wandb").glob("*run-*-*") if p.is_dir() and not p.is_symlink())
    return runs[-1] if runs else None


def _log_records(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(first byte, end, payload)`` of every record of a transaction log; a chunk whose CRC does not
    match is an error (the file is never rewritten from a misread)."""
    if data[:4] != b":W&B":
        raise GanbenchError("not a W&B transaction log")
    pos, start, pending, out = _CHUNK, 0, b"", []
    while pos + _CHUNK <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK:  # a block's tail too short for a chunk header is zero padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + _CHUNK:pos + _CHUNK + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            raise GanbenchError(f"W&B transaction log: bad chunk checksum at byte {pos}")
        if kind in (_FULL, _FIRST):
            start, pending = pos, b""
        pending += chunk
        pos += _CHUNK + length
        if kind in (_FULL, _LAST):
            out.append((start, pos, pending))
    return out


def _log_chunks(pos: int, payload: bytes) -> bytes:
    """One record written at file offset ``pos``: its chunks, with zero padding where a block ends."""
    out, first = bytearray(), True
    while True:
        left = _BLOCK - (pos + len(out)) % _BLOCK
        if left < _CHUNK:
            out += bytes(left)
            continue
        part, payload = payload[:left - _CHUNK], payload[left - _CHUNK:]
        kind = (_FULL if not payload else _FIRST) if first else (_LAST if not payload else _MIDDLE)
        out += struct.pack("<IHB", zlib.crc32(part, zlib.crc32(bytes([kind]))), len(part), kind) + part
        first = False
        if not payload:
            return bytes(out)


def _closed_log(log: Path, timeout_s: float) -> tuple[bytes, list[tuple[int, int, Any]]]:
    """The bytes and parsed records of a run's transaction log once W&B has written all of it:
    ``wandb.finish()`` returns before W&B's service process has flushed the log (it can still hold only
    its header), so this waits until the log ends with the run's exit record and stays unchanged."""
    from wandb.proto import wandb_internal_pb2 as pb

    deadline, last = time.monotonic() + timeout_s, b""
    while True:
        data = log.read_bytes()
        try:
            records = [(start, end, pb.Record.FromString(p)) for start, end, p in _log_records(data)]
        except GanbenchError:  # a chunk being written
            records = []
        if data == last and records and records[-1][2].WhichOneof("record_type") == "exit":
            return data, records
        if time.monotonic() > deadline:
            raise GanbenchError(f"{log}: no complete W&B run log after {timeout_s:g} s (a run still running?)")
        last = data
        time.sleep(0.05)


def add_to_offline_summary(log: Path, values: dict[str, Any], timeout_s: float = 60.0) -> None:
    """Write ``values`` into the summary of a finished offline run: one summary record, as
    ``run.summary.update`` writes it, ahead of the exit record in the run's transaction log ``log`` — what
    ``wandb sync`` uploads and ``wandb leet inspect`` reads. The records before it are kept byte for byte;
    the file is replaced atomically, once W&B has written it out (:func:`_closed_log`)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, records = _closed_log(log, timeout_s)
    at = next(i for i, (_, _, r) in enumerate(records) if r.WhichOneof("record_type") == "exit")
    offset, num = records[at][0], records[at][2].num
    summary = pb.Record(num=num, summary=pb.SummaryRecord(update=[
        pb.SummaryItem(key=k, value_json=json.dumps(v)) for k, v in values.items()]))
    stream = next((r._info.stream_id for _, _, r in records if r._info.stream_id), "")
    if stream:
        summary._info.stream_id = stream
    tail = [summary]
    for _, _, r in records[at:]:  # the exit record and anything after it, one number later
        r.num += 1
        tail.append(r)
    out = bytearray(data[:offset])
    for r in tail:
        out += _log_chunks(len(out), r.SerializeToString())
    tmp = log.with_name(log.name + ".tmp")
    tmp.write_bytes(bytes(out))
    os.replace(tmp, log)


def add_to_wandb_summary(run_dir: Path, values: dict[str, Any]) -> str | None:
    """Add ``values`` to the summary of the W&B run that a finished fit wrote under ``run_dir``; its id,
    or None when the fit logged no W&B run.

    wandb cannot resume an offline run (``wandb.init(id=…, resume=…)`` offline starts a new, empty run
    folder with the same id), so an offline run gets the values written into its transaction log
    (:func:`add_to_offline_summary`); an online run is resumed (``resume="must"``, same project and
    default entity as the fit) and its summary updated."""
    folder = wandb_run_folder(run_dir)
    if folder is None:
        return None
    run_id = folder.name.rsplit("-", 1)[1]
    log = folder / f"run-{run_id}.wandb"
    if folder.name.startswith("offline-"):
        add_to_offline_summary(log, values)
        return run_id
    import wandb
    from wandb.proto import wandb_internal_pb2 as pb

    records = [pb.Record.FromString(p) for _, _, p in _log_records(log.read_bytes())] if log.is_file() else []
    fit = next((r.run for r in records if r.WhichOneof("record_type") == "run"), pb.RunRecord())
    with wandb.init(id=run_id, resume="must", dir=str(run_dir), project=fit.project or None,
                    entity=fit.entity or None, settings=wandb.Settings(console="off", x_disable_stats=True)) as run:
        run.summary.update(values)
    return run_id

"""Reliability of a run: atomic checkpoints, bit-identical resume, SIGTERM, and input checks.

**Exact resume.** A checkpoint written by ganbench holds everything that changes the continuation of
a run: G, D and the EMA copy of G (module state), both optimizers (Lightning), the loop counters and the
data loader's position (Lightning's fit loop and :meth:`ganbench.data.loader.TensorLoader.state_dict`),
the fixed sample latents (a buffer), the family's own state (BEGAN's k_t, MAGAN's margin, historical
averages: the families' ``on_save_checkpoint``) and, added by :class:`ResumeState`, the random number
generators (torch CPU and CUDA, numpy, Python) and the learning-rate schedulers, which Lightning does not
track under manual optimization. The generators are restored just before the first resumed training
step, so the resumed run draws exactly the latents and noise the uninterrupted one would have drawn
(with ``--trainer.deterministic true`` the parameters are then bit-identical; tests/test_reliability.py).

**Atomic files.** :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file in the same
directory, fsyncs it and renames it over the target (``os.replace`` is atomic on POSIX), so a kill at
any moment leaves either the previous or the new ``last.ckpt``, never a truncated one.

**SIGTERM.** Lightning turns SIGTERM into a ``SIGTERMException`` at the end of the current G iteration;
:class:`ResumeState` then writes ``last.ckpt`` (when the step has no checkpoint yet), RunSummary writes
``summary.json`` with status ``interrupted``, and the command line exits with :data:`EXIT_INTERRUPTED`.

**Input checks.** :func:`check_argv` (config files and ``model.class_path`` before jsonargparse sees
them), :func:`check_output_dir` and :func:`plan_resume` turn bad input into one
:class:`ganbench.GanbenchError` line naming the key and what is valid (docs/reliability.md lists them).
"""

from __future__ import annotations

import errno
import importlib
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ganbench import GanbenchError, exception_chain

__all__ = ["EXIT_INTERRUPTED", "AtomicCheckpointIO", "ResumeState", "check_argv", "check_family", "check_loadable",
           "check_output_dir", "inspect_checkpoint", "newest_intact_checkpoint",
           "plan_resume", "read_checkpoint", "resolve_ckpt_path"]

#: exit code of a run stopped by SIGTERM (128 + 15, the shell's convention); ``--ckpt_path last`` resumes it
EXIT_INTERRUPTED = 143

_STATE_KEY = "ganbench_resume"


# ------------------------------------------------------------------------------------ atomic files
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through ``<path>.tmp-<pid>`` in the same directory, fsync, ``os.replace`` and a
    directory fsync: after a crash ``path`` is either the old file or the complete new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        # torch's zip writer reports a full disk as RuntimeError("... file write failed")
        if isinstance(err, RuntimeError) and "write failed" not in str(err):
            raise
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        try:
            free = f"; {shutil.disk_usage(path.parent).free} bytes free there"
        except OSError:
            free = ""
        raise GanbenchError(f"cannot write checkpoint {path}: {reason}{free}; the checkpoints written "
                            "before are kept") from err
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with :func:`atomic_torch_save` for local paths (remote URLs keep
    Lightning's fsspec transaction)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)


# ------------------------------------------------------------------------------------ resume state
class ResumeState(L.Callback):
    """Makes a resumed run continue bit-identically, and saves ``last.ckpt`` on SIGTERM.

    * ``setup``: replaces the strategy's plain :class:`TorchCheckpointIO` by :class:`AtomicCheckpointIO`
      and removes the temporary files a killed writer left in the checkpoint folders.
    * checkpoints gain ``ganbench_resume``: the RNG states (torch, CUDA, numpy, Python) and the state
      of the module's LR schedulers (``GANModule._schedulers``, stepped by the module itself).
    * on load, the schedulers are restored at ``on_train_start`` (after ``configure_optimizers``) and
      the RNG states at the first ``on_train_batch_start`` — the last moment before the first resumed
      step, so hooks that draw random numbers on start (metric references) do not shift the stream.
      Place this callback first so that it runs before any other ``on_train_batch_start``.
    * ``on_exception`` with Lightning's ``SIGTERMException`` (raised between two G iterations, so the
      state is consistent): saves ``last.ckpt`` through every checkpoint callback that has not saved
      this step. Other exceptions may interrupt a step half-way and save nothing.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        #: set for a resume with changed optimizer settings (``--run.allow_changed_config``): the
        #: hyper-parameters of each param group (lr, betas, ...) are the configured ones, not the checkpoint's
        self.optimizer_settings_from_config = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero:  # temporary files of a writer that was killed
            for cb in trainer.checkpoint_callbacks:
                if cb.dirpath and "://" not in str(cb.dirpath):
                    for tmp in Path(cb.dirpath).glob(".*.tmp-*"):
                        tmp.unlink(missing_ok=True)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        rng = _collect_rng_states(include_cuda=torch.cuda.is_available())
        kind, keys, pos, has_gauss, gauss = rng["numpy"]  # stored as tensors: weights_only loads refuse numpy
        rng["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss)
        checkpoint[_STATE_KEY] = {
            "rng": rng,
            "schedulers": [s.state_dict() for s in getattr(pl_module, "_schedulers", [])],
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(_STATE_KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        next_row = trainer.global_step + 1  # rows are keyed by G iteration (LogStep): the resumed ones start here
        for logger in trainer.loggers:
            if hasattr(logger, "resume_at") and trainer.is_global_zero:
                logger.resume_at(next_row)
        schedulers = getattr(pl_module, "_schedulers", [])
        saved = self._pending.get("schedulers", [])
        if len(saved) != len(schedulers):
            raise GanbenchError(f"the checkpoint has {len(saved)} LR scheduler(s) but model.g_scheduler/"
                                f"model.d_scheduler define {len(schedulers)}; resume with the run's config.yaml")
        for scheduler, state in zip(schedulers, saved):
            scheduler.load_state_dict(state)
        if self.optimizer_settings_from_config:
            for opt in trainer.optimizers:
                for group in opt.param_groups:
                    group.update({k: v for k, v in opt.defaults.items() if k in group})
                    if "initial_lr" in group:
                        group["initial_lr"] = opt.defaults["lr"]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending is not None:
            rng = dict(self._pending["rng"])
            kind, keys, pos, has_gauss, gauss = rng["numpy"]
            rng["numpy"] = (kind, keys.numpy().astype("uint32"), pos, has_gauss, gauss)
            if not torch.cuda.is_available():
                rng.pop("torch.cuda", None)
            _set_rng_states(rng)
            self._pending = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        for cb in trainer.checkpoint_callbacks:
            if getattr(cb, "save_last", False) and cb._last_global_step_saved != trainer.global_step:
                cb._save_last_checkpoint(trainer, cb._monitor_candidates(trainer))


# ------------------------------------------------------------------------------------ file-system errors
#: errors of the file system rather than of ganbench: reported as one line naming the path
FILE_SYSTEM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def file_system_error(err: BaseException | None) -> GanbenchError | None:
    """One line for an OSError of the file system (no space, read-only, permission) that ``err`` is or
    was raised from; None for anything else."""
    for e in exception_chain(err):
        if isinstance(e, OSError) and e.errno in FILE_SYSTEM_ERRNOS:
            where = e.filename if e.filename is not None else "a file of the run"
            return GanbenchError(f"cannot write {where}: {e.strerror or e}; the files written before are kept")
    return None


# ------------------------------------------------------------------------------------ input checks
def _config_files(argv: list[str]) -> list[str]:
    files = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _class_path_args(argv: list[str]) -> list[tuple[str, str]]:
    """``(source, value)`` of every model class path given on the command line."""
    found = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in ("--model", "--model.class_path"):
            if not eq:
                if i + 1 >= len(argv):
                    continue
                value = argv[i + 1]
            if not value.lstrip().startswith(("{", "[")) and not value.endswith((".yaml", ".yml", ".json")):
                found.append((name.lstrip("-"), value))
    return found


def family_names() -> dict[str, str]:
    """Class name → dotted class path of every registered family."""
    from ganbench.models import FAMILIES

    return {cls.__name__: f"ganbench.models.{cls.__name__}" for cls in FAMILIES.values()}


def check_class_path(value: str, source: str = "model.class_path") -> str:
    """A registered family's class name or path, or a dotted path to an importable GANModule subclass;
    returns the family name."""
    from ganbench.models import FAMILIES, GANModule

    names = family_names()
    if value in names or value in names.values():
        return next(f for f, cls in FAMILIES.items() if cls.__name__ == value.rpartition(".")[2])
    module_name, _, cls_name = value.rpartition(".")
    cls = None
    if module_name:
        try:
            cls = getattr(importlib.import_module(module_name), cls_name, None)
        except ImportError:
            cls = None
    if isinstance(cls, type) and issubclass(cls, GANModule):
        return cls.family
    raise GanbenchError(f"{source}={value!r} is not a ganbench family; choose one of: {', '.join(sorted(names))} "
                        "(or the dotted path of a GANModule subclass)")


def read_yaml(name: str | os.PathLike, option: str = "--config") -> Any:
    """The contents of the YAML file ``name`` given to ``option``; a missing, unreadable or malformed
    file is one GanbenchError line (with the line and column of a syntax error)."""
    import yaml

    path = Path(name)
    if not path.is_file():
        raise GanbenchError(f"{option} {name}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise GanbenchError(f"{option} {name} is not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GanbenchError(f"{option} {name} cannot be read ({type(err).__name__}: {err})") from None


def check_argv(argv: list[str]) -> None:
    """Checks made before jsonargparse parses ``argv``: every ``--config`` file exists and is a YAML
    mapping, every model class path (in the files and on the command line) names a family, and a
    ``--ckpt_path`` file is complete and of that family — LightningCLI would otherwise read the
    checkpoint's hyper-parameters (a traceback when it is truncated) and silently switch the model to
    the checkpoint's class."""
    family: str | None = None

    for name in _config_files(argv):
        data = read_yaml(name)
        if data is None:
            raise GanbenchError(f"--config {name} is empty; it must be a YAML mapping of keys (trainer, model, data, "
                                "run, ...)")
        if not isinstance(data, dict):
            raise GanbenchError(f"--config {name} must be a YAML mapping of keys (trainer, model, data, run, ...), "
                                f"not a {type(data).__name__}")
        for section in ("trainer", "data", "run", "model"):
            value = data.get(section)
            if (value is not None and not isinstance(value, dict)
                    and not (section == "model" and isinstance(value, str))):
                raise GanbenchError(f"--config {name}: section {section!r} must be a mapping of options, not "
                                    f"{type(value).__name__} {value!r}")
        model = data.get("model")
        if isinstance(model, dict) and isinstance(model.get("class_path"), str):
            family = check_class_path(model["class_path"], f"model.class_path in {name}")
        elif isinstance(model, str):
            family = check_class_path(model, f"model in {name}")
    for source, value in _class_path_args(argv):
        family = check_class_path(value, source)
    ckpt = _option(argv, "--ckpt_path")
    if ckpt is not None and resolve_ckpt_path(ckpt, Path(".")) is not None and ckpt != "last":
        check_family(inspect_checkpoint(Path(ckpt)), Path(ckpt), family)


def _option(argv: list[str], name: str) -> str | None:
    """The last value given to option ``name`` (``--name value`` or ``--name=value``)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def check_family(info: dict[str, Any], path: Path, family: str | None) -> None:
    """The checkpoint ``path`` (its ``ganbench`` entry ``info``) belongs to ``family``."""
    if family is not None and info.get("family") != family:
        raise GanbenchError(
            f"ckpt_path={str(path)!r} is a checkpoint of family {info.get('family')!r} ({info.get('class_path')}) "
            f"but the config's model is family {family!r}; resume with the config of that run or start a new one")


def check_output_dir(root: Path) -> None:
    """``trainer.default_root_dir`` can be created and written (probed with a file that is removed)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".ganbench-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise GanbenchError(f"trainer.default_root_dir={str(root)!r} is not a writable directory "
                            f"({type(err).__name__}: {err.strerror or err}); choose another directory") from None


def newest_intact_checkpoint(folder: Path, exclude: Path | None = None) -> Path | None:
    """The newest ``*.ckpt`` in ``folder`` (by step in its name, then mtime) whose zip archive is intact."""
    candidates = [p for p in folder.glob("*.ckpt") if exclude is None or p.resolve() != exclude.resolve()]

    def key(p: Path) -> tuple[int, float]:
        m = re.search(r"step_(\d+)", p.name)
        return int(m.group(1)) if m else -1, p.stat().st_mtime

    for path in sorted(candidates, key=key, reverse=True):
        if _zip_problem(path) is None:
            return path
    return None


def _zip_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete torch zip archive (None when it is): torch.save's zip format puts
    its directory at the end, so a truncated file has none, and CRCs catch damaged records."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"{type(err).__name__}: {err}"
    return None if bad is None else f"record {bad} fails its CRC check"


def inspect_checkpoint(path: Path) -> dict[str, Any]:
    """The ``ganbench`` entry of a complete checkpoint (see :func:`read_checkpoint`)."""
    return read_checkpoint(path)["ganbench"]


def read_checkpoint(path: Path, option: str = "ckpt_path", use: str = "resume with --ckpt_path") -> dict[str, Any]:
    """A complete ganbench checkpoint (memory-mapped, nothing built from it), or one ``GanbenchError``
    line: a directory, missing, empty, truncated or corrupt (naming the newest intact checkpoint of the
    same folder: ``<use> <path>``), or not written by ganbench. ``option`` is the flag the path came from."""
    if path.is_dir():
        raise GanbenchError(f"{option}={str(path)!r} is a directory; give a checkpoint file "
                            f"(e.g. {path / 'checkpoints' / 'last.ckpt'}) or --ckpt_path last")
    if not path.is_file():
        raise GanbenchError(f"{option}={str(path)!r} does not exist")
    problem = "the file is empty" if path.stat().st_size == 0 else _zip_problem(path)
    ckpt: Any = None
    if problem is None:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
            problem = f"{type(err).__name__}: {err}".splitlines()[0]
    if problem is not None:
        good = newest_intact_checkpoint(path.parent, exclude=path)
        hint = f"the newest intact checkpoint is {good}; {use} {good}" if good else \
            "no intact checkpoint is left in that folder"
        raise GanbenchError(f"checkpoint {path} is truncated or corrupt ({problem}); {hint}")
    if not isinstance(ckpt, dict) or not ckpt.get("ganbench"):
        raise GanbenchError(f"checkpoint {path} was not written by ganbench (no 'ganbench' entry)")
    return ckpt


def resolve_ckpt_path(ckpt_path: str | None, root: Path) -> Path | None:
    """The file ``--ckpt_path`` means: ``last`` is ``<run>/checkpoints/last.ckpt`` (None when the run has
    none yet, as Lightning then starts from scratch); other keywords (``best``, ``hpc``) are Lightning's."""
    if ckpt_path is None or ckpt_path in ("best", "hpc", "registry"):
        return None
    if ckpt_path == "last":
        path = root / "checkpoints" / "last.ckpt"
        return path if path.exists() else None
    return Path(ckpt_path)


def plan_resume(ckpt_path: str | None, root: Path) -> tuple[Path | None, str | None]:
    """The checkpoint file a fit in run directory ``root`` starts from (None: a new run) and a notice
    to print. ``last`` without ``last.ckpt`` falls back to the newest intact ``step_*.ckpt``; a new run
    (no ``--ckpt_path``) in a directory that holds checkpoints is refused, so none is overwritten."""
    folder = root / "checkpoints"
    try:
        existing = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    except OSError as err:
        raise GanbenchError(f"{folder} cannot be read ({type(err).__name__}: {err.strerror or err})") from None
    if ckpt_path is None:
        if existing:
            raise GanbenchError(f"trainer.default_root_dir={str(root)!r} already holds checkpoints "
                                f"({', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''}); resume with "
                                "--ckpt_path last, or choose a new directory")
        return None, None
    if ckpt_path != "last":
        return resolve_ckpt_path(ckpt_path, root), None
    last = folder / "last.ckpt"
    if last.exists() or not existing:
        return (last if last.exists() else None), None
    good = newest_intact_checkpoint(folder)
    if good is None:
        raise GanbenchError(f"--ckpt_path last: {last} is missing and no checkpoint in {folder} is intact; "
                            "start a new run in another directory")
    return good, f"ganbench: {last} is missing; resuming from the newest intact checkpoint {good}"


def check_loadable(ckpt: dict[str, Any], path: Path, model: torch.nn.Module) -> None:
    """The checkpoint's weights fit ``model``: same parameter and buffer names and shapes."""
    saved = {k: tuple(v.shape) for k, v in ckpt.get("state_dict", {}).items() if isinstance(v, torch.Tensor)}
    now = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = [f"{k} {saved[k]} -> {now[k]}" for k in sorted(set(saved) & set(now)) if saved[k] != now[k]]
    problems += [f"{k} missing in the checkpoint" for k in sorted(set(now) - set(saved))]
    problems += [f"{k} not in the model" for k in sorted(set(saved) - set(now))]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise GanbenchError(f"checkpoint {path} cannot be loaded into the configured model, even with "
                            f"--run.allow_changed_config: {'; '.join(problems[:3])}{more}")

"""The ``ganbench`` command line.

``ganbench fit|validate|test|predict`` is a :class:`lightning.pytorch.cli.LightningCLI` (YAML configs,
``--print_config``, ``class_path``/``init_args`` model injection, optimizer injection). Values that
the data decide — sample shape and number of classes — are linked from the data module into the
model, so a config never states them twice. Other sub-commands (``evaluate``, ``sample``,
``train-features``, …) are plain functions in :mod:`ganbench.commands`, listed in :data:`COMMANDS`.

Every run directory (``--trainer.default_root_dir``, default ``runs/<family>-<timestamp>``) holds
``config.yaml``, ``metrics.csv``, ``checkpoints/``, ``samples/``, ``wandb/`` and ``summary.json``.
User errors print one line ``ganbench: error: …`` and exit with code 2; a diverged run exits
with code 3 (its summary.json says where and why).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
import time
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ganbench import GanbenchError, find_user_error
from ganbench.history import HistoryCSVLogger, check_resume_compatible, signature_defaults
from ganbench.reliability import (
    EXIT_INTERRUPTED,
    ResumeState,
    check_argv,
    check_family,
    check_loadable,
    check_output_dir,
    file_system_error,
    plan_resume,
    read_checkpoint,
)

#: sub-commands that are not Lightning's: name → module with ``main(argv) -> int``
COMMANDS: dict[str, str] = {
    "run": "ganbench.commands.run",
    "evaluate": "ganbench.commands.evaluate",
    "sample": "ganbench.commands.sample",
    "train-features": "ganbench.commands.train_features",
    "bench": "ganbench.commands.bench",
    "sweep": "ganbench.commands.sweep",
    "leaderboard": "ganbench.commands.leaderboard",
}

#: commands that stop at once on SIGTERM/SIGINT (:mod:`ganbench.signals`); fit and sweep checkpoint first
STOPS_ON_SIGNALS = ("evaluate", "sample", "train-features", "bench", "leaderboard")

EXIT_USAGE = 2
EXIT_DIVERGED = 3


class ConfigToLoggers(SaveConfigCallback):
    """Save config.yaml in the run directory and send the full config to every logger (W&B).

    A resumed run keeps the config.yaml of the first segment and saves its own as
    ``resumes/config_step_XXXXXXX.yaml`` (the G iteration it resumes from; see :meth:`resume_from`)."""

    def resume_from(self, root: Path, step: int) -> None:
        """Save this segment's config under ``resumes/`` (a new name when one of that step exists)."""
        name, n = f"resumes/config_step_{step:07d}.yaml", 1
        while (root / name).exists():
            n += 1
            name = f"resumes/config_step_{step:07d}-{n}.yaml"
        self.config_filename = name

    def setup(self, trainer, pl_module, stage: str) -> None:
        log_dir = None if self.already_saved else trainer.log_dir  # a broadcast under DDP: every rank asks
        if trainer.is_global_zero and log_dir is not None:
            Path(log_dir, self.config_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="yaml")
        import yaml
        from lightning.pytorch.loggers import WandbLogger

        as_dict = yaml.safe_load(config)
        as_dict.update(dict(self.config.get("run.wandb_config") or {}))  # top level of the W&B config: searchable
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(as_dict, allow_val_change=True)


class GanbenchCLI(LightningCLI):
    def __init__(self, *args: Any, created_dirs: list[Path] | None = None, **kwargs: Any):
        from ganbench.data import GANDataModule
        from ganbench.models import GANModule

        #: run directories this invocation creates (the caller's list: filled before anything can fail)
        self.created_dirs = created_dirs if created_dirs is not None else []

        kwargs.setdefault("save_config_callback", ConfigToLoggers)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # ganbench's defaults: a config file states only what differs from them and from its family
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("trainer_defaults", {
            "max_steps": 50000,  # G iterations (each = n_critic D updates + 1 G update)
            "devices": 1,
            "num_sanity_val_steps": 0,
            "limit_val_batches": 0,
            "log_every_n_steps": 50,
        })
        super().__init__(GANModule, GANDataModule, *args, subclass_mode_model=True, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Lightning's parser, whose ``--config`` completes a family config with its paper optimizer
        (:class:`ganbench.config_file.FamilyConfigFile`)."""
        from ganbench.config_file import FamilyConfigFile

        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.pytorch.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=FamilyConfigFile,
                            help="Path to a configuration file in json or yaml format.")
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.shape", "model.init_args.data_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.add_argument("--run.sample_every", type=int, default=1000,
                            help="G iterations between sample grids (samples/step_XXXXXXX.png)")
        parser.add_argument("--run.checkpoint_every", type=int, default=5000,
                            help="G iterations between kept checkpoints (checkpoints/last.ckpt always)")
        parser.add_argument("--run.metrics_every", type=int, default=1000,
                            help="G iterations between metric evaluations (and at the last step); 0 turns them off. "
                                 "Toy data: modes covered, high-quality fraction, KL, exact W1. Images: see "
                                 "--run.image_features")
        parser.add_argument("--run.image_features", type=Literal["auto", "none", "inception", "fmnist", "digits"],
                            default="auto",
                            help="feature net of the image metrics (FD/IS/KID/PR keyed by it); auto = the domain net "
                                 "of fashion_mnist/digits when its weights exist (ganbench train-features)")
        parser.add_argument("--run.image_metrics_n", type=int, default=10000, help="generated samples per evaluation")
        parser.add_argument("--run.diagnostics_every", type=int, default=50,
                            help="G iterations between gradient-norm / spectral-norm diagnostics; 0 turns them off")
        parser.add_argument("--run.threads", type=int, default=0,
                            help="torch threads of a CPU fit; 0 = one per core that other busy processes leave "
                                 "free, checked every 30 s (the environment's OMP_NUM_THREADS, when set, wins)")
        parser.add_argument("--run.allow_changed_config", type=bool, default=False,
                            help="resume although model or data settings differ from the checkpoint's "
                                 "(docs/reliability.md lists the changes that are always allowed)")
        parser.add_argument("--run.wandb", type=bool, default=True,
                            help="log to Weights & Biases (offline unless WANDB_API_KEY or WANDB_MODE say otherwise)")
        parser.add_argument("--run.wandb_project", type=str, default="ganbench")
        parser.add_argument("--run.wandb_group", type=str | None, default=None)
        parser.add_argument("--run.wandb_tags", type=list[str], default=[])
        parser.add_argument("--run.wandb_name", type=str | None, default=None,
                            help="W&B run name (default: the run directory's name)")
        parser.add_argument("--run.wandb_config", type=dict, default={},
                            help="extra top-level W&B config keys (a sweep puts trial, cell, factors and nuisance "
                                 "values here)")

    def _parse_ckpt_path(self) -> None:
        """For ``fit``, LightningCLI would replace the configured model arguments by the checkpoint's when
        ``--ckpt_path`` is a file, so a changed setting would be silently ignored (and ``last`` would behave
        differently from an explicit path). ganbench keeps the configuration as given and compares it with
        the checkpoint's in :meth:`before_fit`; validate/test/predict keep Lightning's behaviour."""
        if self.config.get("subcommand") != "fit":
            super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.default_root_dir is None:
            family = cfg.model.class_path.rsplit(".", 1)[-1].lower()
            # one name for every rank: processes Lightning launches inherit this environment
            job = os.environ.get("SLURM_JOB_ID")
            default_stamp = f"slurm{job}" if job else time.strftime("%Y%m%d-%H%M%S")
            stamp = os.environ.setdefault("GANBENCH_RUN_STAMP", default_stamp)
            cfg.trainer.default_root_dir = str(Path("runs") / f"{family}-{stamp}")
        root = Path(cfg.trainer.default_root_dir)
        for key in ("sample_every", "checkpoint_every", "metrics_every", "diagnostics_every", "threads"):
            if cfg.run[key] < 0:
                meaning = "choose from the load" if key == "threads" else "never"
                raise GanbenchError(f"run.{key} must be >= 0 (0: {meaning}), got {cfg.run[key]}")
        if cfg.run.image_metrics_n < 2:
            raise GanbenchError(f"run.image_metrics_n must be >= 2 (a covariance needs two samples), "
                                f"got {cfg.run.image_metrics_n}")
        # a directory this invocation creates may be removed again if the run fails on a user error
        # before it holds a checkpoint (remove_failed_run_dir)
        if not root.exists():
            self.created_dirs.append(root)
        check_output_dir(root)

    def instantiate_trainer(self, **kwargs: Any):
        from ganbench.callbacks import GANCheckpoint, GIterationBar, LogStep, ParameterSummary, RunSummary, SampleGrid
        from ganbench.callbacks.threads import CpuThreads

        cfg = self.config[self.subcommand] if self.subcommand else self.config
        root = Path(cfg.trainer.default_root_dir)
        run = cfg.run
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        if trainer_cfg.get("logger") in (None, True):
            kwargs["logger"] = self.make_loggers(root, run)
        callbacks = [CpuThreads(run.threads), ResumeState(), RunSummary(), LogStep(),
                     SampleGrid(every_n_steps=run.sample_every),
                     GANCheckpoint(dirpath=str(root / "checkpoints"), every_n_train_steps=run.checkpoint_every)]
        if trainer_cfg.get("enable_model_summary", True) is not False:
            callbacks.append(ParameterSummary())  # instead of Lightning's, which prints 0 FLOPs
            kwargs["enable_model_summary"] = False
        if trainer_cfg.get("enable_progress_bar", True) is not False:
            callbacks.append(GIterationBar())
        callbacks += self.metric_callbacks(run)
        self.trainer_defaults["callbacks"] = callbacks
        try:
            return super().instantiate_trainer(**kwargs)
        except (ValueError, TypeError, ImportError, MisconfigurationException) as err:
            # Lightning validates accelerator, precision, strategy, ... here; a missing backend is an ImportError
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise GanbenchError(f"trainer: {first}") from None

    def before_fit(self) -> None:
        """Check a resume before anything in the run directory is touched: a complete checkpoint of the
        configured family, model and data settings compatible with it, ``max_steps`` not below its step,
        a writable checkpoint folder. ``last`` without ``last.ckpt`` resumes from the newest intact
        ``step_*.ckpt`` (with a notice); the config of a resumed segment goes to ``resumes/``."""
        cfg = self.config.fit
        root = Path(cfg.trainer.default_root_dir)
        path, notice = plan_resume(cfg.ckpt_path, root)
        if path is None:
            return
        ckpt = read_checkpoint(path)
        check_family(ckpt["ganbench"], path, getattr(self.model, "family", None))
        changes = check_resume_compatible(ckpt, path, dict(self.model.hparams), dict(self.datamodule.hparams),
                                          cfg.trainer.max_steps, cfg.run.allow_changed_config,
                                          signature_defaults(self.model), signature_defaults(self.datamodule))
        check_loadable(ckpt, path, self.model)
        folder = root / "checkpoints"
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise GanbenchError(f"{folder} is not writable; the run cannot save its checkpoints there "
                                "(make it writable, or resume into another --trainer.default_root_dir)")
        if notice:
            print(notice, file=sys.stderr)
        if changes:
            print(f"ganbench: resuming with changed settings: {'; '.join(changes)}", file=sys.stderr)
        self.config_init.fit.ckpt_path = str(path)
        for cb in self.trainer.callbacks:
            if isinstance(cb, ConfigToLoggers) and (root / cb.config_filename).exists():
                cb.resume_from(root, int(ckpt.get("global_step", 0)))
            if isinstance(cb, ResumeState):  # torch restores lr, betas, ... with the optimizer state
                cb.optimizer_settings_from_config = any("_optimizer." in c for c in changes)

    def metric_callbacks(self, run) -> list:
        """Diagnostics and D's overfitting signal always; toy metrics for 2-D data; image metrics with
        the chosen feature net."""
        from ganbench.callbacks.metrics import Diagnostics, ImageMetrics, ToyMetrics
        from ganbench.callbacks.overfit import DiscriminatorOverfit

        callbacks: list = ([Diagnostics(every_n_steps=run.diagnostics_every),
                            DiscriminatorOverfit(every_n_steps=run.diagnostics_every)]
                           if run.diagnostics_every > 0 else [])
        dm = getattr(self, "datamodule", None)
        if run.metrics_every <= 0 or dm is None:
            return callbacks
        if dm.is_toy:
            if dm.mixture is not None:
                callbacks.append(ToyMetrics(every_n_steps=run.metrics_every))
            return callbacks
        features = run.image_features
        if features == "auto":
            features = dm.info.features or "none"
            if features != "none":
                from ganbench.metrics.features import find_domain_weights

                try:
                    find_domain_weights(features)
                except GanbenchError as err:
                    print(f"ganbench: no image metrics during training ({err})", file=sys.stderr)
                    features = "none"
        if features != "none":
            callbacks.append(ImageMetrics(every_n_steps=run.metrics_every, n_fake=run.image_metrics_n,
                                          features=features))
        return callbacks

    def make_loggers(self, root: Path, run) -> list:
        from ganbench.callbacks.log import RunWandbLogger

        loggers: list = [HistoryCSVLogger(save_dir=str(root))]
        if run.wandb and os.environ.get("WANDB_MODE") != "disabled":
            offline = not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") is None
            root.mkdir(parents=True, exist_ok=True)
            loggers.append(RunWandbLogger(save_dir=str(root), project=run.wandb_project,
                                          name=run.wandb_name or root.name, group=run.wandb_group,
                                          tags=list(run.wandb_tags) or None, offline=offline, log_model=False))
        return loggers


def keep_failed_run_dir(root: Path) -> bool:
    """Remove the run directory ``root`` that a failed invocation created, unless it holds a checkpoint
    (a checkpoint is history: ganbench never deletes one). Returns whether a directory is kept."""
    if not root.is_dir():
        return False
    if any(root.rglob("*.ckpt")):
        return True
    shutil.rmtree(root, ignore_errors=True)
    return False


def _run_lightning(argv: list[str]) -> int:
    check_argv(argv)
    created: list[Path] = []
    try:
        cli = GanbenchCLI(args=argv, auto_configure_optimizers=False, parser_kwargs={"exit_on_error": False},
                          created_dirs=created)
    except ArgumentError as err:
        raise GanbenchError(parse_error_line(str(err))) from None
    except SIGTERMException:
        print("ganbench: interrupted by SIGTERM; last.ckpt and summary.json are written, resume with --ckpt_path last",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        user_error = find_user_error(err) or file_system_error(err)
        kept = [root for root in created if keep_failed_run_dir(root)]
        for root in kept:
            print(f"ganbench: the run directory {root} holds checkpoints and is kept; resume it with "
                  f"--trainer.default_root_dir {root} --ckpt_path last", file=sys.stderr)
        if user_error is None:
            raise
        raise user_error from None
    finally:
        _finish_wandb()
    model = getattr(cli, "model", None)
    if getattr(model, "status", None) == "diverged":
        div = model.divergence or {}
        kept = f"; last finite checkpoint: {div['last_finite']}" if div.get("last_finite") else \
            "; no finite checkpoint was written before it"
        print(f"ganbench: run diverged at G iteration {div.get('step')}: {div.get('reason')}{kept}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


_NOISE = ("Does not validate against", "Subtypes:", "Errors:", "Expected a <class 'NoneType'>", "Given value type:",
          "Given value:", "Parser key", "Problem with given class_path")


_NON_FINITE = ("inf", "nan", "infinity")


def parse_error_line(message: str) -> str:
    """jsonargparse's (multi-line, union-nested) parse error as one line naming the full key.

    ``Parser key "model": … class_path 'ganbench.models.SNGAN': Parser key "g_norm": Expected a
    typing.Literal['none', …]. Got value: weird`` becomes ``model.init_args.g_norm: expected one of
    none, …; got 'weird'``."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    nested = re.search(r"Problem with given class_path '([^']+)'", message)
    key = ".init_args.".join([keys[0], ".".join(keys[1:])]) if nested and keys else ".".join(keys)
    key = key.rstrip(".")
    reasons = []
    for line in message.splitlines():
        line = line.strip().lstrip("-").strip()
        if line and not line.startswith(_NOISE):
            literal = re.match(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)$", line)
            if literal:
                line = f"expected one of {literal.group(1).replace(chr(39), '')}; got {literal.group(2)!r}"
            reasons.append(line)
    reason = "; ".join(dict.fromkeys(reasons)) or message.strip().splitlines()[0]
    word = re.search(r"(?:Got value|import path string): (\S+)", message)
    if word and "Expected a <class 'float'>" in message and word.group(1).lower().lstrip("+-") in _NON_FINITE:
        if "expects a function or a callable class" in message and "." in key:  # an optimizer's init_args
            head, _, last = key.rpartition(".")
            key = f"{head}.init_args.{last}"
        reason = f"expected a finite number; got {word.group(1)!r}"
    if nested:
        reason += f" ({nested.group(1)})"
    return f"{key}: {reason}; ganbench fit --help lists the options" if key else \
        f"{reason}; ganbench fit --help lists the options"


def _finish_wandb() -> None:
    """Close the W&B run of this fit, so a process can run several fits (tests, sweeps)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def run(argv: list[str]) -> int:
    """Run one ganbench command; bad input raises :class:`GanbenchError` (what :func:`main` prints)."""
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]])
        if argv[0] not in STOPS_ON_SIGNALS:
            return int(module.main(argv[1:]) or 0)
        from ganbench.signals import Interrupted, stop_on_signals

        try:
            with stop_on_signals():
                return int(module.main(argv[1:]) or 0)
        except Interrupted as stop:
            print(f"ganbench {argv[0]}: stopped by {stop}; every file it wrote is complete", file=sys.stderr)
            return stop.exit_code
    return _run_lightning(argv)


def main(argv: list[str] | None = None) -> int:
    from ganbench.callbacks.log import quiet_library_noise

    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_library_noise()
    try:
        return run(argv)
    except GanbenchError as err:
        print(f"ganbench: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

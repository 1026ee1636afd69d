"""One tiny ``ganbench fit`` for the tests: its command line and what it wrote.

``tiny_fit(root, "sngan", *args)`` runs ``ganbench fit --config configs/sngan.yaml`` in this process into
the run folder ``root`` for ``steps`` G iterations (from ``seed`` when given), with a test file's ``base``
arguments (sizes, data, intervals; built from the pieces below) and then ``args``, and returns a
:class:`Fit`: the run folder, the exit code, summary.json and the last checkpoint. ``tiny_argv`` is the
same command line, for a test that runs it another way (a subprocess, ``pytest.raises``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: on the CPU, without a progress bar or a parameter table
CPU = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
       "false"]
#: no W&B, no metric evaluations, no gradient diagnostics
NO_EXTRAS = ["--run.wandb", "false", "--run.metrics_every", "0", "--run.diagnostics_every", "0"]
#: networks of width 4 on batches of 8
SMALL = ["--model.init_args.width", "4", "--data.batch_size", "8"]
#: the 2-D ring of 8 Gaussians, 512 or 2 000 points
RING8 = ["--data.dataset", "ring8", "--data.n_toy_samples", "512"]
RING8_2000 = ["--data.dataset", "ring8", "--data.n_toy_samples", "2000"]
#: a small fit that writes every output: a sample grid and a checkpoint every 2 G iterations, a metrics.csv
#: row every iteration, W&B (offline) and image metrics on 256 samples
TINY = [*SMALL, "--trainer.accelerator", "cpu", "--run.sample_every", "2", "--run.checkpoint_every", "2",
        "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1", "--run.image_metrics_n", "256"]


@dataclass(frozen=True)
class Fit:
    root: Path
    code: int

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads((self.root / "summary.json").read_text())

    def checkpoint(self) -> dict[str, Any]:
        return torch.load(self.root / "checkpoints" / "last.ckpt", weights_only=False)


def config_path(config: str) -> str:
    """``configs/<config>.yaml`` for a shipped config's name, else ``config`` itself."""
    return config if config.endswith(".yaml") else f"configs/{config}.yaml"


def tiny_argv(root: Path | str, config: str, *args: str, steps: int = 3, seed: int | None = None,
              base: list[str] | tuple[str, ...] = ()) -> list[str]:
    seed_args = ["--seed_everything", str(seed)] if seed is not None else []
    return ["fit", "--config", config_path(config), "--trainer.default_root_dir", str(root), *seed_args,
            "--trainer.max_steps", str(steps), *base, *args]


def tiny_fit(root: Path | str, config: str, *args: str, steps: int = 3, seed: int | None = None,
             base: list[str] | tuple[str, ...] = (), check: bool = True) -> Fit:
    """Run the fit; with ``check``, require exit code 0."""
    from ganbench.cli import main

    argv = tiny_argv(root, config, *args, steps=steps, seed=seed, base=base)
    code = main(argv)
    if check:
        assert code == 0, argv
    return Fit(Path(root), code)

"""Kill a ``ganbench fit`` and resume it: the resumed run must end bit-identical to an uninterrupted one.

    python scripts/kill_resume.py --config configs/sngan.yaml --signal KILL --steps 16 --at 5 -- <overrides>

runs, in subprocesses, (a) an uninterrupted fit of ``--steps`` G iterations and (b) the same fit, sent
``--signal`` once it has passed G iteration ``--at`` (SIGKILL: once ``checkpoints/step_*.ckpt`` of that
step exists; SIGTERM: once the pace marker says so), then resumed with ``--ckpt_path last``; and compares
every tensor of both final ``last.ckpt`` (G, D, EMA, buffers, both optimizers) with ``torch.equal``.
tests/test_reliability.py uses the same functions. :class:`Pace` (added with ``--trainer.callbacks+``)
slows each G iteration down by a fixed sleep — it touches no state and draws no random numbers — so
the signal lands while the run is still going, and writes the step it reached to a marker file.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

__all__ = ["Pace", "compare_checkpoints", "fit_argv", "interrupt", "start_fit"]

SCRIPTS = Path(__file__).resolve().parent
GANBENCH = Path(sys.executable).with_name("ganbench")


class Pace(L.Callback):
    """Sleeps ``seconds`` after every G iteration and writes the step reached to ``marker``."""

    def __init__(self, seconds: float = 0.05, marker: str = "pace.txt"):
        self.seconds = seconds
        self.marker = marker

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        path = Path(trainer.default_root_dir) / self.marker
        path.write_text(str(trainer.global_step))
        time.sleep(self.seconds)


def fit_argv(config: str, root: Path, steps: int, *overrides: str, pace: float = 0.05) -> list[str]:
    """The command line of a tiny deterministic CPU fit with :class:`Pace`."""
    return [str(GANBENCH), "fit", "--config", config, "--trainer.default_root_dir", str(root),
            "--trainer.max_steps", str(steps), "--trainer.accelerator", "cpu", "--trainer.deterministic", "true",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--run.wandb", "false", "--run.metrics_every", "0", "--run.diagnostics_every", "0",
            "--run.sample_every", "100000", "--trainer.callbacks+=kill_resume.Pace",
            "--trainer.callbacks.seconds", str(pace), *overrides]


def start_fit(argv: list[str], log: Path) -> subprocess.Popen:
    """Start a fit with its output in ``log`` (a file, not a pipe: a full pipe would block the child)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}  # threads beyond the cores make a tiny fit crawl
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)


def _reached(root: Path, sig: signal.Signals) -> int:
    if sig == signal.SIGKILL:
        steps = [int(p.stem.split("_")[1]) for p in (root / "checkpoints").glob("step_*.ckpt")]
        return max(steps, default=-1)
    marker = root / "pace.txt"
    try:
        return int(marker.read_text() or -1)
    except (FileNotFoundError, ValueError):
        return -1


def interrupt(proc: subprocess.Popen, root: Path, at: int, sig: signal.Signals, timeout: float = 300) -> int:
    """Send ``sig`` to ``proc`` once it has passed G iteration ``at``; wait for it; return its exit code."""
    deadline = time.monotonic() + timeout
    while _reached(root, sig) < at:
        if proc.poll() is not None:
            raise RuntimeError(f"the fit ended (rc={proc.returncode}) before step {at}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"step {at} not reached in {timeout} s")
        time.sleep(0.005)
    proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def compare_checkpoints(a: Path, b: Path) -> list[str]:
    """Names of the tensors/values that differ between two checkpoints (model state, optimizers,
    ganbench entry, global step); an empty list means bit-identical."""
    ca = torch.load(a, map_location="cpu", weights_only=False)
    cb = torch.load(b, map_location="cpu", weights_only=False)
    diffs: list[str] = []

    def walk(x: Any, y: Any, name: str) -> None:
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            same = isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype \
                and x.shape == y.shape and torch.equal(x, y)
            if not same:
                diffs.append(name)
        elif isinstance(x, dict) and isinstance(y, dict):
            if set(x) != set(y):
                diffs.append(f"{name} keys")
            for k in set(x) & set(y):
                walk(x[k], y[k], f"{name}.{k}")
        elif isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{name}[{i}]")
        elif x != y:
            diffs.append(name)

    for key in ("state_dict", "optimizer_states", "ganbench", "global_step"):
        walk(ca.get(key), cb.get(key), key)
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/sngan.yaml")
    p.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--at", type=int, default=5)
    p.add_argument("--out", default="runs/kill_resume")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    out, sig = Path(args.out), signal.Signals[f"SIG{args.signal}"]
    every = "1" if sig == signal.SIGKILL else "100000"
    common = ["--run.checkpoint_every", every, *args.overrides]
    ref = start_fit(fit_argv(args.config, out / "reference", args.steps, *common), out / "reference.log")
    killed = start_fit(fit_argv(args.config, out / "resumed", args.steps, *common), out / "killed.log")
    print(f"interrupted run: exit code {interrupt(killed, out / 'resumed', args.at, sig)}")
    resumed = start_fit(fit_argv(args.config, out / "resumed", args.steps, *common, "--ckpt_path", "last"),
                        out / "resumed.log")
    for proc, name in ((ref, "reference"), (resumed, "resumed")):
        if proc.wait() != 0:
            print(f"the {name} fit failed: see {out / name}.log", file=sys.stderr)
            return 1
    diffs = compare_checkpoints(out / "reference/checkpoints/last.ckpt", out / "resumed/checkpoints/last.ckpt")
    print("bit-identical" if not diffs else f"differ: {', '.join(sorted(diffs))}")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())

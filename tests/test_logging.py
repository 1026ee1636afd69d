"""What a fit prints and logs: no library noise, every evaluation once at its G iteration, the last step
always in metrics.csv; read back through csv and W&B's own offline reader (`wandb leet inspect`)."""

import csv
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

from ganbench.callbacks.log import UNACTIONABLE, quiet_library_noise
from ganbench.cli import main
from tests.tiny import RING8_2000, tiny_fit
from tests.wandb_log import history

#: a line that is a Python warning, a W&B/Lightning warning, an advert, or the unmeasured-FLOPs summary
WARNING_LINE = re.compile(r"warn|deprecat|\.py:\d+: |Tip:|FLOPs|exists and is not empty", re.IGNORECASE)


def csv_rows(root: Path) -> list[dict]:
    with open(root / "metrics.csv") as f:
        return list(csv.DictReader(f))


def steps_with(rows: list[dict], key: str) -> list[int]:
    return [int(r["step"]) for r in rows if r.get(key) not in (None, "")]


def test_fresh_fit_prints_no_warning_lines_and_writes_its_last_step(tmp_path):
    """The documented first command on a fresh directory: no warning lines, and metrics.csv holds G iteration 3
    although log_every_n_steps is 50."""
    root = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.run([sys.executable, "-m", "ganbench.cli", "fit", "--config", "configs/sngan.yaml",
                           "--trainer.max_steps", "3", "--trainer.default_root_dir", str(root)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    noisy = [line for line in lines if WARNING_LINE.search(line)]
    assert noisy == [], noisy
    assert any("G-iterations" in line for line in lines)  # ganbench's own progress is still there
    rows = csv_rows(root)
    assert [int(r["step"]) for r in rows] == [3]
    summary = json.loads((root / "summary.json").read_text())
    assert float(rows[0]["train/d_loss"]) == summary["metrics"]["train/d_loss"]


def test_only_the_listed_library_warnings_are_filtered():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_library_noise()
        warnings.warn("You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a "
                      "`LightningDataModule`. It will use the implementation from `LightningModule`.", stacklevel=1)
        warnings.warn("Metric `Kernel Inception Distance` will save all extracted features in buffer.", stacklevel=1)
        warnings.warn("The number of training batches (3) is smaller than the logging interval", stacklevel=1)
    assert [str(w.message) for w in seen] == ["The number of training batches (3) is smaller than the logging interval"]
    assert len(UNACTIONABLE) == 4


def test_each_evaluation_is_logged_once_at_the_g_iteration_it_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    root = tmp_path / "run"
    tiny_fit(root, "sngan", *RING8_2000, "--model.init_args.width", "8", "--data.batch_size", "16",
             "--model.init_args.g_batch_size", "16", "--trainer.accelerator", "cpu", "--trainer.log_every_n_steps", "2",
             "--run.metrics_every", "5", "--run.diagnostics_every", "4", "--run.sample_every", "5",
             "--trainer.enable_progress_bar", "false", steps=9)
    rows = csv_rows(root)
    assert steps_with(rows, "train/d_loss") == [2, 4, 6, 8, 9]  # every 2nd G iteration and the last
    assert steps_with(rows, "val/w1_exact_1k") == [0, 5, 9]  # at initialization, at 5 and at the end, never repeated
    assert steps_with(rows, "diag/grad_norm_d") == [4, 8]
    assert len({int(r["step"]) for r in rows}) == len(rows)  # one row per G iteration
    summary = json.loads((root / "summary.json").read_text())
    last = [r for r in rows if r["step"] == "9"][0]
    assert float(last["val/w1_exact_1k"]) == summary["metrics"]["val/w1_exact_1k"]
    assert "step" not in summary["metrics"]

    hist = history(next(root.glob("wandb/*run-*")))
    at = {}
    for item in hist:
        for key in ("val/w1_exact_1k", "val/toy_scatter", "samples", "train/d_loss"):
            if key in item or f"{key}._type" in item:  # a picture: its fields flattened
                at.setdefault(key, []).append(item["trainer/global_step"])
    # scalars and pictures of one evaluation together
    assert at["val/w1_exact_1k"] == at["val/toy_scatter"] == [0, 5, 9]
    assert at["samples"] == [5, 9]
    assert at["train/d_loss"] == [2, 4, 6, 8, 9]
    w1 = [item["val/w1_exact_1k"] for item in hist if "val/w1_exact_1k" in item]
    assert w1 == [float(r["val/w1_exact_1k"]) for r in rows if r["val/w1_exact_1k"]]


def test_bench_help_states_its_whole_description(capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "against a plain-PyTorch loop of the same networks, optimizers, losses and batch sizes, in the same " \
           "process." in out
    assert "--block 0 runs the plain loop first, then ganbench" in out  # the rest of the docstring as epilog
    assert "timed G iterations per loop" in out

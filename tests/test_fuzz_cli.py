"""Fuzz the command line: random config overrides end in a run or in one error line, never a traceback.

Each case draws 1-3 overrides from :data:`KEYS` — values of the wrong type, out of range, non-finite,
unknown names, unknown keys — and runs ``ganbench fit`` for one G iteration on a tiny 2-D problem in
this process. Every case must return 0 (a run; summary.json ``completed``), 3 (diverged; summary.json
says so) or 2 with exactly one ``ganbench: error:`` line; an exception escaping ``main`` fails the test.
Values that only ask for more memory than the machine has (``model.width=10**9``) are not drawn: they
are valid requests.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ganbench.cli import EXIT_DIVERGED, EXIT_USAGE, main

BASE = ["--config", "configs/sngan.yaml", "--data.dataset", "ring8", "--data.n_toy_samples", "256",
        "--data.batch_size", "8", "--model.init_args.width", "8", "--model.init_args.latent_dim", "4",
        "--model.init_args.n_samples", "16", "--model.init_args.g_batch_size", "8", "--trainer.accelerator", "cpu",
        "--run.wandb", "false", "--run.metrics_every", "0", "--run.diagnostics_every", "0",
        "--run.sample_every", "1000", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]

WRONG_TYPES = ["abc", "[1, 2]", "{a: 1}", "null", "true", "''", "1.5", "0x10"]
NUMBERS = ["-1", "0", "1", "2", "0.5", "-0.5", "1e30", "-1e30", "nan", "inf", "-inf", "1e-12", "12"]
NAMES = ["none", "bogus", "Spectral", "spectral ", "batch", "ns", "hinge", "gp", "wasserstein", "", "ls", "r1",
         "mlp", "cnn", "patch", "minibatch_stddev", "layer", "instance", "virtual_batch", "weight"]
#: option → values it may get (plus any wrong type)
KEYS: dict[str, list[str]] = {
    "--model.init_args.loss": NAMES,
    "--model.init_args.g_norm": NAMES,
    "--model.init_args.d_norm": NAMES,
    "--model.init_args.penalty": NAMES,
    "--model.init_args.arch": NAMES,
    "--model.init_args.d_arch": NAMES + ["same"],
    "--model.init_args.minibatch": NAMES + ["discrimination", "stddev"],
    "--model.init_args.n_critic": NUMBERS,
    "--model.init_args.latent_dim": ["-3", "0", "1", "3", "abc"],
    "--model.init_args.width": ["-4", "0", "1", "3", "16"],
    "--model.init_args.penalty_weight": NUMBERS,
    "--model.init_args.penalty_every": NUMBERS,
    "--model.init_args.g_batch_size": ["-1", "0", "1", "5", "null"],
    "--model.init_args.ema_decay": NUMBERS + ["0.999"],
    "--model.init_args.grad_clip": NUMBERS,
    "--model.init_args.label_smoothing": NUMBERS + ["0.1"],
    "--model.init_args.instance_noise": NUMBERS,
    "--model.init_args.instance_noise_steps": NUMBERS,
    "--model.init_args.feature_matching": NUMBERS,
    "--model.init_args.historical_averaging": NUMBERS,
    "--model.init_args.n_samples": ["-2", "0", "1", "7"],
    "--model.init_args.divergence_threshold": NUMBERS,
    "--model.init_args.check_every": NUMBERS,
    "--model.init_args.conditional": ["true", "false", "maybe"],
    "--model.init_args.g_optimizer.init_args.lr": NUMBERS,
    "--model.init_args.d_optimizer.init_args.betas": ["[0.5, 0.999]", "[2, 3]", "[-1, 0.9]", "0.5"],
    "--model.class_path": ["WGANGP", "LSGAN", "BEGAN", "NoSuchGAN", "ganbench.models.DCGAN", "torch.nn.Linear",
                           "EBGAN", "MMDGAN", "Pix2Pix", "CycleGAN", "StackGAN"],
    "--data.dataset": ["ring8", "grid25", "swissroll", "imagenet", "RING8"],
    "--data.batch_size": ["-8", "0", "1", "3", "100000"],
    "--data.n_toy_samples": ["-5", "0", "1", "7", "300"],
    "--data.toy_std": NUMBERS,
    "--data.resolution": ["-32", "0", "7", "16", "33"],
    "--data.num_workers": ["-1", "0", "1"],
    "--data.seed": ["-1", "0", "7", "abc"],
    "--trainer.precision": ["32", "64", "16-mixed", "bf16-mixed", "17", "fp8"],
    "--trainer.accelerator": ["cpu", "tpu", "quantum"],
    "--trainer.log_every_n_steps": ["-1", "0", "1"],
    "--trainer.deterministic": ["true", "warn", "sometimes"],
    "--run.checkpoint_every": ["-1", "0", "1"],
    "--run.sample_every": ["-1", "0", "1"],
    "--run.metrics_every": ["-1", "0", "1"],
    "--run.diagnostics_every": ["-1", "0", "1"],
    "--run.image_features": ["auto", "none", "inception", "clip"],
}
UNKNOWN = ["--model.init_args.lr", "--trainer.max_stepz", "--data.batchsize", "--run.nothing", "--modell.x"]


def draw_case(rng: random.Random) -> list[str]:
    args: list[str] = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.1:
            args += [rng.choice(UNKNOWN), rng.choice(NUMBERS)]
            continue
        key = rng.choice(sorted(KEYS))
        value = rng.choice(WRONG_TYPES) if rng.random() < 0.2 else rng.choice(KEYS[key])
        args += [key, value]
    return args


def run_case(tmp_path: Path, capsys, overrides: list[str]) -> tuple[int, str]:
    root = tmp_path / "run"
    argv = ["fit", *BASE, *overrides, "--trainer.max_steps", "1", "--trainer.default_root_dir", str(root)]
    capsys.readouterr()
    code = main(argv)  # an unhandled exception fails the test with the traceback
    err = capsys.readouterr().err
    assert "Traceback" not in err, (overrides, err)
    ours = [line for line in err.splitlines() if line.startswith("ganbench")]
    if code == 0:
        assert json.loads((root / "summary.json").read_text())["status"] == "completed", overrides
        assert not ours, (overrides, ours)
    elif code == EXIT_DIVERGED:
        assert json.loads((root / "summary.json").read_text())["status"] == "diverged", overrides
        assert len(ours) == 1 and ours[0].startswith("ganbench: run diverged at G iteration"), (overrides, ours)
    else:
        assert code == EXIT_USAGE, (overrides, code, err[-2000:])
        assert len(ours) == 1 and ours[0].startswith("ganbench: error: "), (overrides, err[-2000:])
        assert not root.exists(), overrides
    return code, ours[0] if ours else ""


def cases(seed: int, n: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [draw_case(rng) for _ in range(n)]


#: cases the 300-case slow fuzz found crashing with a traceback, pinned here with the line they now give
FOUND = {
    "negative size": (["--model.init_args.n_samples", "-2"], "ganbench: error: model.n_samples must be >= 1, got -2"),
    "null float": (["--model.init_args.ema_decay", "null"],
                   "ganbench: error: model.ema_decay must be in [0, 1) (0: no EMA), got None"),
    "negative weight": (["--model.init_args.penalty_weight", "-0.5"],
                        "ganbench: error: model.penalty_weight must be finite and >= 0, got -0.5"),
    "bad Adam betas": (["--model.init_args.d_optimizer.init_args.betas", "[-1, 0.9]"],
                       "ganbench: error: model.d_optimizer: Invalid beta parameter at index 0: -1.0"),
    "batch norm on one sample": (["--model.init_args.g_batch_size", "1"],
                                 "ganbench: error: model.g_batch_size or data.batch_size=1 is too small for batch "
                                 "normalization in G layer norms.0.norm: 1 sample x 1 position (vectors) = 1 value "
                                 "per channel, it needs >= 2; use a larger batch or a model.g_norm other than 'batch'"),
    "unknown accelerator backend": (["--trainer.accelerator", "tpu"], "ganbench: error: trainer: "),
    "negative interval": (["--run.checkpoint_every", "-1"],
                          "ganbench: error: run.checkpoint_every must be >= 0 (0: never), got -1"),
    "float64 run": (["--trainer.precision", "64"], None),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_cases_the_fuzz_found(tmp_path, capsys, name):
    overrides, line = FOUND[name]
    code, message = run_case(tmp_path, capsys, overrides)
    if line is None:
        assert code == 0
    else:
        assert code == EXIT_USAGE and message.startswith(line), message


OUTCOMES: list[int] = []


@pytest.mark.parametrize("overrides", cases(0, 40), ids=lambda a: " ".join(a)[:80])
def test_random_overrides_run_or_fail_in_one_line(tmp_path, capsys, overrides):
    OUTCOMES.append(run_case(tmp_path, capsys, overrides)[0])


@pytest.mark.slow
@pytest.mark.parametrize("overrides", cases(1, 300), ids=lambda a: " ".join(a)[:80])
def test_many_random_overrides(tmp_path, capsys, overrides):
    run_case(tmp_path, capsys, overrides)


def test_the_fuzz_cases_hit_both_outcomes():
    """Runs after the cases above: they are not all errors (or all runs), the fuzz exercises both sides."""
    if len(OUTCOMES) < 40:
        pytest.skip("needs the 40 default cases of this module to have run first")
    assert {0, EXIT_USAGE} <= set(OUTCOMES)

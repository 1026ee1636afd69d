"""Every shipped config, every sweep's base config with its overrides and ``make run``'s default
command run as shipped: only the length, the output folder, W&B and the metric interval change."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from ganbench import GanbenchError
from ganbench.cli import main
from tests.conftest import needs_fmnist

#: the only arguments added to a shipped command line
AS_SHIPPED = ["--run.wandb", "false", "--run.metrics_every", "0", "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false"]
FAMILY_CONFIGS = sorted(str(p) for p in Path("configs").glob("*.yaml"))
FRAGMENTS = sorted(str(p) for p in Path("configs").glob("*/*.yaml"))
#: in the default suite: batch 1 with batch norm (the case a size check got wrong) and the CPU toy sweep;
#: the other configs train full-size networks (15-200 s each on 2 busy cores) and run with -m slow
DEFAULT_SUITE = {"configs/pix2pix.yaml", "sweeps/toy_stability.yaml"}


def suite(paths: list[str]) -> list:
    return [p if p in DEFAULT_SUITE else pytest.param(p, marks=pytest.mark.slow) for p in paths]


def run_fit(argv: list[str], root: Path, steps: int) -> dict:
    code = main(["fit", *argv, "--trainer.max_steps", str(steps), "--trainer.default_root_dir", str(root),
                 *AS_SHIPPED])
    assert code == 0, argv
    summary = json.loads((root / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    assert summary["g_steps"] == steps
    return summary


# ------------------------------------------------------------------------------ batch norm sample count
@pytest.mark.parametrize(("shape", "n", "values"), [((1, 3, 2, 1), 1, 2), ((1, 3, 4, 4), 1, 16), ((2, 3), 2, 2),
                                                    ((1, 3, 1, 1), 1, 1), ((1, 3), 1, 1), ((4, 3, 1, 1), 1, 1)])
def test_batch_norm_check_counts_values_per_channel(shape, n, values):
    """N·H·W values per channel for maps, N for vectors, N being the smallest batch the net is trained
    with (not the size of the tensor that happens to arrive first): only fewer than 2 is rejected."""
    from ganbench.models.base import _batch_norm_count_check

    bn = nn.BatchNorm2d(3) if len(shape) == 4 else nn.BatchNorm1d(3)
    bn.register_forward_pre_hook(_batch_norm_count_check("G layer x", n, f"data.batch_size={n}", "model.g_norm"))
    x = torch.randn(shape)
    if values < 2:
        kind = "vectors" if len(shape) == 2 else "1x1 maps"
        with pytest.raises(GanbenchError, match=re.escape(
                f"data.batch_size={n} is too small for batch normalization in G layer x: {n} sample x 1 position "
                f"({kind}) = 1 value per channel, it needs >= 2")):
            bn(x)
    else:
        out = bn(x)
        dims = [0, 2, 3] if len(shape) == 4 else [0]
        ref = (x - x.mean(dims, keepdim=True)) / (x.var(dims, unbiased=False, keepdim=True) + bn.eps).sqrt()
        torch.testing.assert_close(out, ref)
        assert not bn._forward_pre_hooks  # checked once: the map size of a layer never changes


def test_batch_norm_check_ignores_eval_mode():
    from ganbench.models.base import _batch_norm_count_check

    bn = nn.BatchNorm1d(3).eval()
    bn.register_forward_pre_hook(_batch_norm_count_check("G layer x", 1, "data.batch_size=1", "model.g_norm"))
    bn(torch.randn(1, 3))
    assert len(bn._forward_pre_hooks) == 1  # still armed for the first training input


# --------------------------------------------------------------------------------------- shipped configs
@needs_fmnist
@pytest.mark.parametrize("config", suite(FAMILY_CONFIGS + FRAGMENTS))
def test_shipped_config_runs_as_shipped(config, tmp_path):
    """Batch sizes, widths, resolutions, norms and data of the file itself (Pix2Pix and CycleGAN with
    batch 1 and batch norm, as their papers train); a trainer fragment goes on top of sngan.yaml."""
    argv = ["--config", "configs/sngan.yaml", "--config", config] if config in FRAGMENTS else ["--config", config]
    run_fit(argv, tmp_path / "run", 1)


@needs_fmnist
@pytest.mark.parametrize("sweep", suite(sorted(str(p) for p in Path("sweeps").glob("*.yaml"))))
def test_sweep_base_config_runs_with_its_overrides(sweep, tmp_path):
    """The fit command a trial runs (overrides, first value of every factor, nuisance at the middle of
    its range), with the length and metric interval changed."""
    from ganbench.sweep.space import load_space

    space = load_space(sweep)
    params = {key: values[0] for key, values in space.factors.items()}
    for name, n in space.nuisance.items():
        mid = (n.low * n.high) ** 0.5 if n.log else (n.low + n.high) / 2
        params[name] = round(mid) if n.integer else mid
    argv = space.fit_argv(params, 0, tmp_path / "run", space.name, ["test"])[1:]
    run_fit(argv, tmp_path / "run", 1)


# ------------------------------------------------------------------------------------------- make run
def make_run_command() -> list[str]:
    """The ``run`` recipe of the Makefile with its default variables, minus ``$(BIN)/ganbench``."""
    text = Path("Makefile").read_text()
    defaults = dict(re.findall(r"^(\w+)[ \t]*\?=[ \t]*(.*?)[ \t]*$", text, re.M))
    recipe = re.search(r"^run:.*\n\t(.*)$", text, re.M).group(1)
    line = re.sub(r"\$\((\w+)\)", lambda m: defaults.get(m.group(1), ""), recipe.replace("$(BIN)/", ""))
    assert line.split()[0] == "ganbench", line
    return line.split()[1:]


def test_make_run_picks_the_profile_by_the_machine():
    from ganbench.commands.run import build_parser, choose_profile, fit_argv

    argv = make_run_command()
    assert argv == ["run", "--profile", "auto", "--config", "configs/sngan.yaml"]
    args, rest = build_parser().parse_known_args(argv[1:])
    assert rest == []
    assert fit_argv(choose_profile(args.profile, args.config, cuda=True), args.config, rest) == \
        ["fit", "--config", "configs/sngan.yaml"]  # with a GPU: the config as it is
    assert fit_argv(choose_profile(args.profile, args.config, cuda=False), args.config, rest) == \
        ["fit", "--config", "configs/sngan.yaml", "--config", "configs/profiles/sngan_cpu.yaml"]
    assert choose_profile("full", ["configs/sngan.yaml"], cuda=False) == "full"
    assert choose_profile("auto", ["configs/dcgan.yaml"], cuda=False) == "full"
    with pytest.raises(GanbenchError, match="--profile cpu exists for --config configs/sngan.yaml alone"):
        choose_profile("cpu", ["configs/dcgan.yaml"], cuda=False)


@needs_fmnist
def test_make_run_default_command_runs_on_a_cpu(tmp_path, monkeypatch, capsys):
    """`make run`'s command on a machine without a GPU: says it chose the CPU profile and how to run
    the full one, puts the shipped feature net into an empty cache, and ends with fd_fmnist measured
    with it and summary.json (2 G iterations here instead of 2000)."""
    from ganbench.metrics.features import SHIPPED_WEIGHTS

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "run"
    code = main([*make_run_command(), "--trainer.max_steps", "2", "--trainer.default_root_dir", str(root),
                 "--run.wandb", "false", "--run.metrics_every", "2"])
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert code == 0
    assert "ganbench: no GPU found: running the CPU profile" in out and "make run PROFILE=full" in out
    assert "the Fashion-MNIST feature net behind fd_fmnist is the one shipped with ganbench" in out
    # the end-of-run evaluation shows progress in a redirected log: its keys, its count, each tenth
    lines = [line.split(" (")[0] for line in err.splitlines() if line.startswith("ganbench: step 2: fd_fmnist_2k")]
    assert [line.rsplit(": ", 1)[1] for line in lines] == [f"{n}/2000" for n in range(250, 2001, 250)], err[-3000:]
    summary = json.loads((root / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["g_steps"] == 2
    assert summary["metrics"]["val/fd_fmnist_2k"] > 0
    assert SHIPPED_WEIGHTS["fmnist"] in json.dumps(summary["protocol"])
    assert (root / "samples" / "step_0000002.png").is_file()
    config = (root / "config.yaml").read_text()
    assert "width: 32" in config and "n_critic: 1" in config

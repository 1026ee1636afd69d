"""The shipped configs hold only what differs from ganbench's defaults and from their family class, and
each still resolves to the configuration it resolved to when it stated everything.

tests/data/resolved_configs/<name>.yaml is ``ganbench fit --config configs/<name>.yaml --print_config``
as recorded when every config stated its trainer block, seed, data, run intervals and optimizers
(``a+b.yaml``: ``configs/a.yaml`` with ``configs/<b with / as _>.yaml`` stacked on it)."""

from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path

import pytest
import yaml

from ganbench.cli import main
from ganbench.config_file import paper_optimizer_block

RESOLVED = Path("tests/data/resolved_configs")
#: recorded name → the config files stacked, in order
CASES = {**{p.stem: [str(p)] for p in sorted(Path("configs").glob("*.yaml"))},
         "sngan+profiles_sngan_cpu": ["configs/sngan.yaml", "configs/profiles/sngan_cpu.yaml"],
         "sngan+trainer_ddp": ["configs/sngan.yaml", "configs/trainer/ddp.yaml"]}


def resolved(*configs: str, args: tuple[str, ...] = ()) -> dict:
    """``ganbench fit --config …  --print_config`` as a dict."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main(["fit", *[a for c in configs for a in ("--config", c)], *args, "--print_config"])
    assert stop.value.code in (0, None), out.getvalue()
    return yaml.safe_load(out.getvalue())


def family(config: dict) -> type:
    module, _, name = config["model"]["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_config_is_recorded():
    assert sorted(p.stem for p in RESOLVED.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_resolves_as_recorded(name):
    """Equal as dicts, every key and value: the defaults a config no longer states are ganbench's
    (seed 0, one device, 50 000 G iterations, ...) and its family's paper optimizer, which the config
    file's ``--config`` writes out in full (``ganbench.config_file``), so no optimizer resolves to null."""
    before = yaml.safe_load((RESOLVED / f"{name}.yaml").read_text())
    assert resolved(*CASES[name]) == before


def test_a_changed_value_is_a_difference(tmp_path):
    """One value changed in one config makes the comparison fail (the test above can see a change)."""
    text = Path("configs/wgan.yaml").read_text()
    changed = tmp_path / "wgan.yaml"
    changed.write_text(text.replace("clip: 0.01", "clip: 0.02"))
    assert changed.read_text() != text
    before = yaml.safe_load((RESOLVED / "wgan.yaml").read_text())
    now = resolved(str(changed))
    assert now != before
    now["model"]["init_args"]["clip"] = 0.01
    assert now == before


def test_configs_state_no_paper_optimizer():
    """A config leaves its family's paper optimizer to the family class (``paper_optimizer``): an
    optimizer block in a config is one that differs from it (the Dirac-GAN's SGD, PacGAN's Adam)."""
    for path in sorted(Path("configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        args = raw["model"].get("init_args") or {}
        block = paper_optimizer_block(family(raw))
        for key in ("g_optimizer", "d_optimizer"):
            if key in args:
                assert args[key] != block, f"{path}: {key} restates the paper optimizer of its family"


def test_configs_state_no_default():
    """seed, trainer, data and run values in a family config or a profile differ from ganbench's
    defaults (what a fit without a config resolves to); configs/trainer/ddp.yaml lists the DDP options
    with what each does, defaults included."""
    defaults = resolved(args=("--model", "ganbench.models.GAN"))
    for path in sorted([*Path("configs").glob("*.yaml"), *Path("configs/profiles").glob("*.yaml")]):
        raw = yaml.safe_load(path.read_text())
        for section in ("seed_everything", "trainer", "data", "run"):
            if section not in raw:
                continue
            given = raw[section] if isinstance(raw[section], dict) else {"": raw[section]}
            for key, value in given.items():
                default = defaults[section][key] if key else defaults[section]
                assert value != default, f"{path}: {section}.{key} = {value!r} is ganbench's default"


def test_a_family_config_takes_optimizer_overrides():
    """``--model.init_args.g_optimizer.init_args.lr`` after a config that leaves the optimizer to its
    family changes the paper optimizer's learning rate, keeping its betas."""
    now = resolved("configs/sngan.yaml", args=("--model.init_args.g_optimizer.init_args.lr", "0.001"))
    g, d = now["model"]["init_args"]["g_optimizer"], now["model"]["init_args"]["d_optimizer"]
    assert g["class_path"] == "torch.optim.Adam" and g["init_args"]["lr"] == 0.001
    assert g["init_args"]["betas"] == [0.0, 0.9]
    assert d["init_args"]["lr"] == 0.0002 and d["init_args"]["betas"] == [0.0, 0.9]

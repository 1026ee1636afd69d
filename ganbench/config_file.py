"""``--config`` of the ``ganbench`` commands: a config file that names a family gets its paper optimizer.

A shipped config holds only what differs from ganbench's defaults (:class:`ganbench.cli.GanbenchCLI`:
seed 0, one device, 50 000 G iterations, …) and from the family class (its init arguments and its
``paper_optimizer``). When a config file names the model class (``model.class_path``, or ``model:
<class path>``) and leaves ``g_optimizer`` or ``d_optimizer`` out, :class:`FamilyConfigFile` writes the
family's paper optimizer into the parsed config right after the file, as if the file stated it: so
``--model.init_args.g_optimizer.init_args.lr 1e-3`` after it changes that optimizer's learning rate, and
config.yaml, ``--print_config`` and W&B show the optimizer in full. A fragment without a class path
(``configs/profiles/*.yaml``, ``configs/trainer/ddp.yaml``) changes only what it states.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import yaml
from jsonargparse import ActionConfigFile

PLAYERS = ("g_optimizer", "d_optimizer")


def paper_optimizer_block(family: type) -> dict[str, Any] | None:
    """The family's ``paper_optimizer`` as a config value (``{class_path, init_args}``), or None."""
    paper = getattr(family, "paper_optimizer", None)
    if paper is None:
        return None
    cls, kwargs = paper
    init_args = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    return {"class_path": public_path(cls), "init_args": init_args}


def public_path(cls: type) -> str:
    """The shortest import path of ``cls``: ``torch.optim.Adam`` rather than ``torch.optim.adam.Adam``."""
    parts = cls.__module__.split(".")
    for n in range(1, len(parts) + 1):
        module = ".".join(parts[:n])
        if getattr(importlib.import_module(module), cls.__name__, None) is cls:
            return f"{module}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"


def _import(path: str) -> type | None:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _left_out(value: str) -> list[str]:
    """The optimizers a config file (a path or a YAML string) leaves out although it names the model class."""
    try:
        text = open(value).read() if os.path.isfile(value) else value
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, str):
        return list(PLAYERS)
    if not isinstance(model, dict) or "class_path" not in model:
        return []
    given = model.get("init_args") or {}
    return [key for key in PLAYERS if not (isinstance(given, dict) and key in given)]


class FamilyConfigFile(ActionConfigFile):
    """:class:`jsonargparse.ActionConfigFile` that completes a family config with its paper optimizer."""

    def __call__(self, parser, cfg, values, option_string=None):
        self.apply_config(parser, cfg, self.dest, values)
        missing = _left_out(values)
        family = _import(str(cfg.get("model.class_path") or "")) if missing else None
        block = paper_optimizer_block(family) if family is not None else None
        if block is None:
            return
        self.apply_config(parser, cfg, self.dest, yaml.safe_dump({"model": {"init_args": {k: block for k in missing}}}))
        cfg[self.dest].pop()  # the paths of the config files given, not this completion

"""Which configuration keys a sweep file may set, and with what values: every key is checked against the
base config, the family's constructor signature (its ``Literal`` choices included) and the options
ganbench's CLI adds (``run.*``), before any trial runs (:func:`ganbench.sweep.space.parse_space`)."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Literal, get_args

from ganbench import GanbenchError

#: run options of ``ganbench fit`` (``--run.*``) that a sweep may set
_TOP_LEVEL = ("seed_everything", "ckpt_path")


# ------------------------------------------------------------------------------------ validation
def _signature_params(*callables: Any) -> dict[str, Any]:
    """Parameter name → annotation over several ``__init__``s (type hints resolved)."""
    out: dict[str, Any] = {}
    for fn in callables:
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # unresolvable forward references: fall back to raw annotations
            hints = {}
        for name, p in inspect.signature(fn).parameters.items():
            if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            out.setdefault(name, hints.get(name, p.annotation))
    return out


def _literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) is Literal:
        return get_args(annotation)
    return None


class KeyChecker:
    """Checks config keys against the real init signatures of the base config's model family, the
    data module and the Trainer, and categorical values against their ``Literal`` types."""

    def __init__(self, base: dict[str, Any]):
        import importlib

        import lightning as L

        from ganbench.data import GANDataModule
        from ganbench.models import GANModule

        model = base.get("model") or {}
        self.base_model = model if isinstance(model, dict) else {}
        class_path = model.get("class_path", "ganbench.models.GANModule") if isinstance(model, dict) else model
        module_name, _, cls_name = class_path.rpartition(".")
        try:
            family = getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError):
            raise GanbenchError(f"base_config model.class_path={class_path!r} cannot be imported") from None
        self.family = family
        self.tables = {
            "model": _signature_params(family.__init__, GANModule.__init__),
            "data": _signature_params(GANDataModule.__init__),
            "trainer": _signature_params(L.Trainer.__init__),
        }
        from ganbench.cli import GanbenchCLI

        self.run_keys = sorted(_run_keys(GanbenchCLI))

    def optimizers(self, bind: dict[str, Any], overrides: dict[str, Any]) -> dict[str, str]:
        """Player (``g``, ``d``) → class path of its optimizer: the sweep's bind, else its overrides, else
        the base config, else the family's paper optimizer."""
        out = {}
        for player in ("g", "d"):
            key = f"{player}_optimizer"
            given = [m.get(f"model.init_args.{key}") for m in (bind, overrides)]
            given.append((self.base_model.get("init_args") or {}).get(key))
            found = next((g.get("class_path") for g in given if isinstance(g, dict) and g.get("class_path")), None)
            if found is None:
                paper = getattr(self.family, "paper_optimizer", None)
                found = f"{paper[0].__module__}.{paper[0].__name__}" if paper else ""
            out[player] = str(found)
        return out

    def unbatchable(self) -> str | None:
        """Why this family cannot run as a population (the family's own refusal), or None."""
        from ganbench.models import GANModule

        if not issubclass(self.family, GANModule):
            return f"{self.family.__name__} is not a GANModule"
        return self.family.population_refusal()

    def param(self, key: str, where: str) -> tuple[str, Any]:
        """(parameter name, annotation) of a config key; one-line GanbenchError if unknown."""
        parts = key.split(".")
        section = parts[0]
        if section in _TOP_LEVEL and len(parts) == 1:
            return key, Any
        if section == "run":
            if len(parts) != 2 or parts[1] not in self.run_keys:
                raise GanbenchError(f"{where}: unknown key {key!r}; valid run keys: {', '.join(self.run_keys)}")
            return parts[1], Any
        if section == "model":
            if len(parts) < 3 or parts[1] != "init_args":
                raise GanbenchError(f"{where}: model keys are written model.init_args.NAME, got {key!r}")
            name = parts[2]
        elif section in ("data", "trainer") and len(parts) >= 2:
            name = parts[1]
        else:
            raise GanbenchError(f"{where}: unknown key {key!r}; keys start with model.init_args., data., trainer., "
                                f"run. or are one of {', '.join(_TOP_LEVEL)}")
        table = self.tables[section]
        if name not in table:
            owner = self.family.__name__ if section == "model" else section
            raise GanbenchError(f"{where}: {key!r} is not a parameter of {owner}; valid: {', '.join(sorted(table))}")
        return name, table[name]

    def check_value(self, key: str, value: Any, where: str) -> None:
        _, annotation = self.param(key, where)
        choices = _literal_choices(annotation)
        if choices is not None and value not in choices:
            raise GanbenchError(f"{where}: {key}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


def _run_keys(cli_cls: Any) -> set[str]:
    """Names of the ``--run.*`` options the fit command defines."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    cli_cls.add_arguments_to_parser(cli_cls.__new__(cli_cls), _RunOnly(parser))
    return {a.dest.split(".", 1)[1] for a in parser._actions if a.dest.startswith("run.")}


class _RunOnly:
    """Parser stand-in that records ``--run.*`` options and ignores everything else."""

    def __init__(self, parser: Any):
        self.parser = parser

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        self.parser.add_argument(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # links, defaults, groups: irrelevant to the option names
        return lambda *args, **kwargs: None

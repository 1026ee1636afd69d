"""The search space of a stability study, read from ``sweeps/NAME.yaml`` and validated before any trial.

A study follows Lucic et al. 2018 ("Are GANs Created Equal?", §4) and Kurach et al. 2019 ("A
Large-Scale Study on Regularization and Normalization in GANs", §3): *factors* (loss,
normalization, penalty, data set) define the cells that are compared; *nuisance* hyper-parameters
(learning rate, Adam betas, n_critic) are sampled afresh in every trial, and every trial trains
several seeds, so a cell is described by the distribution of its trials, not by its best run.

YAML keys (see ``docs/sweeps.md``)::

    name: toy_stability
    base_config: configs/sngan.yaml      # an ordinary fit config
    budget: 300                          # G iterations per fit (--trainer.max_steps)
    metrics_every: 50                    # G iterations between metric evaluations
    seeds: [0, 1]                        # one fit per seed in every trial
    sampler: random                      # random | tpe | nsga2
    overrides: {data.batch_size: 64}     # fixed config keys
    factors: {model.init_args.loss: [ns, hinge]}          # categorical, define the cells
    nuisance: {lr: {low: 1.0e-4, high: 1.0e-3, log: true}} # sampled per trial
    bind: {model.init_args.d_optimizer: {class_path: torch.optim.Adam, init_args: {lr: $lr}}}
    quality: {metric: val/w1_exact_1k, direction: minimize, worst: 10.0}
    collapse: {metric: val/modes_covered_2k, at_most: 1}
    objectives: [quality, instability]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ganbench import GanbenchError
from ganbench.reliability import read_yaml
from ganbench.sweep.design import DESIGN_KEYS, check_design, design_dict, init_args_of, parse_design
from ganbench.sweep.keys import KeyChecker

Direction = Literal["minimize", "maximize"]
SamplerName = Literal["random", "tpe", "nsga2"]
ObjectiveName = Literal["quality", "instability", "spread", "oscillation"]

#: direction of every objective a study can optimise; ``quality`` takes the direction of its metric
OBJECTIVE_DIRECTIONS: dict[str, Direction | None] = {
    "quality": None,
    "instability": "minimize",
    "spread": "minimize",
    "oscillation": "minimize",
}


@dataclass(frozen=True)
class Nuisance:
    """A hyper-parameter sampled uniformly (or log-uniformly) in [low, high] in every trial."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial: Any) -> float | int:
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class Quality:
    """The protocol'd quality metric of a fit (a key of summary.json ``metrics``)."""

    metric: str
    direction: Direction
    worst: float

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "minimize" else a > b


@dataclass(frozen=True)
class SweepSpace:
    """A validated search space; :meth:`fit_argv` turns one trial's parameters into a fit command line."""

    name: str
    base_config: str
    budget: int
    seeds: tuple[int, ...]
    factors: dict[str, tuple[Any, ...]]
    nuisance: dict[str, Nuisance]
    quality: Quality
    objectives: tuple[str, ...] = ("quality",)
    overrides: dict[str, Any] = field(default_factory=dict)
    bind: dict[str, Any] = field(default_factory=dict)
    collapse: dict[str, Any] | None = None
    metrics_every: int = 0
    oscillation_window: int = 5
    sampler: SamplerName = "random"
    prune: bool = True
    #: a trial's consecutive seeds run as one population fit when the family can be batched
    population: bool = True
    heartbeat_interval: int = 60
    grace_period: int | None = None
    max_retry: int = 3
    source: str = ""
    #: ``(config path, nuisance name, replica key)`` of every bound ``$name`` that a population can set per
    #: replica (``population_overrides``), e.g. ``(("model", "init_args", "g_optimizer", "init_args", "lr"),
    #: "lr", "g_lr")``; see :func:`replica_bindings`
    replica_bind: tuple[tuple[tuple[str | int, ...], str, str], ...] = ()
    #: nuisance parameters bound to a config key that cannot differ between replicas (``n_critic``): the
    #: trials batched into one population fit (``--population-trials``) share them
    structural: tuple[str, ...] = ()
    #: why the base config's family cannot run as a population (None: it can)
    unbatchable: str | None = None
    #: how cells are chosen (``design``, ``replicates``, ``interactions``, ``design_seed``; ganbench.sweep.design)
    design: Any = None

    # ------------------------------------------------------------------------------ optuna side
    @property
    def directions(self) -> list[str]:
        return [self.quality.direction if o == "quality" else OBJECTIVE_DIRECTIONS[o] for o in self.objectives]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample one trial: every factor (categorical) and every nuisance parameter."""
        params: dict[str, Any] = {key: trial.suggest_categorical(key, list(values))
                                  for key, values in self.factors.items()}
        params.update({name: n.suggest(trial) for name, n in self.nuisance.items()})
        return params

    def cell(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(params[k] for k in self.factors)

    @property
    def prunes(self) -> bool:
        """Optuna's pruner follows the first seed's quality curve (single-objective studies only)."""
        return bool(self.prune and self.metrics_every and len(self.objectives) == 1)

    @property
    def shared(self) -> list[str]:
        """The parameters the trials of one population fit share: every factor and the structural nuisance."""
        return [*self.factors, *self.structural]

    def bound_to(self, name: str) -> list[str]:
        """The bind keys whose value uses ``$name``."""
        return [key for key, value in self.bind.items() if name in _dollar_names(value)]

    def replica_overrides(self, params: dict[str, Any]) -> dict[str, float]:
        """One trial's ``population_overrides`` entry: its per-replica nuisance values under their replica keys."""
        return {key: params[name] for _, name, key in self.replica_bind if name not in self.structural}

    # -------------------------------------------------------------------------------- fit side
    def config_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Config key → value for one trial: overrides, then factors, then bound nuisance values."""
        values = dict(self.overrides)
        values.update({k: params[k] for k in self.factors})
        values.update({k: substitute(v, params) for k, v in self.bind.items()})
        return values

    def fit_argv(self, params: dict[str, Any], seed: int, run_dir: Path, group: str, tags: list[str],
                 extra: list[str] | None = None) -> list[str]:
        """``ganbench fit`` arguments of one seed of one trial (the same command a user would type)."""
        argv = ["fit", "--config", self.base_config]
        for key, value in self.config_values(params).items():
            argv += [f"--{key}", cli_value(value)]
        argv += ["--trainer.max_steps", str(self.budget), "--trainer.default_root_dir", str(run_dir),
                 "--seed_everything", str(seed), "--run.wandb_group", group, "--run.wandb_tags", json.dumps(tags)]
        if self.metrics_every:  # every evaluation becomes a metrics.csv row (the oscillation reads them)
            argv += ["--run.metrics_every", str(self.metrics_every), "--trainer.log_every_n_steps",
                     str(self.metrics_every)]
        return argv + list(extra or [])

    def to_dict(self) -> dict[str, Any]:
        """What the leaderboard needs to know about the study (stored as a study user attribute)."""
        return {"name": self.name, "factors": {k: list(v) for k, v in self.factors.items()},
                "nuisance": {n: {"low": v.low, "high": v.high, "log": v.log, "int": v.integer}
                             for n, v in self.nuisance.items()},
                "quality": {"metric": self.quality.metric, "direction": self.quality.direction,
                            "worst": self.quality.worst},
                "collapse": self.collapse, "objectives": list(self.objectives), "budget": self.budget,
                "seeds": list(self.seeds), "base_config": self.base_config, "sampler": self.sampler,
                "design": design_dict(self.design)}

    @property
    def metric_names(self) -> list[str]:
        """What each objective value is, as optuna-dashboard and ``study.metric_names`` show it."""
        return [f"quality: median {self.quality.metric} over seeds" if o == "quality" else
                {"instability": "instability: fraction of seeds diverged or collapsed",
                 "spread": f"spread: std of {self.quality.metric} over seeds",
                 "oscillation": f"oscillation: late std of {self.quality.metric}"}[o] for o in self.objectives]


def substitute(value: Any, params: dict[str, Any]) -> Any:
    """Replace every string ``$name`` in a (nested) YAML value by the sampled ``params[name]``."""
    if isinstance(value, str) and value.startswith("$"):
        return params[value[1:]]
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    return value


#: the bound optimizer classes whose learning rate and betas a population sets per replica
_REPLICA_OPTIMIZERS = ("Adam", "AdamW")


def _leaves(value: Any, path: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, *str(k).split(".")))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*path, i))]
    return [(path, value)]


def replica_key(path: tuple[str | int, ...], keys: tuple[str, ...], optimizers: dict[str, str]) -> str | None:
    """The ``population_overrides`` key that sets the config value at ``path`` per replica, or None:
    ``model.init_args.<key>`` for a replica key itself (``penalty_weight``, ``label_smoothing``,
    ``instance_noise``), ``model.init_args.{g,d}_optimizer.init_args.lr`` → ``{g,d}_lr`` and
    ``….betas[0|1]`` → ``{g,d}_beta1|2`` when that optimizer is Adam or AdamW (``optimizers``: player →
    class path)."""
    if path[:2] != ("model", "init_args") or len(path) < 3:
        return None
    rest = path[2:]
    if len(rest) == 1 and rest[0] in keys:
        return str(rest[0])
    if rest[0] not in ("g_optimizer", "d_optimizer") or rest[1:2] != ("init_args",):
        return None
    player = str(rest[0])[0]
    if str(optimizers.get(player, "")).rsplit(".", 1)[-1] not in _REPLICA_OPTIMIZERS:
        return None
    key = {("lr",): f"{player}_lr", ("betas", 0): f"{player}_beta1", ("betas", 1): f"{player}_beta2"}.get(rest[2:])
    return key if key in keys else None


def replica_bindings(bind: dict[str, Any], nuisance: Any, keys: tuple[str, ...], optimizers: dict[str, str]
                     ) -> tuple[tuple[tuple[tuple[str | int, ...], str, str], ...], tuple[str, ...]]:
    """Where each nuisance parameter goes, for a population of several trials: the ``(path, name, replica
    key)`` of every bound ``$name`` that ``population_overrides`` can set, and the structural parameters —
    those with at least one bound place that it cannot (``n_critic``, a layer width, an SGD learning rate)."""
    placed: list[tuple[tuple[str | int, ...], str, str]] = []
    structural: set[str] = set()
    for path, value in _leaves(bind, ()):
        if not (isinstance(value, str) and value.startswith("$")):
            continue
        name, key = value[1:], replica_key(path, keys, optimizers)
        if key is None:
            structural.add(name)
        else:
            placed.append((path, name, key))
    return tuple(placed), tuple(n for n in nuisance if n in structural)


def cli_value(value: Any) -> str:
    """One command-line value as jsonargparse reads it: strings raw, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def short(key: str) -> str:
    """``model.init_args.d_norm`` → ``d_norm``: the name used in tables, tags and plots."""
    return key.rsplit(".", 1)[-1]


def _need(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise GanbenchError(f"{where}: missing key {key!r}")
    return raw[key]


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GanbenchError(f"{where}: {key}={value!r} must be a finite number")
    return float(value)


_KNOWN = {"name", "base_config", "budget", "seeds", "factors", "nuisance", "bind", "overrides", "quality", "collapse",
          "objectives", "metrics_every", "oscillation_window", "sampler", "prune", "heartbeat_interval",
          "grace_period", "max_retry", "population"} | DESIGN_KEYS


def parse_space(raw: dict[str, Any], where: str, root: Path | None = None) -> SweepSpace:
    """Validate a sweep description (a parsed YAML mapping); every problem is one GanbenchError line."""
    if not isinstance(raw, dict):
        raise GanbenchError(f"{where}: a sweep file is a YAML mapping")
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise GanbenchError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(_KNOWN))}")
    root = root or Path.cwd()
    base_config = str(_need(raw, "base_config", where))
    base_path = Path(base_config) if Path(base_config).is_absolute() else root / base_config
    if not base_path.is_file():
        raise GanbenchError(f"{where}: base_config {base_config!r} does not exist")
    base = read_yaml(base_path, f"{where}: base_config") or {}
    checker = KeyChecker(base)

    budget = _need(raw, "budget", where)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise GanbenchError(f"{where}: budget={budget!r} must be an integer >= 1 (G iterations per fit)")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise GanbenchError(f"{where}: seeds={seeds!r} must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise GanbenchError(f"{where}: seeds={seeds!r} repeats a seed")

    factors_raw = raw.get("factors") or {}
    if not isinstance(factors_raw, dict):
        raise GanbenchError(f"{where}: factors must map config keys to lists of choices")
    factors: dict[str, tuple[Any, ...]] = {}
    for key, choices in factors_raw.items():
        if not isinstance(choices, list) or not choices:
            raise GanbenchError(f"{where}: factors.{key} has an empty choice list; give at least one value")
        if len(set(map(repr, choices))) != len(choices):
            raise GanbenchError(f"{where}: factors.{key} repeats a choice: {choices!r}")
        for value in choices:
            checker.check_value(key, value, f"{where}: factors")
        factors[key] = tuple(choices)

    nuisance: dict[str, Nuisance] = {}
    for name, spec in (raw.get("nuisance") or {}).items():
        if not isinstance(spec, dict):
            raise GanbenchError(f"{where}: nuisance.{name} must be a mapping with low and high")
        extra = sorted(set(spec) - {"low", "high", "log", "int"})
        if extra:
            raise GanbenchError(f"{where}: nuisance.{name} has unknown key {extra[0]!r}; valid: high, int, log, low")
        low = _number(_need(spec, "low", f"{where}: nuisance.{name}"), f"nuisance.{name}.low", where)
        high = _number(_need(spec, "high", f"{where}: nuisance.{name}"), f"nuisance.{name}.high", where)
        if low > high:
            raise GanbenchError(f"{where}: nuisance.{name} has low={low:g} > high={high:g}")
        log, integer = bool(spec.get("log", False)), bool(spec.get("int", False))
        if log and low <= 0:
            raise GanbenchError(f"{where}: nuisance.{name} is log-uniform and needs low > 0, got {low:g}")
        if integer and (low != int(low) or high != int(high)):
            raise GanbenchError(f"{where}: nuisance.{name} is an integer range and needs integer bounds")
        if name in factors:
            raise GanbenchError(f"{where}: nuisance.{name} has the name of a factor")
        nuisance[name] = Nuisance(name, low, high, log, integer)

    bind = raw.get("bind") or {}
    used = _dollar_names(bind)
    missing = sorted(used - set(nuisance))
    if missing:
        raise GanbenchError(f"{where}: bind uses ${missing[0]} but nuisance has no {missing[0]!r}; "
                            f"defined: {', '.join(sorted(nuisance)) or 'none'}")
    unused = sorted(set(nuisance) - used)
    if unused:
        raise GanbenchError(f"{where}: nuisance.{unused[0]} is sampled but bound to no config key (add it to bind)")
    overrides = raw.get("overrides") or {}
    for section, mapping in (("overrides", overrides), ("bind", bind)):
        if not isinstance(mapping, dict):
            raise GanbenchError(f"{where}: {section} must map config keys to values")
        for key, value in mapping.items():
            if key in factors:
                raise GanbenchError(f"{where}: {section}.{key} is also a factor; a key is either fixed or varied")
            if isinstance(value, str) and not value.startswith("$"):
                checker.check_value(key, value, f"{where}: {section}")
            else:
                checker.param(key, f"{where}: {section}")
        for key in ("trainer.max_steps", "trainer.default_root_dir", "seed_everything"):
            if key in mapping:
                raise GanbenchError(f"{where}: {section}.{key} is set by the sweep (budget, run folders, seeds)")

    q = _need(raw, "quality", where)
    if not isinstance(q, dict):
        raise GanbenchError(f"{where}: quality must be a mapping with metric, direction and worst")
    direction = q.get("direction", "minimize")
    if direction not in get_args(Direction):
        raise GanbenchError(f"{where}: quality.direction={direction!r} is not valid; choose one of: maximize, minimize")
    quality = Quality(str(_need(q, "metric", f"{where}: quality")), direction,
                      _number(_need(q, "worst", f"{where}: quality"), "quality.worst", where))

    objectives = raw.get("objectives", ["quality"])
    if isinstance(objectives, str):
        objectives = [objectives]
    if not objectives:
        raise GanbenchError(f"{where}: objectives is empty; choose from: {', '.join(OBJECTIVE_DIRECTIONS)}")
    for o in objectives:
        if o not in OBJECTIVE_DIRECTIONS:
            raise GanbenchError(f"{where}: objective {o!r} is not valid; choose one of: "
                                f"{', '.join(OBJECTIVE_DIRECTIONS)}")
    sampler = raw.get("sampler", "random")
    if sampler not in get_args(SamplerName):
        raise GanbenchError(f"{where}: sampler={sampler!r} is not valid; choose one of: "
                            f"{', '.join(get_args(SamplerName))}")
    collapse = raw.get("collapse")
    if collapse is not None and (not isinstance(collapse, dict) or set(collapse) != {"metric", "at_most"}):
        raise GanbenchError(f"{where}: collapse must be {{metric: KEY, at_most: NUMBER}}")
    replica_bind, structural = replica_bindings(bind, nuisance, tuple(getattr(checker.family, "REPLICA_KEYS", ())),
                                                checker.optimizers(bind, overrides))
    ints = {k: raw.get(k, d) for k, d in (("metrics_every", 0), ("oscillation_window", 5),
                                            ("heartbeat_interval", 60), ("max_retry", 3))}
    for k, v in ints.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise GanbenchError(f"{where}: {k}={v!r} must be an integer >= 0")
    design = parse_design(raw, factors, where)
    check_design(design, factors, {**init_args_of(base), **overrides}, checker.family, where)
    return SweepSpace(
        design=design, name=str(raw.get("name") or Path(where).stem), base_config=base_config, budget=budget,
        seeds=tuple(seeds),
        factors=factors, nuisance=nuisance, quality=quality, objectives=tuple(objectives), overrides=dict(overrides),
        bind=dict(bind), collapse=collapse, sampler=sampler, prune=bool(raw.get("prune", True)),
        population=_flag(raw.get("population", True), "population", where),
        grace_period=raw.get("grace_period"), source=where, replica_bind=replica_bind, structural=structural,
        unbatchable=checker.unbatchable(), **ints)


def _flag(value: Any, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise GanbenchError(f"{where}: {key}={value!r} must be true or false")
    return value


def _dollar_names(value: Any) -> set[str]:
    if isinstance(value, str) and value.startswith("$"):
        return {value[1:]}
    if isinstance(value, dict):
        return set().union(*(_dollar_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_dollar_names(v) for v in value)) if value else set()
    return set()


def load_space(path: str | Path) -> SweepSpace:
    """Read and validate ``sweeps/NAME.yaml`` (paths inside are relative to the working directory)."""
    return parse_space(read_yaml(path), str(path))

"""Population helpers: replica seeds and per-replica settings, the replicas' random streams, folded
rows, a loss evaluated per replica, and per-replica logging (see :mod:`ganbench.nn.population`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from ganbench import GanbenchError
from ganbench.models.engine.checks import check_ranges
from ganbench.nn.population import ReplicaRNG


class Population:
    """The replica axis of :class:`~ganbench.models.base.GANModule`."""

    #: the step pieces a family may not override and still be batched (they would need to know the
    #: replica axis); a family that overrides one refuses ``population > 1`` naming it
    POPULATION_STEP: ClassVar[tuple[str, ...]] = (
        "training_step", "d_loss", "g_loss", "generate", "penalty", "discriminate", "split_batch", "sample")
    #: step pieces this family overrides and has written for the replica axis (its losses evaluated per
    #: replica through :meth:`per_replica`, its draws from :attr:`rng`, its state one entry per replica)
    batched_overrides: ClassVar[frozenset[str]] = frozenset()
    #: why this family's fit cannot run as a population at all (None: it can, see :meth:`population_refusal`)
    population_unsupported: ClassVar[str | None] = None

    @classmethod
    def population_refusal(cls) -> str | None:
        """Why ``population > 1`` is refused for this family, or None: its declared reason, else a step
        piece it overrides without declaring it batched (such an override would see the replicas' rows
        as one batch)."""
        from ganbench.models.base import GANModule

        if cls.population_unsupported is not None:
            return f"the {cls.family} family cannot be batched: {cls.population_unsupported}"
        for name in cls.POPULATION_STEP:
            if getattr(cls, name) is not getattr(GANModule, name) and name not in cls.batched_overrides:
                return f"the {cls.family} family overrides {name}(), which cannot be batched"
        return None

    #: per-replica values a study may set in ``population_overrides``
    REPLICA_KEYS: ClassVar[tuple[str, ...]] = ("g_lr", "d_lr", "g_beta1", "g_beta2", "d_beta1", "d_beta2",
                                               "penalty_weight", "label_smoothing", "instance_noise")

    def check_seeds(self, seeds: list[int] | None) -> list[int]:
        """Each replica's seed: ``population_seeds``, else ``seed_everything + r``."""
        if seeds is None:
            return [torch.initial_seed() + r for r in range(self.population)]
        if len(seeds) != self.population:
            raise GanbenchError(f"model.population_seeds has {len(seeds)} entries; it needs one seed per replica "
                                f"(model.population={self.population})")
        for r, seed in enumerate(seeds):
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
                raise GanbenchError(f"model.population_seeds[{r}] must be an integer in [0, 2**32), got {seed!r}")
        return list(seeds)

    def check_population(self, overrides: list[dict[str, float]] | None) -> dict[str, torch.Tensor]:
        """Validate ``population`` and ``population_overrides``; the per-replica values as tensors."""
        n, h = self.population, self.cfg
        if n > 1:
            for key, bad, why in (
                    ("grad_clip", h.grad_clip > 0, "its norm would be taken over all replicas at once"),):
                if bad:
                    raise GanbenchError(f"model.population={n} cannot be combined with model.{key}: {why}")
        if overrides is None:
            return {}
        if len(overrides) != n:
            raise GanbenchError(f"model.population_overrides has {len(overrides)} entries; it needs one dict per "
                                f"replica (model.population={n})")
        values: dict[str, list[float]] = {}
        base = {"penalty_weight": h.penalty_weight, "label_smoothing": h.label_smoothing,
                "instance_noise": h.instance_noise}
        for r, entry in enumerate(overrides):
            for key, value in entry.items():
                if key not in self.REPLICA_KEYS:
                    raise GanbenchError(f"model.population_overrides[{r}].{key} is not a per-replica setting; "
                                        f"valid: {', '.join(self.REPLICA_KEYS)}")
                if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                        or value < 0):
                    raise GanbenchError(
                        f"model.population_overrides[{r}].{key} must be a finite number >= 0, got {value!r}")
                if key in ("label_smoothing", "instance_noise", "penalty_weight"):
                    check_ranges({key: value}, f"model.population_overrides[{r}].")
                if key.endswith(("beta1", "beta2")) and not value < 1:
                    raise GanbenchError(f"model.population_overrides[{r}].{key} must be in [0, 1), got {value!r}")
        for key in self.REPLICA_KEYS:
            if any(key in entry for entry in overrides):
                # a replica without the key keeps the run's value (NaN: the optimizer's, filled in later)
                values[key] = [float(entry.get(key, base.get(key, math.nan))) for entry in overrides]
        if "label_smoothing" in values and h.loss not in ("ns", "minimax"):
            raise GanbenchError("model.population_overrides: label_smoothing needs model.loss ns or minimax")
        return {k: torch.tensor(v) for k, v in values.items()}

    @property
    def rng(self) -> ReplicaRNG:
        """The replicas' random streams (latents, labels, instance noise, penalty draws), on the
        module's device; seeded from each replica's seed and the data-parallel rank."""
        device = self.fixed_z.device
        if self._rng is None or self._rng.generators[0].device != device:
            from ganbench.data.loader import mix_seed

            rank = self.global_rank if self._trainer is not None else 0
            self._rng = ReplicaRNG([mix_seed(seed, rank) for seed in self.replica_seeds], device)
            if self._rng_state is not None:
                self._rng.load_state_dict(self._rng_state)
                self._rng_state = None
        return self._rng

    def rows(self, n: int) -> int:
        """Rows of a folded batch holding ``n`` samples for each replica."""
        return n * self.population

    def replicated(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """``x``'s rows repeated for every replica (a folded batch in which each replica sees ``x``);
        ``x`` itself for one replica."""
        if x is None or self.population == 1:
            return x
        return x.repeat(self.population, *([1] * (x.dim() - 1)))

    def per_replica(self, fn: Callable[..., torch.Tensor], *args: torch.Tensor | None,
                    **kwargs: Any) -> torch.Tensor:
        """``fn`` (a loss of D's outputs) evaluated on each replica's rows: a ``(population,)`` vector.

        ``args`` are folded ``(N·B, ...)`` tensors (or None); keyword values that are tensors of shape
        ``(N,)`` are given to replica r as their r-th entry. With one replica it is ``fn`` itself."""
        n = self.population
        if n == 1:  # a 0-dim tensor (a device state) is given as it is: reading it would sync the host
            kw = {k: (v[0].item() if torch.is_tensor(v) and v.dim() else v) for k, v in kwargs.items()}
            return fn(*args, **kw).reshape(1)
        from ganbench.nn.population import replica_rows

        tensors = {k: v for k, v in kwargs.items() if torch.is_tensor(v)}
        fixed = {k: v for k, v in kwargs.items() if not torch.is_tensor(v)}
        names = list(tensors)
        views = [None if a is None else replica_rows(a, n) for a in args]

        def one(*xs):
            return fn(*xs[: len(views)], **fixed, **dict(zip(names, xs[len(views):])))

        in_dims = tuple(None if v is None else 0 for v in views) + (0,) * len(names)
        return torch.func.vmap(one, in_dims=in_dims)(*views, *(tensors[k].to(args[0].device) for k in names))

    def replica_state(self, value: float | list[float]) -> float | torch.Tensor:
        """A value a family keeps on the host per replica (BEGAN's k, MAGAN's margin): a float with one
        replica, else a ``(population,)`` float64 tensor (``value`` for every replica, or one each)."""
        if self.population == 1:
            return float(value)
        return torch.tensor(value if isinstance(value, list) else [float(value)] * self.population,
                            dtype=torch.float64)

    def replica_update(self, fn: Callable[..., float], state: float | torch.Tensor, *values: Any
                       ) -> float | torch.Tensor:
        """``fn(state, *values)`` on the host for each replica: ``fn`` itself with one replica; in a
        population ``state`` is a ``(population,)`` float64 tensor and replica r is given the r-th entry
        of each of ``values`` (lists or tensors)."""
        if self.population == 1:
            return fn(state, *values)
        return torch.tensor([fn(s, *(v[r] for v in values)) for r, s in enumerate(state.tolist())],
                            dtype=torch.float64)

    def replica_entry(self, value: Any) -> Any:
        """A per-replica value as a checkpoint keeps it: a :meth:`replica_state` value as the float or one
        float per replica; a list with one entry per replica (:meth:`for_each_replica`) as its one entry
        with one replica, else the list."""
        if torch.is_tensor(value):
            return value.tolist()
        if isinstance(value, list):
            return value[0] if self.population == 1 else value
        return value

    def for_each_replica(self, make: Callable[[], Any]) -> list[Any]:
        """State a family keeps per replica (CycleGAN's image pools): ``make()`` once for each replica."""
        return [make() for _ in range(self.population)]

    def replica_slices(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each replica's rows of a folded batch ``x``."""
        from ganbench.nn.population import replica_rows

        return replica_rows(x, self.population).unbind(0)

    def replica_interleaved(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """Folded batches ``rows`` (each ``(population·n, …)``) reordered replica by replica: replica 0's
        rows of every batch in turn, then replica 1's, … (a sample grid of each replica)."""
        from ganbench.nn.population import replica_rows

        return torch.cat([replica_rows(r, self.population) for r in rows], dim=1).flatten(0, 1)

    def replica_floats(self, value: float | torch.Tensor) -> list[float]:
        """A :meth:`replica_state` value as one float per replica, read on the host."""
        return value.tolist() if torch.is_tensor(value) else [value]

    def replica_shape(self, *shape: int) -> tuple[int, ...]:
        """The shape of a buffer holding ``shape`` per replica: ``shape`` itself with one replica."""
        return shape if self.population == 1 else (self.population, *shape)

    def replica_means(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of detached per-sample values: one number, or each replica's in a population."""
        values = values.detach()
        return values.mean() if self.population == 1 else values.reshape(self.population, -1).mean(1)

    def replica_log(self, values: torch.Tensor) -> torch.Tensor:
        """A detached ``(population,)`` vector to log: its one value with one replica."""
        return values.detach().reshape(()) if self.population == 1 else values.detach()

    def replica_map(self, fn: Callable[..., torch.Tensor], *values: torch.Tensor) -> torch.Tensor:
        """``fn`` of scalars for each replica: ``fn(*values)`` with one replica, else the stack of ``fn``
        on each replica's entries of the ``(population,)`` vectors ``values``."""
        if self.population == 1:
            return fn(*values)
        return torch.stack([fn(*entries) for entries in zip(*values)])

    def log_state(self, values: dict[str, torch.Tensor]) -> None:
        """Values of the family's state (one per replica) as ``train/<key>``, or ``train/<key>/r<k>``
        in a population."""
        if self.population == 1:
            self.log_dict({f"train/{key}": value for key, value in values.items()})
        else:
            self.log_dict({f"train/{key}/r{r}": value[r] for key, value in values.items()
                           for r in range(self.population)})

    def per_replica_rows(self, fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        """``fn`` (a function of a batch whose rows depend on the whole batch, such as a kernel's mean
        over other samples) evaluated on each replica's rows alone; its ``(B, ...)`` outputs folded
        back to ``(N·B, ...)``. With one replica it is ``fn`` itself."""
        n = self.population
        if n == 1:
            return fn(*args)
        from ganbench.nn.population import replica_rows

        out = torch.func.vmap(fn)(*(replica_rows(a, n) for a in args))
        return out.reshape(-1, *out.shape[2:])

    def replica_value(self, key: str, default: float) -> float | torch.Tensor:
        """A per-replica setting: a ``(population,)`` tensor when overridden, else the run's value."""
        value = self.replica_values.get(key)
        if value is None:
            return default
        on_device = self.__dict__.setdefault("_replica_values_on_device", {})  # copied once, not per step
        if key not in on_device or on_device[key].device != self.fixed_z.device:
            on_device[key] = value.to(self.fixed_z.device)
        return on_device[key]

    def replica_rows_of(self, value: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
        """A per-replica value broadcast over the rows (and trailing dims) of a folded batch ``x``."""
        if not torch.is_tensor(value):
            return value
        return value.to(x.dtype).repeat_interleave(x.shape[0] // self.population).reshape(
            -1, *([1] * (x.dim() - 1)))


    def log_replicas(self, values: dict[str, torch.Tensor], penalty: torch.Tensor | None = None) -> None:
        """Per-replica training values as ``train/<key>/r<k>``: per-sample tensors averaged over each
        replica's rows, per-replica vectors as they are; the critic gap, and ``penalty`` (the per-replica
        values of the last penalty taken) as ``train/penalty_<name>/r<k>``."""
        from ganbench.nn.population import replica_rows

        n = self.population
        logs: dict[str, torch.Tensor] = {}
        for key, v in values.items():
            v = v.float()
            per = v if v.shape == (n,) else replica_rows(v, n).reshape(n, -1).mean(1)
            logs.update({f"train/{key}/r{k}": per[k] for k in range(n)})
        if "d_real" in values and "d_fake" in values:
            gap = replica_rows(values["d_real"].float(), n).reshape(n, -1).mean(1) - \
                replica_rows(values["d_fake"].float(), n).reshape(n, -1).mean(1)
            logs.update({f"train/critic_gap/r{k}": gap[k] for k in range(n)})
        if penalty is not None and penalty.dim():
            logs.update({f"train/penalty_{self.cfg.penalty}/r{k}": penalty[k] for k in range(n)})
        self.log_dict(logs)

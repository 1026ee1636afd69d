"""The players' optimizers (the family's paper optimizer unless given, per-replica Adam when a
population overrides learning rates or betas) and their schedulers."""

from __future__ import annotations

import math

import torch
from lightning.pytorch.cli import OptimizerCallable

from ganbench import GanbenchError


class Optimizers:
    """Optimizers and schedulers of :class:`~ganbench.models.base.GANModule`."""

    def _make_optimizer(self, factory: OptimizerCallable | None, params, key: str) -> torch.optim.Optimizer:
        try:
            if factory is not None:
                opt = factory(params)
            else:
                cls, kwargs = self.paper_optimizer
                opt = cls(params, **kwargs)
        except (ValueError, TypeError) as err:  # torch.optim validates lr, betas, eps, ... on construction
            raise GanbenchError(f"model.{key}: {err}") from None
        for name, value in opt.defaults.items():  # torch accepts lr = inf or nan
            if isinstance(value, float) and not math.isfinite(value):
                raise GanbenchError(f"model.{key}.init_args.{name} must be a finite number, got {value}")
        return opt

    def replica_optimizer(self, opt: torch.optim.Optimizer, player: str) -> torch.optim.Optimizer:
        """``opt`` itself, or — when ``population_overrides`` set this player's learning rate or betas —
        the same Adam with those values per replica (:class:`ganbench.optim.PopulationAdam`)."""
        keys = [f"{player}_{k}" for k in ("lr", "beta1", "beta2")]
        given = {k[2:]: self.replica_values[k] for k in keys if k in self.replica_values}
        if not given:
            return opt
        if type(opt) not in (torch.optim.Adam, torch.optim.AdamW):
            raise GanbenchError(f"model.population_overrides sets {', '.join(f'{player}_{k}' for k in given)} per "
                                f"replica, which needs torch.optim.Adam or AdamW for model.{player}_optimizer, "
                                f"not {type(opt).__name__}")
        from ganbench.optim import PopulationAdam

        group = opt.param_groups[0]
        base_lr = float(group["lr"])
        defaults = {"lr": group["lr"], "betas": group["betas"], "eps": group["eps"],
                    "weight_decay": group["weight_decay"],
                    "decoupled_weight_decay": (isinstance(opt, torch.optim.AdamW)
                                               or group.get("decoupled_weight_decay", False)),
                    **{k: group.get(k) for k in ("amsgrad", "maximize")}}

        def fill(key: str, default: float) -> torch.Tensor | None:
            value = given.get(key)
            return None if value is None else torch.where(torch.isnan(value), torch.full_like(value, default), value)

        lr = fill("lr", base_lr)
        ratio = (lr.double() / base_lr) if lr is not None else torch.ones(self.population, dtype=torch.float64)
        try:
            return PopulationAdam(opt.param_groups[0]["params"], ratio, fill("beta1", group["betas"][0]),
                                  fill("beta2", group["betas"][1]), **defaults)
        except ValueError as err:
            raise GanbenchError(f"model.{player}_optimizer: {err}") from None

    def configure_optimizers(self):
        g_factory, d_factory = self.optimizer_factories
        g_opt = self._make_optimizer(g_factory, self.generator.parameters(), "g_optimizer")
        d_opt = self._make_optimizer(d_factory, self.discriminator.parameters(), "d_optimizer")
        g_opt, d_opt = self.replica_optimizer(g_opt, "g"), self.replica_optimizer(d_opt, "d")
        self._schedulers, self._scheduler_keys = [], []
        for key, factory, opt in zip(("g_scheduler", "d_scheduler"), self.scheduler_factories, (g_opt, d_opt)):
            if factory is not None:
                try:
                    self._schedulers.append(factory(opt))
                    self._scheduler_keys.append(key)
                except (ValueError, TypeError) as err:
                    raise GanbenchError(f"model.{key}: {err}") from None
        return [g_opt, d_opt]

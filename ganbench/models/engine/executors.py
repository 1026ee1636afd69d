"""Executors of :meth:`~ganbench.models.base.GANModule.iteration`: the eager step (through Lightning's
manual optimization, or direct ``backward``/``step`` when nothing listens to its hooks), the plain
iteration a CUDA graph records, and the graph step with its keys, capturable optimizers and fallback."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities.model_helpers import is_overridden

from ganbench.models.graph import CudaGraphs
from ganbench.models.steps import backward, update


class Executors:
    """The ways :class:`~ganbench.models.base.GANModule` runs one G iteration."""

    def _step(self, opt, loss: torch.Tensor, module: nn.Module, hist, counted: bool, lightning: bool = True) -> None:
        """zero_grad → backward → (historical averaging) → clip → step (:mod:`ganbench.models.steps`).

        ``lightning=False`` is the same update with plain torch calls and nothing of the Trainer (the
        CUDA-graph capture and the benchmark's reference loop); ``opt`` may then be a bare optimizer."""
        backward(self, opt, loss, module, hist, lightning)
        update(self, opt, module, hist, counted, lightning)

    def training_step(self, batch, batch_idx: int) -> None:
        if self._graph is not False and self.cfg.cuda_graph:
            return self._graph_training_step(batch)
        self.host_values()
        (d_loss, d_logs), (g_loss, g_logs) = self.iteration(self.split_batch(batch), *self.optimizers())
        d_losses, g_losses = d_logs.pop("d_losses", d_loss.detach()), g_logs.pop("g_losses", g_loss.detach())
        self._watch(d_losses, g_losses)
        if not self.logging_step():
            return
        if self.ada is not None:
            d_logs["ada_p"] = self.ada.p
            if self.global_step >= self.cfg.ada_interval:  # r_t is measured from the first adjustment on
                d_logs["ada_rt"] = self.ada.rt
        if self.population > 1:
            self.log_replicas({"d_loss": d_losses, "g_loss": g_losses, **d_logs, **g_logs})
            return
        self.log_dict({"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach()}, prog_bar=True)
        logs = {f"train/{k}": v.float().mean() if torch.is_tensor(v) and v.dim() else v
                for k, v in {**d_logs, **g_logs}.items()}
        if "train/d_real" in logs and "train/d_fake" in logs and "train/critic_gap" not in logs:
            logs["train/critic_gap"] = logs["train/d_real"] - logs["train/d_fake"]
        if self._penalty_value is not None:
            logs[f"train/penalty_{self.cfg.penalty}"] = self._penalty_value
        if self.cfg.instance_noise > 0:
            logs["train/instance_noise_sigma"] = self.noise_sigma()
        self.log_dict(logs)

    def logging_step(self) -> bool:
        """Log only on the steps Lightning sends to the loggers (every ``log_every_n_steps``) and at
        the last step: logging builds Python objects per value, which a launch-bound step feels."""
        trainer = self.trainer
        step = self.global_step
        every = max(1, trainer.log_every_n_steps)
        return step % every == 0 or step >= (trainer.max_steps or 0) > 0 or trainer.should_stop

    #: Lightning hooks dispatched around every backward / optimizer step under manual optimization
    STEP_HOOKS: ClassVar[tuple[str, ...]] = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
    #: strategy and precision-plugin methods on that path; a subclass that overrides one adds work there
    STRATEGY_STEP_METHODS: ClassVar[tuple[str, ...]] = ("backward", "pre_backward", "post_backward", "optimizer_step")
    PRECISION_STEP_METHODS: ClassVar[tuple[str, ...]] = (
        "backward", "pre_backward", "post_backward", "optimizer_step", "_wrap_closure", "_after_closure")

    def direct_step_blocker(self) -> str | None:
        """Why this run's optimizer steps must go through Lightning's dispatch, or None when
        ``loss.backward()`` / ``optimizer.step()`` called directly do exactly the same thing."""
        trainer = self.trainer
        if not isinstance(trainer.profiler, PassThroughProfiler):
            return f"a profiler ({type(trainer.profiler).__name__}) times the hooks"
        for cb in trainer.callbacks:
            for hook in self.STEP_HOOKS:
                if is_overridden(hook, cb, L.Callback):
                    return f"callback {type(cb).__name__} implements {hook}"
        for hook in (*self.STEP_HOOKS, "backward"):
            if is_overridden(hook, self, L.LightningModule):
                return f"the {self.family} module implements {hook}"
        strategy, plugin = trainer.strategy, trainer.strategy.precision_plugin
        for obj, base, methods in ((strategy, Strategy, self.STRATEGY_STEP_METHODS),
                                   (plugin, Precision, self.PRECISION_STEP_METHODS)):
            for name in methods:
                if getattr(type(obj), name) is not getattr(base, name):
                    return f"{type(obj).__name__} adds work to {name}"
        return None

    def on_train_start(self) -> None:
        self._direct_steps = self.direct_step_blocker() is None
        self._update_frozen()

    #: how graphs are captured and replayed (:class:`ganbench.models.graph.CudaGraphs`; the tests use
    #: :class:`~ganbench.models.graph.EmulatedGraphs`, the same semantics on the CPU)
    graph_backend: ClassVar[type] = CudaGraphs

    def graph_unsupported_reason(self) -> str | None:
        """Why this run cannot be captured in a CUDA graph, or None when it may be (the warm-up
        iterations then check that the step is static, see :mod:`ganbench.models.graph`)."""
        reason = self.graph_backend().unavailable(self)
        if reason is not None:
            return reason
        if self.trainer.world_size > 1:
            return "it runs on several devices (DDP: the gradient all-reduce is not captured)"
        if "16-mixed" == str(self.trainer.precision):
            return "fp16 needs a dynamic loss scaler (use bf16-mixed)"
        for key, scheduler in zip(getattr(self, "_scheduler_keys", []), getattr(self, "_schedulers", [])):
            opt = scheduler.optimizer
            if any("capturable" not in group for group in opt.param_groups):
                return (f"model.{key} drives {type(opt).__name__} (model.{key[0]}_optimizer), whose learning rate "
                        "cannot live on the device (use Adam, AdamW or RMSprop)")
        return self.graph_blocker()

    def graph_blocker(self) -> str | None:
        """Why this family's step keeps state on the host that a graph would freeze (None: it does not)."""
        return None

    def graph_period(self) -> int:
        """G iterations after which the step repeats itself: a penalty every k D steps with
        ``n_critic`` D steps per iteration repeats after k / gcd(k, n_critic) iterations."""
        h = self.cfg
        if h.penalty == "none" or h.penalty_every == 1:
            return 1
        return h.penalty_every // math.gcd(h.penalty_every, self.n_critic)

    def graph_key(self) -> tuple:
        """Which captured graph runs this iteration: the phase of a lazy penalty (the first entry, the
        only one that recurs), top-k's k (only shrinks), and in a population the replicas frozen since
        they diverged (only grow; their slices are put back after each step)."""
        h = self.cfg
        batch = self.__dict__.get("_top_k_batch")  # the fakes per replica top-k last chose from
        k = (self.top_k_count(batch) if batch else self.epochs_done()) if h.top_k else None
        phase = self._d_steps % h.penalty_every if h.penalty != "none" else 0
        return (phase, k, tuple(self.alive))

    def graph_optimizers(self) -> tuple[torch.optim.Optimizer, ...]:
        return tuple(getattr(opt, "optimizer", opt) for opt in self.optimizers())

    def plain_iteration(self, chunks, optimizers: tuple | None = None, autocast: Any = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`iteration` with plain ``backward``/``step`` and without ``after_g_step`` (what a
        graph records), with the Trainer's optimizers and precision unless given; returns the
        detached per-replica losses of the last D step and the G step (``(population,)`` each)."""
        if autocast is None:
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                      enabled="bf16" in str(self.trainer.precision))
        (d_loss, d_logs), (g_loss, g_logs) = self.iteration(chunks, *(optimizers or self.optimizers()),
                                                            lightning=False, autocast=autocast, finish=False)
        return d_logs.get("d_losses", d_loss).detach(), g_logs.get("g_losses", g_loss).detach()

    def set_capturable(self, on: bool, optimizers: tuple[torch.optim.Optimizer, ...] | None = None) -> None:
        """Learning rates, step counts and bias corrections of the optimizers on the device (and so
        inside the graph): torch's ``capturable`` optimizers; a scheduler then fills the lr tensor."""
        for opt in optimizers or self.graph_optimizers():
            for group in opt.param_groups:
                if "capturable" not in group:
                    continue
                group["capturable"] = on
                if on and getattr(self, "_schedulers", None) and not torch.is_tensor(group["lr"]):
                    group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
                elif not on and torch.is_tensor(group["lr"]):  # back to the eager step's float
                    group["lr"] = float(group["lr"])
                for p in group["params"]:
                    step = opt.state.get(p, {}).get("step")
                    if on and torch.is_tensor(step) and step.device != p.device:
                        opt.state[p]["step"] = step.to(p.device)
                    elif not on and torch.is_tensor(step) and step.device.type != "cpu" and not group.get("fused"):
                        opt.state[p]["step"] = step.cpu()  # where torch's eager optimizers keep it

    def _graph_training_step(self, batch) -> None:
        """One G iteration per call through :class:`~ganbench.models.graph.GraphStep`: the same
        iteration as the eager path, with the host's values written before it and ``after_g_step``
        after it; a step the warm-up finds not static falls back to the eager one with the reason."""
        from ganbench.models.graph import GraphStep, fallback_notice

        if self._graph is None:
            reason = self.graph_unsupported_reason()
            if reason is not None:
                fallback_notice(self, reason)
                self._graph = False
                return self.training_step(batch, 0)
            self.set_capturable(True)
            self._graph = GraphStep(self, self.graph_backend(), batch)
        self.host_values()
        d_loss, g_loss, replayed = self._graph(batch)
        g_opt = self.optimizers()[0]
        g_opt._on_before_step()  # count the G update as the eager path's g_opt.step() does
        g_opt._on_after_step()
        self._d_steps += self.n_critic
        self.after_g_step()
        self._watch(d_loss, g_loss, accumulate=not replayed)
        if self.logging_step():  # copies: the graph's outputs change at the next replay
            if self.population > 1:
                self.log_replicas({"d_loss": d_loss.clone(), "g_loss": g_loss.clone()})
            else:
                self.log_dict({"train/d_loss": d_loss.sum(), "train/g_loss": g_loss.sum()}, prog_bar=True)
        if self._graph.fallback is not None:  # this iteration ran eagerly; the next ones are eager
            fallback_notice(self, self._graph.fallback)
            self._graph = False
            self.set_capturable(False)

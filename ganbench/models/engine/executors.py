"""Executors of :meth:`~ganbench.models.base.GANModule.iteration`: the eager step (through Lightning's
manual optimization, or direct ``backward``/``step`` when nothing listens to its hooks), the plain
iteration a CUDA graph records, and the graph step with its keys, capturable optimizers and fallback.
Each produces a :class:`~ganbench.models.engine.finish.StepResult` and hands it to the one ``finish``."""

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

from ganbench.models.engine.finish import StepResult
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
        self.finish(StepResult.of(self.iteration(self.split_batch(batch), *self.optimizers(), finish=False)))

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
        state = self.host_state()  # the family's own words for it
        return None if state is None else f"{state.what}, which a graph would freeze; {state.without} captures"

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

    def plain_iteration(self, chunks, optimizers: tuple | None = None, autocast: Any = None) -> StepResult:
        """:meth:`iteration` with plain ``backward``/``step`` and without ``after_g_step`` (what a
        graph records), with the Trainer's optimizers and precision unless given; its losses and
        values to log are what the graph outputs."""
        if autocast is None:
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                      enabled="bf16" in str(self.trainer.precision))
        return StepResult.of(self.iteration(chunks, *(optimizers or self.optimizers()), lightning=False,
                                            autocast=autocast, finish=False))

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
        iteration as the eager path, with the host's values written before it and the same
        :meth:`finish` after it; a step the warm-up finds not static falls back to the eager one with
        the reason."""
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
        self.finish(self._graph(batch))
        if self._graph.fallback is not None:  # this iteration ran eagerly; the next ones are eager
            fallback_notice(self, self._graph.fallback)
            self._graph = False
            self.set_capturable(False)

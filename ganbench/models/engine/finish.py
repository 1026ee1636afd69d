"""What follows one G iteration on every executor: :class:`StepResult` (what a run of
:meth:`~ganbench.models.base.GANModule.iteration` leaves) and :meth:`Finish.finish` (count the steps,
``after_g_step``, the divergence watch, the log), so the eager, direct, graph and population
executors and the benchmark's reference loop do the same work after the update, with the same keys."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch.utils._pytree import tree_map


class StepResult(NamedTuple):
    """One G iteration's outcome, whichever executor ran it. The tensors are detached; after a replay
    they are the captured graph's outputs, which the next replay overwrites."""

    #: the last D step's loss and the G step's (summed over replicas), as logged with one replica
    d_loss: torch.Tensor
    g_loss: torch.Tensor
    #: the same per replica (``(population,)``; the losses themselves where a family gives no split)
    d_losses: torch.Tensor
    g_losses: torch.Tensor
    #: the values the last D step and the G step return to log (per-sample tensors reduced when logged)
    d_logs: dict[str, Any]
    g_logs: dict[str, Any]
    #: the iteration counted its own G step (Lightning's step progress) and D steps (``_d_steps``);
    #: False where the executor undid or never ran that Python (a graph's warm-up and replays)
    counted: bool = True
    #: replayed from a captured graph: its losses are already folded into the divergence flag
    replayed: bool = False

    @classmethod
    def of(cls, out: tuple[tuple[torch.Tensor, dict], tuple[torch.Tensor, dict]], counted: bool = True) -> StepResult:
        """From what :meth:`~ganbench.models.base.GANModule.iteration` returns."""
        (d_loss, d_logs), (g_loss, g_logs) = out
        d_logs, g_logs = dict(d_logs), dict(g_logs)
        d_loss, g_loss = d_loss.detach(), g_loss.detach()
        return cls(d_loss, g_loss, d_logs.pop("d_losses", d_loss), g_logs.pop("g_losses", g_loss), d_logs, g_logs,
                   counted)


def _copies(tree: Any) -> Any:
    return tree_map(lambda v: v.clone() if torch.is_tensor(v) else v, tree)


class Finish:
    """The bookkeeping after each G iteration of :class:`~ganbench.models.base.GANModule`."""

    def finish(self, result: StepResult, trainer: bool = True) -> None:
        """After an iteration, in this order: count the G step and the ``n_critic`` D steps where the
        iteration did not (``result.counted``), ``after_g_step`` (EMA of G, schedulers, ADA's p, a
        family's own), the divergence watch (:meth:`_watch`), and on logging steps the log
        (:meth:`log_step`). ``trainer=False`` (the benchmark's reference loop, which has no Trainer)
        leaves out what needs one: counting ``global_step``, reading the divergence flag, logging;
        the flag is still accumulated on the device, as the fit does."""
        if not result.counted:
            if trainer:
                g_opt = self.optimizers()[0]
                g_opt._on_before_step()  # count the G update as the eager path's g_opt.step() does
                g_opt._on_after_step()
            self._d_steps += self.n_critic
        self.after_g_step()
        if not trainer:
            if not result.replayed:
                self._accumulate_divergence(result.d_losses, result.g_losses)
            return
        self._watch(result.d_losses, result.g_losses, accumulate=not result.replayed)
        if self.logging_step():
            self.log_step(result)

    def logging_step(self) -> bool:
        """Log only on the steps Lightning sends to the loggers (every ``log_every_n_steps``) and at
        the last step: logging builds Python objects per value, which a launch-bound step feels."""
        trainer = self.trainer
        step = self.global_step
        every = max(1, trainer.log_every_n_steps)
        return step % every == 0 or step >= (trainer.max_steps or 0) > 0 or trainer.should_stop

    def log_step(self, result: StepResult) -> None:
        """``train/<key>`` (``train/<key>/r<k>`` per replica in a population): the losses, the values
        the D and G steps returned, the critic gap, the penalty, σ of instance noise, ADA's p and r_t.
        A replay's tensors are copied first: the graph's outputs change at the next replay."""
        penalty = self._penalty_value
        if result.replayed:
            result, penalty = _copies(result), _copies(penalty)
        d_logs = dict(result.d_logs)
        if self.ada is not None:
            d_logs["ada_p"] = self.ada.p
            if self.global_step >= self.cfg.ada_interval:  # r_t is measured from the first adjustment on
                d_logs["ada_rt"] = self.ada.rt
        if self.population > 1:
            self.log_replicas({"d_loss": result.d_losses, "g_loss": result.g_losses, **d_logs, **result.g_logs},
                              penalty)
            return
        self.log_dict({"train/d_loss": result.d_loss, "train/g_loss": result.g_loss}, prog_bar=True)
        logs = {f"train/{k}": v.float().mean() if torch.is_tensor(v) and v.dim() else v
                for k, v in {**d_logs, **result.g_logs}.items()}
        if "train/d_real" in logs and "train/d_fake" in logs and "train/critic_gap" not in logs:
            logs["train/critic_gap"] = logs["train/d_real"] - logs["train/d_fake"]
        if penalty is not None:
            logs[f"train/penalty_{self.cfg.penalty}"] = penalty
        if self.cfg.instance_noise > 0:
            logs["train/instance_noise_sigma"] = self.noise_sigma()
        self.log_dict(logs)

"""Divergence watch: a device flag of non-finite or too large losses, read every ``check_every``
steps; a diverged replica of a population is frozen (its learning rates 0) and the others train on."""

from __future__ import annotations

import torch


class Divergence:
    """Divergence detection and replica freezing of :class:`~ganbench.models.base.GANModule`."""

    def _accumulate_divergence(self, *losses: torch.Tensor) -> None:
        """Fold NaN/inf or |loss| > divergence_threshold into a device flag (no host sync)."""
        v = torch.stack([loss.detach().float().reshape(-1) for loss in losses])  # (losses, replicas)
        self._bad |= (~torch.isfinite(v) | (v.abs() > self.cfg.divergence_threshold)).any(0)

    def _watch(self, *losses: torch.Tensor, accumulate: bool = True) -> None:
        """Accumulate a divergence flag on the device; look at it only every ``check_every`` steps
        (and, through :meth:`check_divergence`, before every checkpoint and sample grid)."""
        if accumulate:
            self._accumulate_divergence(*losses)
        self._last_losses = losses
        step = self.global_step
        if step % self.cfg.check_every == 0 or step >= (self.trainer.max_steps or 0) > 0:
            self.check_divergence()

    def check_divergence(self) -> bool:
        """Read the device flag (a host sync; under DDP every rank must call it, and all stop when any
        rank saw a divergence) and mark the run diverged when a loss was non-finite or beyond
        ``divergence_threshold``. Returns whether the run has diverged. In a population, each newly
        diverged replica is frozen and recorded, and the run has diverged when every replica has."""
        if self.population > 1:
            self._watch_replicas(*self._last_losses)
            return self.status == "diverged"
        if self.status != "diverged" and self.trainer.strategy.reduce_boolean_decision(bool(self._bad.any()),
                                                                                      all=False):
            values = ", ".join(f"{x.sum().item():.4g}" for x in self._last_losses)
            self.mark_diverged(f"loss non-finite or above {self.cfg.divergence_threshold:g} "
                               f"(d_loss, g_loss = {values})")
        return self.status == "diverged"

    def _watch_replicas(self, *losses: torch.Tensor) -> None:
        """A diverged replica is a result, not the end of the fit: it is frozen (learning rates 0, so
        its non-finite values stay in its own slice) and the others train on; the fit stops when
        every replica has diverged."""
        bad = self._bad.float()
        if self.trainer.world_size > 1:  # one decision for all ranks
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        bad_host = (bad > 0).tolist()
        newly = [r for r, b in enumerate(bad_host) if b and self.alive[r]]
        if newly:
            bound = self.cfg.divergence_threshold
            for r in newly:
                values = ", ".join(f"{x[r].item():.4g}" for x in losses)
                self.alive[r] = False
                reason = f"loss non-finite or above {bound:g} (d_loss, g_loss = {values})"
                self.replica_divergence[r] = {"step": int(self.global_step), "reason": reason}
            self._update_frozen()
        if not any(self.alive):
            self.mark_diverged("every replica diverged")

    def mark_diverged(self, reason: str) -> None:
        self.status = "diverged"
        self.divergence = {"step": int(self.global_step), "reason": reason}
        self.trainer.should_stop = True

    #: (population,) bool, True for a diverged (frozen) replica; None while every replica trains
    _frozen: torch.Tensor | None = None

    def _update_frozen(self) -> None:
        dead = torch.tensor([not a for a in self.alive], device=self.fixed_z.device)
        self._frozen = dead if bool(dead.any()) else None

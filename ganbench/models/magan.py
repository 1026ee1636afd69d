"""MAGAN — Wang, Cully, Chang & Demiris, "MAGAN: Margin Adaptation for Generative Adversarial Networks", 2017.

EBGAN (:class:`~ganbench.models.ebgan.EBGAN`, autoencoder D with the MSE energy, D loss
``E[D(x)] + E[[m - D(G(z))]⁺]``, G loss ``E[D(G(z))]``, no pulling-away term) whose margin ``m`` adapts
(Algorithm 1): it starts at the mean real energy of the first D batch under the initial D (the paper
estimates it after autoencoder pre-training), and at the end of every *window* it becomes
``magan_margin_update(m, S_real, S_fake)`` (:func:`~ganbench.losses.magan_margin_update`): ``S_real``
when ``S_real < m`` and ``S_real < S_fake``, else unchanged. ``S_real``/``S_fake`` are the means over the
window's D steps of the batch-mean real and generated energies (averaged over data-parallel ranks).

The window is an epoch (``margin_every = 0``, the paper's choice; applied in ``on_train_epoch_end``) or
``margin_every`` G iterations (applied after the G update of iterations margin_every, 2·margin_every, …).
``train/magan_margin`` (the margin in use for the next iteration) is logged at every logging step;
the margin and the window's sums are kept in the checkpoint. In a population each replica has its own
margin and window (``(population,)`` and ``(population, 3)``), from its own energies.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ganbench.losses import magan_margin_update
from ganbench.models.ebgan import EBGAN
from ganbench.models.engine.batch import Batch


class MAGAN(EBGAN):
    """Args (besides :class:`EBGAN`'s): ``margin`` — the initial margin, or ``None`` to take the mean real
    energy of the first D batch; ``margin_every`` — 0 adapts at each epoch end, N > 0 every N G iterations."""

    family: ClassVar[str] = "magan"
    device_state: ClassVar[dict[str, str]] = {"margin": "margin"}  # the D loss reads the margin as declared state
    replica_entries: ClassVar[tuple[str, ...]] = ("magan",)

    def __init__(self, margin: float | None = None, margin_every: int = 0, pt_weight: float = 0.0, **kwargs: Any):
        super().__init__(margin=float("nan") if margin is None else margin, pt_weight=pt_weight, **kwargs)
        self.margin = self.replica_state(self.margin)  # a (population,) float64 vector in a population
        # float64 sums over the window: Σ mean real energy, Σ mean fake energy, number of D steps (per replica)
        self.register_buffer("magan_window", torch.zeros(self.replica_shape(3), dtype=torch.float64), persistent=False)

    def d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real = batch.x
        if any(m != m for m in self.replica_floats(self.margin)):  # NaN: from the first real batch (Algorithm 1)
            with torch.no_grad():
                first = self.replica_means(self.energies(real)[0])
            first = self.trainer.strategy.reduce(first, reduce_op="mean")
            self.margin = self.replica_state(first.tolist())
            self.write_state("margin")
        loss, logs = super().d_loss(batch)
        real_mean = logs["energy_real"]
        self.magan_window += torch.stack([real_mean.double(), logs["energy_fake"].double(),
                                          torch.ones_like(real_mean, dtype=torch.float64)], -1)
        return loss, logs

    def d_margin(self) -> torch.Tensor:
        return self.state_of("margin")

    def adapt_margin(self) -> None:
        """Apply :func:`magan_margin_update` with the window's mean energies (each replica's own) and
        start a new window."""
        window = self.trainer.strategy.reduce(self.magan_window.clone(), reduce_op="mean")
        if (window[..., 2] > 0).all():  # every replica takes the same D steps
            s_real, s_fake = (window[..., :2] / window[..., 2:]).unbind(-1)
            self.margin = self.replica_update(magan_margin_update, self.margin, s_real.tolist(), s_fake.tolist())
        self.magan_window.zero_()

    def after_g_step(self) -> None:
        super().after_g_step()
        every = self.cfg.margin_every
        if every > 0 and self.global_step % every == 0:
            self.adapt_margin()
        if not self.logging_step():
            return
        self.log_state({"magan_margin": torch.as_tensor(self.margin, dtype=torch.float64, device=self.device)})

    def on_train_epoch_end(self) -> None:
        if self.cfg.margin_every == 0:
            self.adapt_margin()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ganbench"]["magan"] = {"margin": self.replica_entry(self.margin),
                                           "window": self.magan_window.tolist()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("ganbench", {}).get("magan")
        if state is not None:
            self.margin = self.replica_state(state["margin"])
            self.magan_window = torch.tensor(state["window"], dtype=torch.float64, device=self.magan_window.device)


__all__ = ["MAGAN"]

"""The two halves of one player's update, ``backward`` (the gradient) and ``update`` (the optimizer
step), which :meth:`ganbench.models.base.GANModule.iteration` runs back to back for each player
(``update_order: alternating``) or with both gradients taken before either step (``simultaneous``).

``lightning=False`` is the same update with plain torch calls and nothing of the Trainer (the
CUDA-graph capture and the benchmark's reference loop); ``opt`` may then be a bare optimizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from ganbench.models.base import GANModule


def backward(model: GANModule, opt, loss: torch.Tensor, module: nn.Module, hist, lightning: bool = True) -> None:
    """zero_grad → backward of ``loss`` (plus historical averaging) → clip: the gradient of one update."""
    h = model.cfg
    if hist is not None:
        loss = loss + h.historical_averaging * hist.penalty(module)
    optimizer = getattr(opt, "optimizer", opt)  # the torch optimizer inside Lightning's wrapper
    optimizer.zero_grad(set_to_none=True)
    if model._direct_steps or not lightning:  # nothing listens to the per-step hooks: skip their dispatch
        loss.backward()
    else:
        model.manual_backward(loss)
    if h.grad_clip > 0:
        if lightning:
            model.clip_gradients(opt, gradient_clip_val=h.grad_clip, gradient_clip_algorithm="norm")
        else:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], h.grad_clip)


def update(model: GANModule, opt, module: nn.Module, hist, counted: bool, lightning: bool = True) -> None:
    """The optimizer step from the gradients :func:`backward` left; ``counted``: the G update that
    Lightning's step progress (``global_step``) counts. Frozen (diverged) replicas keep their values."""
    optimizer = getattr(opt, "optimizer", opt)
    frozen = model._frozen
    if frozen is not None:  # diverged replicas: their slices are put back after the step
        params = [p for group in optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
    if model._direct_steps or not lightning:
        if counted and lightning:  # Lightning's step progress (global_step) counts it, as opt.step() would
            opt._on_before_step()
            optimizer.step()
            opt._on_after_step()
        else:
            optimizer.step()
    elif counted:
        opt.step()
    else:  # same precision plugin and hooks, but global_step keeps counting G iterations only
        model.trainer.strategy.optimizer_step(opt.optimizer, closure=lambda: None, model=model)
    if frozen is not None:
        _restore_frozen(params, before, frozen)
    if hist is not None:
        hist.update(module)


@torch.no_grad()
def _restore_frozen(params: list[torch.Tensor], before: list[torch.Tensor], frozen: torch.Tensor) -> None:
    """Put back the slices of the frozen replicas, so a diverged replica keeps the values it had
    when its divergence was seen and nothing of it reaches a shared kernel as a new NaN."""
    for p, b in zip(params, before):
        p.copy_(torch.where(frozen.reshape(-1, *([1] * (p.dim() - 1))), b, p))


__all__ = ["backward", "update"]

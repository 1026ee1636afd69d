"""Per-replica optimizer hyper-parameters for populations.

``torch.optim`` optimizers take one learning rate and one pair of betas per parameter group (a
tensor ``lr`` must hold one element), but a population stacks N replicas into each parameter
(``ganbench.nn.population``) and a study samples the learning rate and betas per replica. Splitting
the stacked tensors into N groups would give up the batched step, so :class:`PopulationAdam` is
``torch.optim.Adam`` with its update broadcast over the leading replica axis: the same single-tensor
arithmetic, in the same order, with ``lr``, ``beta1`` and ``beta2`` as ``(N,)`` vectors. Replica r
then follows, to float32 rounding, the ``torch.optim.Adam`` fit that has replica r's values (tested
against it). Learning-rate schedulers keep working: a replica's rate is the group's current ``lr``
times its fixed ratio to the base rate.
"""

from __future__ import annotations

from typing import Any

import torch


class PopulationAdam(torch.optim.Adam):
    """Adam/AdamW whose ``lr`` ratio and betas differ per replica (leading axis of every parameter).

    Args:
        params: stacked parameters, each of shape ``(N, ...)``.
        lr_ratio: ``(N,)`` replica learning rate over the group's ``lr``.
        beta1, beta2: ``(N,)`` per-replica betas, or None for the group's.
        **kwargs: ``torch.optim.Adam``'s own arguments (``lr``, ``betas``, ``eps``, ``weight_decay``,
            ``decoupled_weight_decay``); ``amsgrad``, ``maximize`` and fused/foreach paths are not batched.
    """

    def __init__(self, params: Any, lr_ratio: torch.Tensor, beta1: torch.Tensor | None = None,
                 beta2: torch.Tensor | None = None, **kwargs: Any) -> None:
        for flag in ("amsgrad", "maximize", "fused", "capturable", "differentiable"):
            if kwargs.get(flag):
                raise ValueError(f"{flag}=True is not supported with per-replica hyper-parameters")
        kwargs = {k: v for k, v in kwargs.items() if k in ("lr", "betas", "eps", "weight_decay",
                                                          "decoupled_weight_decay")}
        super().__init__(params, foreach=False, **kwargs)
        self.lr_ratio = lr_ratio.double()
        self.beta1 = None if beta1 is None else beta1.double()
        self.beta2 = None if beta2 is None else beta2.double()

    def _vectors(self, group: dict, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The group's per-replica ``(N,)`` vectors on ``device``, made once: ``ratio``, ``beta1`` and
        ``beta2`` in float64 (the bias corrections), and ``1-beta1``, ``beta2 p``, ``1-beta2`` in the
        parameters' ``dtype`` (the moment updates). The step then reads nothing from the host (a CUDA
        graph can capture it) and casts nothing per parameter."""
        cache = self.__dict__.setdefault("_on_device", {})
        key = (id(group), device, dtype, tuple(float(b) for b in group["betas"]))  # a scheduler may cycle the betas
        if key not in cache:
            shared = torch.tensor([float(b) for b in group["betas"]], dtype=torch.float64)
            n = len(self.lr_ratio)
            beta1 = self.beta1 if self.beta1 is not None else shared[0].expand(n)
            beta2 = self.beta2 if self.beta2 is not None else shared[1].expand(n)
            ratio, beta1, beta2 = (x.to(device).clone() for x in (self.lr_ratio, beta1, beta2))
            cache[key] = {"ratio": ratio, "beta1": beta1, "beta2": beta2, "1-beta1": (1 - beta1).to(dtype),
                          "beta2 p": beta2.to(dtype), "1-beta2": (1 - beta2).to(dtype)}
        return cache[key]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            eps, wd = group["eps"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            lrs: dict[int, torch.Tensor] = {}  # per set of vectors: a scheduler's tensor lr or a float, × ratio
            for p in params:
                vec = self._vectors(group, p.device, p.dtype)  # one lookup per (device, dtype) in practice
                lr = lrs.get(id(vec))
                if lr is None:
                    lr = lrs[id(vec)] = group["lr"] * vec["ratio"]
                shape = (-1, *([1] * (p.dim() - 1)))  # an (N,) vector broadcast over p's replica axis
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = state["step"].to(p.device, torch.float64)
                if wd != 0:
                    if group.get("decoupled_weight_decay", False):
                        p.mul_((1 - lr * wd).to(p.dtype).view(shape))
                    else:
                        grad = grad.add(p, alpha=wd)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, vec["1-beta1"].view(shape))
                exp_avg_sq.mul_(vec["beta2 p"].view(shape)).addcmul_(grad * vec["1-beta2"].view(shape), grad)
                bias_correction1 = 1 - vec["beta1"] ** step
                bias_correction2_sqrt = (1 - vec["beta2"] ** step) ** 0.5
                step_size = lr / bias_correction1
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt.to(p.dtype).view(shape)).add_(eps)
                p.add_(exp_avg * (-step_size).to(p.dtype).view(shape) / denom)
        return loss

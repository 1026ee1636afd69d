"""LSGAN — Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017.

D regresses real samples to ``b`` and generated ones to ``a``; G pulls D(G(z)) towards ``c``
(eq. 2). The defaults a = 0, b = 1, c = 1 are the 0-1 coding of eq. 9 used in the experiments;
a = -1, b = 1, c = 0 (eq. 8) minimizes the Pearson χ² divergence. Adam(2e-4, β1 = 0.5) and batch
norm in both networks (§4).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

from ganbench.losses import Objective, d_ls, g_ls
from ganbench.models.base import GANModule
from ganbench.nn.norms import Norm


class LSGAN(GANModule):
    family: ClassVar[str] = "lsgan"

    def __init__(self, a: float = 0.0, b: float = 1.0, c: float = 1.0, g_norm: Norm = "batch",
                 d_norm: Norm = "batch", **kwargs: Any):
        """``a``, ``b``: D's targets for generated and real samples; ``c``: the value G wants D to output."""
        super().__init__(loss="ls", g_norm=g_norm, d_norm=d_norm, **kwargs)
        self.objective = Objective(partial(d_ls, a=a, b=b), partial(g_ls, c=c))


__all__ = ["LSGAN"]

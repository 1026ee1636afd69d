"""CycleGAN — Zhu, Park, Isola & Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017.

Two ResNet generators G_AB: A → B and G_BA: B → A (:mod:`ganbench.nn.resnet_g`), two PatchGAN
discriminators D_A, D_B (:mod:`ganbench.nn.patch`), instance norm, the least-squares objective (§4,
"Training details"), and

    L = L_GAN(G_AB, D_B) + L_GAN(G_BA, D_A) + λ·L_cyc + λ_idt·λ·L_identity          (eq. 3 and §5.2)

with ``L_cyc = E‖G_BA(G_AB(a)) − a‖₁ + E‖G_AB(G_BA(b)) − b‖₁`` (eq. 2), λ = 10, and the identity loss
``E‖G_AB(b) − b‖₁ + E‖G_BA(a) − a‖₁`` weighted ``0.5·λ`` (Taigman et al. 2017). Each D is updated on a
history of 50 generated images (:class:`ImagePool`, Shrivastava et al. 2017 §2.3), saved in checkpoints.
One generator optimizer covers both Gs and one discriminator optimizer both Ds, Adam(2e-4, β=(0.5, 0.999)).

The adversarial term is the objective's ``g`` as written in :mod:`ganbench.losses` (``½E[(D − 1)²]``
for ``ls``). Data: an unpaired data set (``fashion_a2b``, ``imagefolder_unpaired``), batches ``(B, A)``.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn as nn

from ganbench.losses import LossName
from ganbench.models.pix2pix import ImageToImage
from ganbench.nn.norms import Norm
from ganbench.nn.patch import PatchDiscriminator
from ganbench.nn.resnet_g import ResNetTranslator


class ImagePool:
    """A history of generated images (Shrivastava et al. 2017, §2.3; CycleGAN's ``image_pool.py``).

    Per image of a queried batch: while the pool holds fewer than ``size`` images, the image is stored
    and returned; once full, with probability ½ a uniformly chosen stored image is returned and replaced
    by the new one, otherwise the new image is returned. ``size = 0`` returns the batch unchanged.
    Random draws come from the pool's own seeded generator, whose state is saved with the images.
    """

    def __init__(self, size: int = 50, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator) < 0.5:
                i = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[i].to(image))
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [t.cpu() for t in self.images], "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = list(state["images"])
        self.generator.set_state(state["rng"])


class CycleTerms(NamedTuple):
    """Translations and reconstruction losses of one A batch and one B batch."""

    fake_b: torch.Tensor
    fake_a: torch.Tensor
    cycle: torch.Tensor
    identity: torch.Tensor


def cycle_terms(g_ab: nn.Module, g_ba: nn.Module, a: torch.Tensor, b: torch.Tensor,
                identity: bool = True) -> CycleTerms:
    """``G_AB(a)``, ``G_BA(b)``, the cycle loss of eq. 2 ``E|G_BA(G_AB(a)) − a| + E|G_AB(G_BA(b)) − b|``
    and the identity loss ``E|G_AB(b) − b| + E|G_BA(a) − a|`` (0 without computing it when not ``identity``)."""
    fake_b, fake_a = g_ab(a), g_ba(b)
    cycle = (g_ba(fake_b) - a).abs().mean() + (g_ab(fake_a) - b).abs().mean()
    idt = (g_ab(b) - b).abs().mean() + (g_ba(a) - a).abs().mean() if identity else a.new_zeros(())
    return CycleTerms(fake_b, fake_a, cycle, idt)


class CycleGAN(ImageToImage):
    """Args (besides :class:`GANModule`'s): ``cycle_weight`` λ; ``identity_weight`` λ_idt (the identity loss
    is weighted ``λ_idt·λ``); ``pool_size`` images per discriminator history; ``n_blocks`` residual blocks
    (``None``: 6 below 256 px, 9 from 256 px); ``n_grid`` test images in the sample grid."""

    family: ClassVar[str] = "cyclegan"
    population_unsupported: ClassVar[str | None] = (
        "its image pools keep one run's history of fakes in a Python list and draw on the host from one "
        "generator for every replica")

    def __init__(self, loss: LossName = "ls", g_norm: Norm = "instance", d_norm: Norm = "instance", width: int = 64,
                 cycle_weight: float = 10.0, identity_weight: float = 0.5, pool_size: int = 50,
                 n_blocks: int | None = None, n_grid: int = 8, **kwargs: Any):
        super().__init__(loss=loss, g_norm=g_norm, d_norm=d_norm, width=width, n_grid=n_grid, **kwargs)
        self.pools = {"a": ImagePool(pool_size, seed=0), "b": ImagePool(pool_size, seed=1)}

    def build_generator(self) -> nn.Module:
        h = self.cfg
        return nn.ModuleDict({k: ResNetTranslator(self.data_shape, h.width, h.g_norm, n_blocks=h.n_blocks)
                              for k in ("ab", "ba")})

    def build_discriminator(self) -> nn.Module:
        h = self.cfg
        return nn.ModuleDict({k: PatchDiscriminator(self.data_shape, h.width, h.d_norm) for k in ("a", "b")})

    def graph_blocker(self) -> str | None:
        if self.cfg.pool_size > 0:
            return ("the image pool (model.pool_size > 0) keeps past fakes in a Python list and draws on the "
                    "host, which a graph would freeze; model.pool_size 0 captures")
        return None

    def d_loss(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D_B on real B vs pooled G_AB(A), plus D_A on real A vs pooled G_BA(B)."""
        b, a = real, labels
        with torch.no_grad():
            fake_b, fake_a = self.generator["ab"](a), self.generator["ba"](b)
        logs, loss = {}, real.new_zeros(())
        for name, x, fake in (("b", b, fake_b), ("a", a, fake_a)):
            d = self.discriminator[name]
            d_real, d_fake = d(self.d_input(x)), d(self.d_input(self.pools[name].query(fake)))
            loss = loss + self.objective.d(d_real, d_fake)
            logs |= {f"d_{name}_real": d_real.detach().mean(), f"d_{name}_fake": d_fake.detach().mean()}
        return loss, logs

    def g_loss(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 3 plus the identity loss."""
        h = self.cfg
        b, a = real, labels
        t = cycle_terms(self.generator["ab"], self.generator["ba"], a, b, identity=h.identity_weight > 0)
        adv = (self.objective.g(self.discriminator["b"](self.d_input(t.fake_b)))
               + self.objective.g(self.discriminator["a"](self.d_input(t.fake_a))))
        loss = adv + h.cycle_weight * t.cycle + h.identity_weight * h.cycle_weight * t.identity
        return loss, {"cycle": t.cycle.detach(), "identity": t.identity.detach(), "g_adv": adv.detach()}

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "ab", ema: bool = True) -> torch.Tensor:
        """G_AB(x) (``direction="ab"``) or G_BA(x) (``"ba"``), in eval mode."""
        net = self.translator(ema)
        was_training = net.training
        net.eval()
        try:
            return net[direction](x.to(self.grid_a))
        finally:
            net.train(was_training)

    def grid_images(self) -> tuple[torch.Tensor, int]:
        """Rows: A | G_AB(A) | G_BA(G_AB(A)) | B | G_BA(B) | G_AB(G_BA(B))."""
        a, b = self.grid_a, self.grid_b
        fake_b, fake_a = self.translate(a, "ab"), self.translate(b, "ba")
        rows = [a, fake_b, self.translate(fake_b, "ba"), b, fake_a, self.translate(fake_a, "ab")]
        return torch.cat(rows), len(a)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ganbench"]["image_pools"] = {k: p.state_dict() for k, p in self.pools.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        for k, state in checkpoint.get("ganbench", {}).get("image_pools", {}).items():
            self.pools[k].load_state_dict(state)


__all__ = ["CycleGAN", "ImagePool", "cycle_terms"]

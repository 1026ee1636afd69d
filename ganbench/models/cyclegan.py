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
A population stacks all four networks and gives every replica its own pair of pools; its losses are
evaluated per replica.

The adversarial term is the objective's ``g`` as written in :mod:`ganbench.losses` (``½E[(D − 1)²]``
for ``ls``). Data: an unpaired data set (``fashion_a2b``, ``imagefolder_unpaired``), batches ``(B, A)``.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn as nn

from ganbench.losses import LossName
from ganbench.models.engine.batch import Batch
from ganbench.models.engine.d_input import HostState
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


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``E|x − y|``."""
    return (x - y).abs().mean()


def cycle_terms(g_ab: nn.Module, g_ba: nn.Module, a: torch.Tensor, b: torch.Tensor,
                identity: bool = True, distance: Any = l1) -> CycleTerms:
    """``G_AB(a)``, ``G_BA(b)``, the cycle loss of eq. 2 ``E|G_BA(G_AB(a)) − a| + E|G_AB(G_BA(b)) − b|``
    and the identity loss ``E|G_AB(b) − b| + E|G_BA(a) − a|`` (0 without computing it when not ``identity``);
    ``distance`` takes the place of :func:`l1` (a population's, per replica)."""
    fake_b, fake_a = g_ab(a), g_ba(b)
    cycle = distance(g_ba(fake_b), a) + distance(g_ab(fake_a), b)
    idt = distance(g_ab(b), b) + distance(g_ba(a), a) if identity else a.new_zeros(())
    return CycleTerms(fake_b, fake_a, cycle, idt)


class CycleGAN(ImageToImage):
    """Args (besides :class:`GANModule`'s): ``cycle_weight`` λ; ``identity_weight`` λ_idt (the identity loss
    is weighted ``λ_idt·λ``); ``pool_size`` images per discriminator history; ``n_blocks`` residual blocks
    (``None``: 6 below 256 px, 9 from 256 px); ``n_grid`` test images in the sample grid."""

    family: ClassVar[str] = "cyclegan"
    #: a population's checkpoint holds one pair of image pools per replica; a replica loaded alone takes its own
    replica_entries: ClassVar[tuple[str, ...]] = ("image_pools",)
    #: the losses are evaluated per replica, each replica's fakes go through its own pools, and the
    #: pairs are repeated per replica (``sample`` refuses for every family of image-to-image translation)
    batched_overrides: ClassVar[frozenset[str]] = frozenset({"d_loss", "g_loss", "split_batch", "sample"})

    def __init__(self, loss: LossName = "ls", g_norm: Norm = "instance", d_norm: Norm = "instance", width: int = 64,
                 cycle_weight: float = 10.0, identity_weight: float = 0.5, pool_size: int = 50,
                 n_blocks: int | None = None, n_grid: int = 8, **kwargs: Any):
        super().__init__(loss=loss, g_norm=g_norm, d_norm=d_norm, width=width, n_grid=n_grid, **kwargs)
        #: each replica's pools of D_A's and D_B's fakes (the same seeds as the fit the replica is)
        self.pools = self.for_each_replica(lambda: {"a": ImagePool(pool_size, seed=0),
                                                    "b": ImagePool(pool_size, seed=1)})

    def build_generator(self) -> nn.Module:
        h = self.cfg
        return nn.ModuleDict({k: ResNetTranslator(self.data_shape, h.width, h.g_norm, n_blocks=h.n_blocks)
                              for k in ("ab", "ba")})

    def build_discriminator(self) -> nn.Module:
        h = self.cfg
        return nn.ModuleDict({k: PatchDiscriminator(self.data_shape, h.width, h.d_norm) for k in ("a", "b")})

    def host_state(self) -> HostState | None:
        if self.cfg.pool_size > 0:
            return HostState("the image pool (model.pool_size > 0) keeps past fakes in a Python list and draws "
                             "on the host", "model.pool_size 0")
        return None

    def d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D_B on real B vs pooled G_AB(A), plus D_A on real A vs pooled G_BA(B)."""
        b, a = batch.x, batch.cond
        with torch.no_grad():
            fake_b, fake_a = self.generator["ab"](a), self.generator["ba"](b)
        logs, losses = {}, b.new_zeros(())
        for name, x, fake in (("b", b, fake_b), ("a", a, fake_a)):
            d = self.discriminator[name]
            d_real, d_fake = d(self.d_input(x)), d(self.d_input(self.pooled(name, fake)))
            losses = losses + self.per_replica(self.objective.d, d_real, d_fake)
            logs |= {f"d_{name}_real": d_real.detach(), f"d_{name}_fake": d_fake.detach()}
        return losses.sum(), {"d_losses": losses.detach(), **logs}

    def pooled(self, name: str, fake: torch.Tensor) -> torch.Tensor:
        """Each replica's fakes for D_``name`` through that replica's pool."""
        return torch.cat([pools[name].query(f) for pools, f in zip(self.pools, self.replica_slices(fake))])

    def g_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 3 plus the identity loss."""
        h = self.cfg
        b, a = batch.x, batch.cond
        t = cycle_terms(self.generator["ab"], self.generator["ba"], a, b, identity=h.identity_weight > 0,
                        distance=lambda x, y: self.per_replica(l1, x, y))
        adv = (self.per_replica(self.objective.g, self.discriminator["b"](self.d_input(t.fake_b)))
               + self.per_replica(self.objective.g, self.discriminator["a"](self.d_input(t.fake_a))))
        losses = adv + h.cycle_weight * t.cycle + h.identity_weight * h.cycle_weight * t.identity
        return losses.sum(), {"g_losses": losses.detach(), "cycle": t.cycle.detach(),
                              "identity": t.identity.detach(), "g_adv": adv.detach()}

    def translate(self, x: torch.Tensor, direction: str = "ab", ema: bool = True) -> torch.Tensor:
        """G_AB(x) (``direction="ab"``) or G_BA(x) (``"ba"``), in eval mode; a population returns
        ``population × len(x)`` rows, replica by replica, every replica on the same ``x``."""
        return self.translated(self.replicated(x.to(self.grid_a)), direction, ema)

    @torch.no_grad()
    def translated(self, x: torch.Tensor, direction: str, ema: bool = True) -> torch.Tensor:
        """The translation of a folded batch ``x`` (each replica's rows by its own G), in eval mode."""
        net = self.translator(ema)
        was_training = net.training
        net.eval()
        try:
            return net[direction](x)
        finally:
            net.train(was_training)

    def grid_images(self) -> tuple[torch.Tensor, int]:
        """Rows: A | G_AB(A) | G_BA(G_AB(A)) | B | G_BA(B) | G_AB(G_BA(B)) (a population: these six rows
        of each replica in turn)."""
        a, b = self.replicated(self.grid_a), self.replicated(self.grid_b)
        fake_b, fake_a = self.translated(a, "ab"), self.translated(b, "ba")
        rows = [a, fake_b, self.translated(fake_b, "ba"), b, fake_a, self.translated(fake_a, "ab")]
        return self.replica_interleaved(rows), len(self.grid_a)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        pools = [{k: p.state_dict() for k, p in replica.items()} for replica in self.pools]
        checkpoint["ganbench"]["image_pools"] = self.replica_entry(pools)  # one fit: its pair of pools

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        pools = checkpoint.get("ganbench", {}).get("image_pools", {})
        for replica, states in zip(self.pools, pools if isinstance(pools, list) else [pools]):
            for k, state in states.items():
                replica[k].load_state_dict(state)


__all__ = ["CycleGAN", "ImagePool", "cycle_terms"]

"""Pix2Pix — Isola, Zhu, Zhou & Efros, "Image-to-Image Translation with Conditional Adversarial
Networks", CVPR 2017.

G* = arg min_G max_D L_cGAN(G, D) + λ L_L1(G) (eq. 4), λ = 100: a U-Net G (:mod:`ganbench.nn.unet`)
whose only noise is dropout (kept on at test time, §3.2.1), a PatchGAN D that sees the input with the
real or generated output (:class:`ganbench.nn.patch.PairedPatchDiscriminator`), the non-saturating
objective (or ``ls``), D's objective divided by 2 (§3.3), Adam(2e-4, β=(0.5, 0.999)), batch norm.

Data: a paired data set (``fashion_edges2image``, ``imagefolder_pairs``) whose batches are
``(target B, input A)`` (:mod:`ganbench.data.paired`). Validation logs ``val/l1``, ``val/psnr`` and
``val/ssim`` of G(A) against B on the test split, images scaled to [0, 1] (torchmetrics).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn as nn
from torchmetrics import MeanAbsoluteError
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from ganbench import GanbenchError
from ganbench.losses import LossName
from ganbench.models.base import GANModule
from ganbench.models.engine.batch import Batch
from ganbench.nn.norms import Norm
from ganbench.nn.patch import PairedPatchDiscriminator
from ganbench.nn.unet import UNetGenerator


class ImageToImage(GANModule):
    """What paired and unpaired translation share: ``(B, A)`` batches, a fixed grid of test inputs and
    targets (filled from the data module when training starts, kept in checkpoints), no latent space.

    Args:
        n_grid: test pairs shown in the sample grid (one column each).
    """

    pack_unsupported: ClassVar[str | None] = "its discriminator scores (input, output) image pairs"
    augment_unsupported: ClassVar[str | None] = (
        "its discriminator scores (input, output) image pairs, which an augmentation would have to "
        "transform together")

    def __init__(self, n_grid: int = 8, **kwargs: Any):
        super().__init__(**kwargs)
        self.register_buffer("grid_b", torch.zeros(n_grid, *self.data_shape))
        self.register_buffer("grid_a", torch.zeros(n_grid, *self.data_shape))
        self.register_buffer("grid_ready", torch.zeros((), dtype=torch.bool))

    def split_batch(self, batch) -> list[Batch]:
        """``(B, A)`` → one :class:`Batch` per D step: the target images B as ``x``, the input images A
        as ``cond`` (in a population, every replica's rows of the same pairs)."""
        b, a = batch
        chunks = zip(b.chunk(self.n_critic), a.chunk(self.n_critic))
        return [Batch(self.replicated(x), cond=self.replicated(y)) for x, y in chunks]

    def on_fit_start(self) -> None:
        super().on_fit_start()
        dm = self.trainer.datamodule
        if not bool(self.grid_ready) and dm is not None:
            if not hasattr(dm, "real_pairs"):
                raise GanbenchError(f"model family {self.family} needs an image-to-image data module (batches (B, A))")
            b, a = dm.real_pairs(len(self.grid_a), split="test")
            self.grid_b, self.grid_a = b.to(self.grid_b), a.to(self.grid_a)
            self.grid_ready.fill_(True)

    def translator(self, ema: bool = True) -> nn.Module:
        return self.ema_generator.module if (ema and self.ema_generator is not None) else self.generator

    def sample(self, n: int, z: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               ema: bool = True) -> torch.Tensor:
        raise GanbenchError(f"model family {self.family} translates images and has no latent space: use its "
                            "translate(a) method; metrics that draw samples from latents do not apply")


class Pix2Pix(ImageToImage):
    """Args (besides :class:`GANModule`'s): ``l1_weight`` λ of eq. 4; ``dropout`` of G's noisy layers;
    ``n_grid`` test pairs in the sample grid."""

    family: ClassVar[str] = "pix2pix"
    population_unsupported: ClassVar[str | None] = (
        "the U-Net's dropout, G's only noise, draws its masks from the global random stream, so replica k "
        "would not draw the masks of the fit with seed s+k")

    def __init__(self, loss: LossName = "ns", g_norm: Norm = "batch", d_norm: Norm = "batch", width: int = 64,
                 l1_weight: float = 100.0, dropout: float = 0.5, n_grid: int = 8, **kwargs: Any):
        super().__init__(loss=loss, g_norm=g_norm, d_norm=d_norm, width=width, n_grid=n_grid, **kwargs)
        self.val_l1 = MeanAbsoluteError()
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)

    def build_generator(self) -> nn.Module:
        h = self.cfg
        return UNetGenerator(self.data_shape, h.width, h.g_norm, dropout=h.dropout)

    def build_discriminator(self) -> nn.Module:
        return PairedPatchDiscriminator(self.data_shape, self.cfg.width, self.cfg.d_norm)

    def d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Half the base D loss on (A, B) vs (A, G(A)) (§3.3: "we divide the objective by 2 while optimizing D"):
        D is conditioned on the input image A of each pair."""
        b, a = batch.x, batch.cond
        with torch.no_grad():
            fake = self.generator(a)
        losses, logs = self.d_losses(b, fake, None, a, self.discriminate(b, a), self.discriminate(fake, a))
        return 0.5 * losses.sum(), {**logs, "d_losses": 0.5 * logs["d_losses"]}

    def g_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``L_cGAN`` generator term + λ·E‖B − G(A)‖₁ (eq. 3, 4)."""
        b, a = batch.x, batch.cond
        fake = self.generator(a)
        d_real = self.discriminate(b, a) if self.objective.g_needs_real else None
        l1 = (fake - b).abs().mean()
        return self.objective.g(self.discriminate(fake, a), d_real) + self.cfg.l1_weight * l1, {"l1": l1}

    @torch.no_grad()
    def translate(self, a: torch.Tensor, ema: bool = True) -> torch.Tensor:
        """G(A) in eval mode (dropout stays on: it is G's noise)."""
        net = self.translator(ema)
        was_training = net.training
        net.eval()
        try:
            return net(a.to(self.grid_a))
        finally:
            net.train(was_training)

    def grid_images(self) -> tuple[torch.Tensor, int]:
        """Rows: input A | output G(A) | target B."""
        return torch.cat([self.grid_a, self.translate(self.grid_a), self.grid_b]), len(self.grid_a)

    def validation_step(self, batch, batch_idx: int) -> None:
        b, a = batch
        fake, target = (self.translate(a) + 1) / 2, (b + 1) / 2
        for name, metric in (("l1", self.val_l1), ("psnr", self.val_psnr), ("ssim", self.val_ssim)):
            metric(fake, target)
            self.log(f"val/{name}", metric, on_step=False, on_epoch=True)


__all__ = ["ImageToImage", "Pix2Pix"]

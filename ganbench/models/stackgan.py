"""StackGAN-style two-stage generation — Zhang, Xu, Li, Zhang, Wang, Huang & Metaxas, "StackGAN: Text
to Photo-realistic Image Synthesis with Stacked Generative Adversarial Networks", ICCV 2017.

The text embedding φ_t of the paper is a learned class embedding here. **Conditioning augmentation**
(§3.1): ``(μ, log σ²) = FC(φ)``, ``ĉ = μ + σ ⊙ ε`` with ε ~ N(0, I), and G's loss adds
``λ·D_KL(N(μ, diag σ²) ‖ N(0, I))`` (eq. 3, 5; λ = 1).

* **Stage I** (§3.2) draws a low-resolution image (``stage1_resolution``, default R/2) from ``(z, ĉ₀)``
  with the ``arch`` generator; its D sees real images downsampled to that resolution.
* **Stage II** (§3.3) refines the stage-I image to R: a stride-2 encoder, the stage-II ``ĉ`` (its own CA)
  replicated spatially and concatenated, residual blocks, nearest-neighbour up-sampling blocks.
  Stage I is loaded from ``stage1_ckpt`` and frozen (eval mode, no gradients).

Both Ds are class-conditional (projection, Miyato & Koyama 2018, instead of the paper's spatially
replicated compressed embedding) and matching-aware (Reed et al. 2016, as in StackGAN): D's loss is
``½[ℓ_D(real, fake) + ℓ_D(real, real with a wrong class)]``. Training is stage by stage: fit with
``stage: 1``, then with ``stage: 2`` and ``stage1_ckpt`` pointing at the stage-1 checkpoint. Stage-1
samples (grids, metrics) are the stage-I images up-sampled to the data resolution.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ganbench import GanbenchError
from ganbench.losses import LossName
from ganbench.models.base import GANModule
from ganbench.models.engine.batch import Batch
from ganbench.nn import DISCRIMINATORS, GENERATORS, Arch
from ganbench.nn.norms import Norm, conv, feature_norm
from ganbench.nn.resnet_g import ResidualBlock


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``D_KL(N(μ, diag e^{logvar}) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²)``, averaged over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()


class ConditioningAugmentation(nn.Module):
    """Class → ``(ĉ, KL)``: embedding φ, ``(μ, log σ²) = FC(φ)``, ``ĉ = μ + σ ⊙ ε`` (Zhang et al. 2017, §3.1)."""

    def __init__(self, num_classes: int, c_dim: int, embed_dim: int = 128):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.fc = nn.Linear(embed_dim, 2 * c_dim)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.fc(self.embed(y)).chunk(2, dim=1)
        return mu + (0.5 * logvar).exp() * torch.randn_like(mu), kl_standard_normal(mu, logvar)


class Stage1Generator(nn.Module):
    """(z, y) → (low-resolution image, KL): CA, then the ``arch`` generator on ``concat(z, ĉ)``."""

    def __init__(self, arch: str, latent_dim: int, c_dim: int, shape: tuple[int, ...], width: int, norm: str,
                 num_classes: int):
        super().__init__()
        self.ca = ConditioningAugmentation(num_classes, c_dim)
        self.net = GENERATORS[arch](latent_dim=latent_dim + c_dim, shape=shape, width=width, norm=norm)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, kl = self.ca(y)
        return self.net(torch.cat([z, c], dim=1)), kl


class Stage2Generator(nn.Module):
    """(stage-I image, y) → (image at ``shape``, KL): encode (one stride-2 conv), concat ĉ, residual blocks,
    ``log2(2R / R₁)`` up-sampling blocks, 3×3 conv, Tanh (Zhang et al. 2017, §3.3 and Fig. 2)."""

    def __init__(self, low: int, c_dim: int, shape: tuple[int, ...], width: int, norm: str, num_classes: int,
                 n_blocks: int = 2):
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        self.ca = ConditioningAugmentation(num_classes, c_dim)
        w = 2 * width
        self.encode = nn.Sequential(conv(norm, channels, width, 3, 1, 1), nn.ReLU(),
                                    conv(norm, width, w, 4, 2, 1), feature_norm(norm, w), nn.ReLU())
        self.joint = nn.Sequential(conv(norm, w + c_dim, w, 3, 1, 1), feature_norm(norm, w), nn.ReLU(),
                                   *(ResidualBlock(w, norm) for _ in range(n_blocks)))
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(2 * resolution // low))):
            ups += [nn.Upsample(scale_factor=2), conv(norm, w, max(width, w // 2), 3, 1, 1),
                    feature_norm(norm, max(width, w // 2)), nn.ReLU()]
            w = max(width, w // 2)
        self.up = nn.Sequential(*ups, conv(norm, w, channels, 3, 1, 1), nn.Tanh())

    def forward(self, image: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, kl = self.ca(y)
        h = self.encode(image)
        h = self.joint(torch.cat([h, c[:, :, None, None].expand(-1, -1, *h.shape[2:])], dim=1))
        return self.up(h), kl


class StackGenerator(nn.Module):
    """Stage I, and stage II on top of a frozen stage I when ``stage2`` is given. ``forward(z, y)`` is the
    image of the last stage; :meth:`with_kl` also returns the KL of the stage being trained."""

    def __init__(self, stage1: Stage1Generator, stage2: Stage2Generator | None = None):
        super().__init__()
        self.stage1, self.stage2 = stage1, stage2
        if stage2 is not None:
            stage1.requires_grad_(False)
            stage1.eval()

    def train(self, mode: bool = True) -> StackGenerator:
        super().train(mode)
        if self.stage2 is not None:
            self.stage1.eval()  # frozen: its batch statistics stay those of stage-1 training
        return self

    def with_kl(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stage2 is None:
            return self.stage1(z, y)
        self.stage1.eval()  # also if a trainer restored per-module modes
        with torch.no_grad():
            low, _ = self.stage1(z, y)
        return self.stage2(low, y)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("StackGAN generators are class-conditional: pass labels y")
        return self.with_kl(z, y)[0]


class StackGAN(GANModule):
    """Args (besides :class:`GANModule`'s): ``stage`` 1 or 2; ``stage1_ckpt`` the stage-1 checkpoint (stage 2);
    ``stage1_resolution`` (default R/2; R/R₁ a power of two); ``c_dim`` the CA dimension N_g; ``kl_weight`` λ."""

    family: ClassVar[str] = "stackgan"
    population_unsupported: ClassVar[str | None] = (
        "conditioning augmentation's noise and the matching-aware loss's wrong classes are drawn from the global "
        "random stream, so replica k would not draw what the fit with seed s+k draws")

    def __init__(self, stage: Literal[1, 2] = 1, stage1_ckpt: str | None = None, stage1_resolution: int | None = None,
                 c_dim: int = 128, kl_weight: float = 1.0, latent_dim: int = 100, arch: Arch = "dcgan",
                 loss: LossName = "ns", g_norm: Norm = "batch", d_norm: Norm = "batch", conditional: bool = True,
                 **kwargs: Any):
        if stage not in (1, 2):
            raise GanbenchError(f"model.stage={stage!r} is not valid; choose one of: 1, 2")
        if stage == 2 and not stage1_ckpt:
            raise GanbenchError("model.stage1_ckpt is required with model.stage=2: the stage-1 checkpoint to refine")
        if not conditional or kwargs.get("num_classes", 0) < 1:
            raise GanbenchError("model.conditional must be true and the data must have classes: StackGAN "
                                "conditions both stages on the class (e.g. data.dataset fashion_mnist)")
        shape = tuple(kwargs.get("data_shape", (1, 32, 32)))
        low = shape[-1] // 2 if stage1_resolution is None else stage1_resolution
        ratio = shape[-1] // low if low and shape[-1] % low == 0 else 0
        if len(shape) != 3 or ratio < 2 or ratio & (ratio - 1):
            raise GanbenchError(f"model.stage1_resolution={low} must divide data.resolution={shape[-1]} by a power "
                                "of two >= 2 (stage II up-samples the stage-I image)")
        self.low_resolution = low
        super().__init__(latent_dim=latent_dim, arch=arch, loss=loss, g_norm=g_norm, d_norm=d_norm,
                         conditional=conditional, **kwargs)

    def stage_shape(self) -> tuple[int, ...]:
        r = self.low_resolution if self.cfg.stage == 1 else self.data_shape[-1]
        return (self.data_shape[0], r, r)

    def build_generator(self) -> nn.Module:
        h = self.cfg
        low = (self.data_shape[0], self.low_resolution, self.low_resolution)
        stage1 = Stage1Generator(self.resolved_arch, self.latent_dim, h.c_dim, low, h.width, h.g_norm,
                                 self.num_classes)
        stage2 = (Stage2Generator(self.low_resolution, h.c_dim, self.data_shape, h.width, h.g_norm, self.num_classes)
                  if h.stage == 2 else None)
        return StackGenerator(stage1, stage2)

    def build_discriminator(self) -> nn.Module:
        h = self.cfg
        return DISCRIMINATORS[self.resolved_arch](shape=self.stage_shape(), width=h.width, norm=h.d_norm,
                                                  num_classes=self.num_classes, minibatch=h.minibatch)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.cfg.stage == 2:
            self.load_stage1(self.cfg.stage1_ckpt)

    def load_stage1(self, path: str | Path) -> None:
        """Copy stage I's weights from a stage-1 StackGAN checkpoint (the EMA copy's when it has one)."""
        path = Path(path)
        if not path.is_file():
            raise GanbenchError(f"model.stage1_ckpt={path} does not exist")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if ckpt.get("ganbench", {}).get("family") != "stackgan" or ckpt.get("hyper_parameters", {}).get("stage") != 1:
            raise GanbenchError(f"model.stage1_ckpt={path} is not a stage-1 StackGAN checkpoint")
        state = ckpt["state_dict"]
        prefix = "ema_generator.module.stage1." if any(k.startswith("ema_generator.") for k in state) else \
            "generator.stage1."
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            self.generator.stage1.load_state_dict(weights)
        except RuntimeError as err:
            first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
            raise GanbenchError(f"model.stage1_ckpt={path} does not fit this stage I (same arch, width, "
                                f"latent_dim, c_dim, stage1_resolution needed): {first}") from None

    def split_batch(self, batch) -> list[Batch]:
        """Stage I's D sees real images at the stage-1 resolution (antialiased bilinear)."""
        slices = super().split_batch(batch)
        if self.cfg.stage == 2:
            return slices
        r = self.low_resolution
        return [b._replace(x=F.interpolate(b.x, size=(r, r), mode="bilinear", antialias=True)) for b in slices]

    def d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Matching-aware: ``½[ℓ_D(D(x, y), D(G(z, y), y)) + ℓ_D(D(x, y), D(x, y'))]`` with y' ≠ y."""
        real, labels = batch.x, batch.y
        assert labels is not None
        with torch.no_grad():
            fake = self.generate(len(real), labels)
        wrong = (labels + torch.randint_like(labels, 1, self.num_classes)) % self.num_classes
        d_real = self.discriminate(real, labels)
        d_fake, d_wrong = self.discriminate(fake, labels), self.discriminate(real, wrong)
        loss = 0.5 * (self.objective.d(d_real, d_fake) + self.objective.d(d_real, d_wrong))
        loss = loss + self.penalty(real, fake, labels)
        if self.ada is not None:  # ADA's r_t from the logits of the real pairs
            self.ada.accumulate(d_real.detach())
        return loss, {"d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean(),
                      "d_wrong": d_wrong.detach().mean()}

    def g_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``ℓ_G(D(G(z, ĉ), y)) + λ·KL`` (eq. 5 / 6) for the labels of the real batch."""
        real, labels = batch.x, batch.y
        assert labels is not None
        fake, kl = self.generator.with_kl(self.sample_latent(len(real)), labels)
        d_real = self.discriminate(real, labels) if self.objective.g_needs_real else None
        loss = self.objective.g(self.discriminate(fake, labels), d_real) + self.cfg.kl_weight * kl
        return loss, {"kl": kl.detach()}

    def sample(self, n: int, z: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               ema: bool = True) -> torch.Tensor:
        """Samples of the trained stage; stage-I images are up-sampled (bilinear) to the data resolution,
        so sample grids and metrics always compare images of the data's size."""
        x = super().sample(n, z=z, labels=labels, ema=ema)
        if x.shape[-1] == self.data_shape[-1]:
            return x
        return F.interpolate(x, size=self.data_shape[1:], mode="bilinear", align_corners=False).clamp(-1, 1)

    def grid_images(self) -> tuple[torch.Tensor, int]:
        """Stage I: the base grid. Stage II: for each group of one latent per class, a row of stage-I images
        (nearest up-sampled) above the row of their stage-II refinements."""
        if self.cfg.stage == 1:
            return super().grid_images()
        k = self.num_classes
        n = max(k, min(len(self.fixed_z), 4 * k) // k * k)
        net = self.ema_generator.module if self.ema_generator is not None else self.generator
        z, y = self.fixed_z[:n], torch.arange(n, device=self.fixed_z.device) % k
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                low, _ = net.stage1(z, y)
                high, _ = net.stage2(low, y)
        finally:
            net.train(was_training)
        up = F.interpolate(low, size=high.shape[-2:], mode="nearest")
        rows = [t for i in range(0, n, k) for t in (up[i:i + k], high[i:i + k])]
        return torch.cat(rows), k


__all__ = ["StackGAN", "ConditioningAugmentation", "kl_standard_normal"]

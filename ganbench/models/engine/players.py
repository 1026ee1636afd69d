"""The players: building G and D (one per replica, stacked in a population), drawing latents and
labels, sampling, the reference statistics of virtual batch norm, and their placement on the fit's
device (memory format, compilation, per-rank random streams)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn

from ganbench import GanbenchError
from ganbench.nn import DISCRIMINATORS, GENERATORS
from ganbench.nn.population import keep_freed_memory
from ganbench.tricks import packed_shape


class Players:
    """Network building, replicas and sampling of :class:`~ganbench.models.base.GANModule`."""

    @property
    def resolved_arch(self) -> str:
        arch = self.cfg.arch
        if arch == "auto":
            return "mlp" if len(self.data_shape) == 1 else self.image_arch
        if len(self.data_shape) == 1 and arch not in ("mlp", "dirac"):
            raise GanbenchError(f"model.arch={arch!r} needs images but the data are {self.data_shape[0]}-D "
                                "vectors; use model.arch auto, mlp or dirac")
        return arch

    def network_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by G and D constructors."""
        h = self.cfg
        kw: dict[str, Any] = {"shape": self.data_shape, "num_classes": self.num_classes}
        if h.width:
            kw["width"] = h.width
        if self.resolved_arch == "dirac":
            kw["start"] = h.dirac_start or (1.0, 1.0)
        elif h.dirac_start is not None:
            raise GanbenchError(f"model.dirac_start={h.dirac_start} is the start of model.arch dirac, not of "
                                f"{self.resolved_arch!r}; leave it unset")
        return kw

    def build_generator(self) -> nn.Module:
        kw = self.network_kwargs()
        if self.cfg.g_depth:
            if self.resolved_arch != "mlp":
                raise GanbenchError(f"model.g_depth={self.cfg.g_depth} needs an MLP generator (model.arch mlp, "
                                    f"or auto on 2-D data), not {self.resolved_arch!r}")
            kw["depth"] = self.cfg.g_depth
        self._network_options.add("g_depth")
        return GENERATORS[self.resolved_arch](latent_dim=self.latent_dim, norm=self.cfg.g_norm, **kw)

    def build_discriminator(self) -> nn.Module:
        h = self.cfg
        d_arch = self.resolved_arch if h.d_arch == "same" else h.d_arch
        if d_arch not in ("mlp", "maxout", "dirac") and len(self.data_shape) == 1:
            raise GanbenchError(f"model.d_arch={d_arch!r} needs images but the data are "
                                f"{self.data_shape[0]}-D vectors; use same, mlp or maxout")
        kw = self.network_kwargs()
        kw["shape"] = packed_shape(self.data_shape, h.pack)  # D sees packs of m samples
        if h.d_width:
            kw["width"] = h.d_width
        if h.d_depth:
            if d_arch not in ("mlp", "maxout"):
                raise GanbenchError(f"model.d_depth={h.d_depth} needs an MLP discriminator (model.d_arch mlp or "
                                    f"maxout), not {d_arch!r}")
            kw["depth"] = h.d_depth
        if d_arch == "maxout":
            kw["pieces"] = h.maxout_pieces
        self._network_options.update(("d_width", "d_depth"))
        return DISCRIMINATORS[d_arch](norm=h.d_norm, minibatch=h.minibatch, **kw)


    def build_replicas(self) -> tuple[nn.Module, nn.Module]:
        """G and D of every replica, each built from its own seed, stacked when there are several."""
        nets = []
        for seed in self.replica_seeds:
            torch.manual_seed(seed)
            g, d = self.build_generator(), self.build_discriminator()
            if self.cfg.init_std > 0:
                from ganbench.nn.common import normal_init

                normal_init(g, self.cfg.init_std)
                normal_init(d, self.cfg.init_std)
            nets.append((g, d))
        if self.population == 1:
            return nets[0]
        from ganbench.nn.stacking import stack_modules

        refusal = self.population_refusal()
        if refusal is not None:
            raise GanbenchError(f"model.population={self.population}: {refusal}; use population 1")
        return stack_modules([g for g, _ in nets]), stack_modules([d for _, d in nets])


    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latents: from ``generator`` when given (evaluation: the same latents for every
        replica), else from the replicas' training streams (``n`` rows of a folded batch)."""
        if generator is None:
            return self.rng.randn(n, self.latent_dim, like=self.fixed_z)
        return torch.randn(n, self.latent_dim, device=self.fixed_z.device, dtype=self.fixed_z.dtype,
                           generator=generator)

    def sample_labels(self, n: int) -> torch.Tensor | None:
        if self.num_classes == 0:
            return None
        return self.rng.randint(self.num_classes, n, self.fixed_z.device)

    @torch.no_grad()
    def sample(self, n: int, z: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               ema: bool = True) -> torch.Tensor:
        """``n`` samples from G (the EMA copy when present and ``ema``), in eval mode, without grad.

        A population returns ``population × n`` rows, replica by replica, every replica on the same
        ``z`` (``n`` fresh latents per replica when ``z`` is None)."""
        net = self.ema_generator.module if (ema and self.ema_generator is not None) else self.generator
        if z is None:
            z = self.sample_latent(self.rows(n))
        else:
            z = z.to(self.fixed_z.device, self.fixed_z.dtype).repeat(self.population, 1)
        if labels is None:
            labels = self.sample_labels(len(z))
        elif self.population > 1:
            labels = labels.repeat(self.population)
        was_training = net.training
        net.eval()
        try:
            return net(z, labels)
        finally:
            net.train(was_training)

    def grid_images(self) -> tuple[torch.Tensor, int]:
        """The images of a sample grid and the number of columns: G on the fixed latent batch (one
        column per class for conditional models). Image-to-image families override this to show
        input | output | target rows."""
        labels = self.fixed_y if self.num_classes else None
        images = self.sample(len(self.fixed_z), z=self.fixed_z, labels=labels)
        ncol = min(len(images), self.num_classes) if self.num_classes else max(1, int(len(images) ** 0.5))
        return images, ncol

    def generate(self, n: int, labels: torch.Tensor | None, z: torch.Tensor | None = None) -> torch.Tensor:
        """G(z) for a fresh latent batch (or the given ``n`` latents ``z``), in training mode (with graph)."""
        return self.generator(self.sample_latent(n) if z is None else z, labels)


    @property
    def uses_vbn(self) -> bool:
        return "virtual_batch" in (self.cfg.g_norm, self.cfg.d_norm)

    def refresh_reference_statistics(self, real: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Virtual batch norm (Salimans et al. 2016 §3.4): recompute the statistics of the fixed
        reference batch with the current parameters before each update."""
        from ganbench.nn.layers import reference_pass

        if self.vbn_reference is None:  # chosen once: the first real batch and the fixed latents
            self.vbn_reference = (real.detach().clone(), None if labels is None else labels.clone())
            if self._trainer is not None and self.trainer.world_size > 1:  # one reference batch for all ranks
                self.vbn_reference = self.trainer.strategy.broadcast(self.vbn_reference)
        ref_x, ref_y = self.vbn_reference
        with reference_pass(self.generator):
            self.generator(self.fixed_z[: len(ref_x)], None if ref_y is None else self.fixed_y[: len(ref_x)])
        with reference_pass(self.discriminator):
            self.discriminator(self.packed(ref_x), ref_y)


    def on_fit_start(self) -> None:
        self.status = "running"
        if self._rng is not None and self._rng_state is None:  # keep the streams across a device move
            self._rng_state = self._rng.state_dict() if self._rng.generators[0].device == self.fixed_z.device else None
        self._rng = None  # re-created on the run's device with its rank
        self.seed_rank()
        if self.device.type == "cpu":
            keep_freed_memory()
        if self.cfg.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        if self.cfg.compile:
            self.generator.compile()
            self.discriminator.compile()

    def seed_rank(self) -> None:
        """Give every data-parallel rank its own random stream: latents, labels and instance noise.

        ``seed_everything`` seeds every process alike, so without this all ranks would draw the same
        latents and a G update on N devices would see N copies of one fake batch instead of N times
        as many samples. The torch generators are reseeded with a hash of (initial seed, global
        rank), so a run stays reproducible for a given seed and world size. A single-process run is
        left untouched (its random stream is that of ``seed_everything``)."""
        if self.trainer.world_size > 1:
            from ganbench.data.loader import mix_seed

            torch.manual_seed(mix_seed(torch.initial_seed(), self.global_rank))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.cfg.channels_last and isinstance(batch, (tuple, list)) and batch[0].dim() == 4:
            batch = (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
        return batch


@contextlib.contextmanager
def frozen_parameters(module: nn.Module):
    """``module``'s parameters without ``requires_grad`` inside the block (what Lightning's
    ``toggled_optimizer`` does for the other player's optimizer), restored after."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)

"""What D sees: augmentation (DiffAugment, ADA), annealed instance noise, packing, and D's scores;
also the device values the host writes before each iteration (σ of the noise, a family's own)."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch

from ganbench.augment import diff_augment
from ganbench.tricks import pack


class HostState(NamedTuple):
    """State of a family's step that lives on the host and changes from one iteration to the next."""

    #: what it is and how it changes, e.g. "the image pool (model.pool_size > 0) keeps past fakes in a
    #: Python list and draws on the host"
    what: str
    #: the setting that leaves it out, e.g. "model.pool_size 0"
    without: str


class DInput:
    """The d_input pipeline of :class:`~ganbench.models.base.GANModule`."""

    def host_state(self) -> HostState | None:
        """The state of this family's step that lives on the host (None: everything the step carries
        from one iteration to the next is on the device, or written there by :meth:`host_values`)."""
        return None

    def noise_sigma(self) -> float:
        from ganbench.tricks import instance_noise_sigma

        h = self.cfg
        sigma0 = self.replica_value("instance_noise", h.instance_noise)
        if not torch.is_tensor(sigma0) and sigma0 <= 0:
            return 0.0
        if h.instance_noise_steps <= 0:
            return sigma0
        # the schedule is linear in σ0: the annealed σ of every replica is its σ0 times that of 1
        return sigma0 * instance_noise_sigma(self.global_step, 1.0, h.instance_noise_steps)

    def augmented(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` under the ``augment`` pipeline (a fresh draw per call, from the replicas' streams)."""
        if self.cfg.augment == "diffaugment":
            return diff_augment(x, self.augment_ops, self.rng)
        if self.ada is not None:
            return self.ada(x, self.rng)
        return x

    #: a family's values that change in training between G iterations (BEGAN's k, MAGAN's margin):
    #: device-state name → the module attribute holding the host value (a float, or a ``(population,)``
    #: float64 tensor in a population). :meth:`host_values` writes each into its float32 device tensor
    #: before every iteration; the family's losses read it with :meth:`state_of`
    device_state: ClassVar[dict[str, str]] = {}

    def host_values(self) -> None:
        """Write the values the host changes between G iterations into the device tensors the step
        reads: the annealed instance-noise σ and every :attr:`device_state` of the family. Runs before
        every iteration, outside the step, so a captured step (``cuda_graph``) reads the current values."""
        sigma = self.noise_sigma()
        if torch.is_tensor(sigma) or sigma > 0 or "noise_sigma" in self.device_values:  # annealed to 0 too
            self.device_value("noise_sigma", sigma)
        for name in self.device_state:
            self.write_state(name)

    def write_state(self, name: str) -> torch.Tensor:
        """Copy the host value of the declared :attr:`device_state` ``name`` into its device tensor now
        (:meth:`host_values` does so before every iteration; a value the step itself sets, such as
        MAGAN's first margin, is written at once)."""
        return self.device_value(name, getattr(self, self.device_state[name]))

    def state_of(self, name: str) -> torch.Tensor:
        """The device tensor of the declared :attr:`device_state` ``name`` (float32; ``(population,)``
        in a population), written from the host value if no iteration has written it yet."""
        value = self.device_values.get(name)
        return self.write_state(name) if value is None else value

    @property
    def device_values(self) -> dict[str, torch.Tensor]:
        """The tensors :meth:`host_values` wrote, by name."""
        return self.__dict__.setdefault("_device_values", {})

    def device_value(self, name: str, value: float | torch.Tensor) -> torch.Tensor:
        """The device tensor ``name`` holding ``value`` (float32), written in place when it exists:
        a captured step keeps reading the memory it was captured with."""
        values = self.device_values
        current = values.get(name)
        if torch.is_tensor(value):
            value = value.to(dtype=torch.float32)
            if current is None or current.shape != value.shape or current.device != self.device:
                values[name] = value.to(self.device).clone()
            else:
                current.copy_(value)
        elif current is None or current.dim() or current.device != self.device:
            values[name] = torch.full((), float(value), dtype=torch.float32, device=self.device)
        else:
            current.fill_(float(value))
        return values[name]

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees: the samples, augmented when ``augment`` is set, plus annealed instance noise
        when enabled (σ per replica when a population overrides it), in packs of ``pack``."""
        x = self.augmented(x)
        sigma = self.device_values.get("noise_sigma")
        if sigma is not None:
            x = x + (self.replica_rows_of(sigma, x) if sigma.dim() else sigma) * self.rng.randn_like(x)
        return self.packed(x)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of B·m samples as the B packs D scores (``x`` itself when ``pack`` = 1). A
        population's folded rows stay within their replica: each replica's B·m rows make its B packs."""
        return pack(x, self.cfg.pack)

    def discriminate(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """D's scores in fp32, so losses are reduced in fp32 even under bf16 autocast."""
        return self.discriminator(self.d_input(x), labels).float()


    def adjust_ada(self) -> None:
        """ADA's update of ``p`` from the real images D saw since the last one (summed over
        data-parallel ranks, as the reference sums its statistics over GPUs)."""
        ada = self.ada
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            for buf in (ada.signs, ada.count):
                buf.copy_(self.trainer.strategy.reduce(buf.clone(), reduce_op="sum"))
        batch = self.trainer.datamodule.batch_size if self._trainer is not None else None
        ada.adjust(int(batch or 1) * self.n_critic * world)

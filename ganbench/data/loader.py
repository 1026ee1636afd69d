"""``TensorLoader``: batches sliced from tensors that already hold a whole (small) data set.

For data sets that fit in memory (Fashion-MNIST, MNIST, CIFAR-10, digits, the 2-D toys) the images are
decoded, resized and scaled once into one float32 tensor, and a batch is ``x[perm[i:i + B]]``: one
indexing op per batch instead of a ``DataLoader`` that calls ``__getitem__`` and a collate function for
every item (per-item Python overhead dominates small-image GAN training, and the tensors can be moved
to the GPU once with :meth:`TensorLoader.to` so no host-to-device copy happens per step).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def mix_seed(*values: int) -> int:
    """One generator seed from several integers, hashed with numpy's ``SeedSequence``.

    Bit-packing would not do: the CPU ``torch.Generator`` seeds its Mersenne Twister with only the
    low 32 bits of ``manual_seed``'s argument, so the hash is reduced to 32 bits here on purpose.
    """
    entropy = [int(v) & 0xFFFFFFFFFFFFFFFF for v in values]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])


class TensorLoader:
    """Iterate over equal-length tensors in batches of ``batch_size`` rows.

    Each epoch draws a permutation from a ``torch.Generator`` seeded by a hash of ``(seed, epoch)`` (or the
    identity order when ``shuffle=False``). Under data-parallel training every rank draws the same
    permutation and takes its own disjoint shard ``perm[rank::world_size]`` of it (truncated to a
    multiple of ``world_size`` with ``drop_last``, otherwise padded by wrapping around, as
    ``torch.utils.data.DistributedSampler`` does), so all ranks run the same number of batches.

    The loader counts epochs itself: an iteration continues the current epoch where the last one stopped,
    and once all its batches were yielded the next iteration starts the next epoch. :meth:`set_epoch`
    sets the epoch explicitly. The loader deliberately exposes no ``sampler``, so Lightning does not
    call ``set_epoch`` with its own epoch number, which is one ahead after resuming from a checkpoint
    saved when ``max_steps`` stopped a run mid-epoch. Lightning saves :meth:`state_dict` (the epoch and
    the number of batches already yielded in it) in checkpoints and restores it with
    :meth:`load_state_dict`, so a resumed run continues mid-epoch with exactly the batches an
    uninterrupted run would have produced (Lightning does not prefetch from a loader with a length, so
    batches yielded equals batches consumed).

    Args:
        *tensors: tensors with the same first dimension; each batch is a tuple of their slices.
        batch_size: rows per batch.
        shuffle: draw a new permutation every epoch.
        drop_last: drop the final incomplete batch.
        seed: base seed of the permutations.
        rank, world_size: this process's shard; by default taken from ``torch.distributed`` when it is
            initialised, else ``0`` and ``1``.
        restart_each_iter: every iteration starts a new epoch from its first batch, even when the last
            one stopped early (for evaluation loaders, whose passes must not continue each other).
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        restart_each_iter: bool = False,
    ) -> None:
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[t.shape[0] for t in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tuple(tensors)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self._rank = rank
        self._world_size = world_size
        self.restart_each_iter = restart_each_iter
        self.epoch = 0
        self.position = 0  # batches already yielded in the current epoch

    # -- distribution -----------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        """This process's shard index."""
        if self._rank is not None:
            return self._rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @property
    def world_size(self) -> int:
        """The number of shards."""
        if self._world_size is not None:
            return self._world_size
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def num_samples(self) -> int:
        """Rows in the whole data set."""
        return int(self.tensors[0].shape[0])

    def _shard_size(self) -> int:
        n, w = self.num_samples, self.world_size
        return n // w if self.drop_last else -(-n // w)

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """The row indices this rank visits in ``epoch`` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else epoch
        n, w = self.num_samples, self.world_size
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            perm = torch.randperm(n, generator=g)
        else:
            perm = torch.arange(n)
        total = self._shard_size() * w
        if total <= n:
            perm = perm[:total]
        else:
            perm = torch.cat([perm, perm[: total - n]])
        return perm[self.rank :: w]

    # -- iteration --------------------------------------------------------------------------------
    def __len__(self) -> int:
        m = self._shard_size()
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n_batches = len(self)
        # a new epoch once the previous one was consumed (Lightning stops at len() without exhausting us)
        if self.position >= n_batches or (self.restart_each_iter and self.position > 0):
            self.epoch += 1
            self.position = 0
        # one host-to-device copy of the epoch's order: a copy per batch would make the host wait for
        # the device every step (a pageable copy is synchronous), which a launch-bound GAN step feels
        idx = self.indices().to(self.tensors[0].device)
        while self.position < n_batches:
            start = self.position * self.batch_size
            sel = idx[start : start + self.batch_size]
            self.position += 1
            yield tuple(t[sel] for t in self.tensors)
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning, unless the loader is already inside that epoch."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.position = 0

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The epoch and the number of batches already yielded in it."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration yields the rest of that epoch."""
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = int(state.get("seed", self.seed))

    def to(self, device: torch.device | str) -> TensorLoader:
        """Move the data tensors to ``device`` (e.g. the GPU, once) and return ``self``."""
        self.tensors = tuple(t.to(device) for t in self.tensors)
        return self

    def __repr__(self) -> str:
        return (
            f"TensorLoader(n={self.num_samples}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, rank={self.rank}, world_size={self.world_size})"
        )

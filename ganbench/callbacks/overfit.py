"""Is D memorizing its training set? Its outputs on training reals vs held-out reals.

Karras et al. 2020 ("Training Generative Adversarial Networks with Limited Data", §2.1 and Fig. 1)
diagnose discriminator overfitting by D's outputs on three sets: the training reals, held-out reals
of the same distribution, and generated images. A D that generalizes scores training and held-out
reals alike; an overfitting one scores the held-out reals like fakes. Their heuristic

    r_v = (E[D(x_train)] − E[D(x_heldout)]) / (E[D(x_train)] − E[D(G(z))])

is 0 without overfitting and 1 when held-out reals score as fakes. ADA's controller uses the cheaper
``r_t = E[sign(D(x_train))]`` (``model.augment ada`` logs it as ``train/ada_rt``); this callback logs
the validation form during any fit, with or without augmentation.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ganbench.callbacks.log import log_evaluation
from ganbench.callbacks.metrics import _datamodule, _Interval, replica_tag
from ganbench.metrics.image import count_tag


class DiscriminatorOverfit(L.Callback):
    """Every ``every_n_steps`` G iterations (and at the last one), D's mean raw output on ``n``
    training samples (from the set the fit trains on, e.g. ``data.train_samples``), ``n`` held-out
    samples (the test split; for toys a fresh draw) and ``n`` fakes, with no augmentation, no
    instance noise and D in eval mode (spectral norm's power iteration does not advance); logged as
    ``diag/d_train_<n>``, ``diag/d_heldout_<n>``, ``diag/d_fake_<n>`` and ``diag/d_overfit_<n>``
    (the ratio ``r_v`` above, NaN while train and fake scores coincide), per replica (``/r<k>``) in
    a population. The same samples at every evaluation (seeded), so the curve follows D alone.

    Only for families whose D scores samples with the base loss and that are unconditional: energy
    families' D returns a reconstruction, and a conditional D needs the samples' labels.
    """

    def __init__(self, every_n_steps: int = 50, n: int = 512) -> None:
        self.every_n_steps, self.n = every_n_steps, n
        self._interval = _Interval(every_n_steps)
        self._samples: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def applies(pl_module: Any) -> bool:
        from ganbench.models.base import GANModule

        return (isinstance(pl_module, GANModule) and type(pl_module).d_loss is GANModule.d_loss
                and not pl_module.num_classes)

    def samples(self, trainer: L.Trainer, pl_module: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._samples is None:
            dm = _datamodule(trainer)
            n = min(self.n, dm.train_samples or self.n, dm.split_size("test"))  # digits hold out 180
            n = pl_module.cfg.pack * max(1, n // pl_module.cfg.pack)  # whole packs
            z = torch.randn(n, pl_module.latent_dim, generator=torch.Generator().manual_seed(7))
            self._samples = (dm.training_samples(n, seed=7), dm.real_samples(n, "test", seed=7), z)
        return self._samples

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: Any) -> dict[str, float]:
        train, heldout, z = self.samples(trainer, pl_module)
        d = pl_module.discriminator
        device, replicas = pl_module.device, pl_module.population
        fake = pl_module.sample(len(z), z=z, ema=False)  # (replicas·n, ...), every replica on z
        was_training = d.training
        d.eval()
        try:
            def score(x: torch.Tensor) -> torch.Tensor:
                rows = x.to(device, fake.dtype)
                if len(rows) != len(fake):  # reals: the same rows for every replica
                    rows = rows.repeat(replicas, *([1] * (rows.dim() - 1)))
                out = d(pl_module.packed(rows), None).float()
                return out.reshape(replicas, -1).mean(1).cpu()

            s_train, s_heldout, s_fake = score(train), score(heldout), score(fake)
        finally:
            d.train(was_training)
        tag = count_tag(len(z))
        values: dict[str, float] = {}
        for k in range(replicas):
            r = replica_tag(pl_module, k)
            gap = float(s_train[k] - s_fake[k])
            values[f"diag/d_train_{tag}{r}"] = float(s_train[k])
            values[f"diag/d_heldout_{tag}{r}"] = float(s_heldout[k])
            values[f"diag/d_fake_{tag}{r}"] = float(s_fake[k])
            values[f"diag/d_overfit_{tag}{r}"] = float(s_train[k] - s_heldout[k]) / gap if gap else float("nan")
        return values

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self._interval.fires(trainer) or not self.applies(pl_module):
            return
        log_evaluation(trainer, self.measure(trainer, pl_module))

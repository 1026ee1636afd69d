"""The objective: the D penalty (lazy), D's and G's losses, the regularizers of D's scores (CR, bCR,
zCR, LeCam) and top-k training of G."""

from __future__ import annotations

import math

import torch

from ganbench.augment import cr_transform
from ganbench.models.engine.batch import Batch
from ganbench.regularizers import consistency_penalty, latent_sensitivity, lecam_penalty
from ganbench.tricks import top_k_count, top_k_rows


class Objective:
    """Penalty, losses and score regularizers of :class:`~ganbench.models.base.GANModule`."""

    def penalty(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Weighted D regularizer, applied every ``penalty_every`` D steps (lazy regularization)."""
        h = self.cfg
        if h.penalty == "none" or self._d_steps % h.penalty_every:
            return real.new_zeros(())
        weight = self.replica_value("penalty_weight", h.penalty_weight)
        # D never sees an image without the augmentation (as ADA's R1 on augmented reals)
        real, fake = self.packed(self.augmented(real)), self.packed(self.augmented(fake))
        if self.population == 1 and not torch.is_tensor(weight):
            value = self.penalty_fn(lambda x: self.discriminator(x, labels), real, fake, generator=self.rng)
            self._penalty_value = value.detach()
            return weight * h.penalty_every * value
        # per-sample penalties of disjoint replicas: the mean over the folded batch is the mean of the
        # replicas' means, so each replica's own penalty is the penalty of its rows alone
        values = self.penalty_fn(lambda x: self.discriminator(x, labels), real, fake, generator=self.rng,
                                 replicas=self.population)
        self._penalty_value = values.detach()
        weight = weight if torch.is_tensor(weight) else torch.full_like(values, weight)
        return weight * h.penalty_every * values

    def d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss on one real batch; returns (loss, values to log)."""
        real, labels = batch.x, batch.y
        fake, z = self.d_fakes(len(real), labels)
        losses, logs = self.d_losses(real, fake, z, labels, self.discriminate(real, labels),
                                     self.discriminate(fake, labels))
        # per-sample scores: training_step reduces logged values only on the steps that log
        return losses.sum(), logs

    def d_losses(self, real: torch.Tensor, fake: torch.Tensor, z: torch.Tensor | None, labels: torch.Tensor | None,
                 d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss per replica from its outputs ``d_real``, ``d_fake`` — the objective, the penalty and
        the score regularizers — and the values to log (``d_losses``: the returned vector, detached)."""
        smoothing = self.replica_value("label_smoothing", self.cfg.label_smoothing)
        kw = {"real_target": 1.0 - smoothing} if torch.is_tensor(smoothing) or smoothing else {}
        losses = self.per_replica(self.objective.d, d_real, d_fake, **kw) + self.penalty(real, fake, labels)
        if self.ada is not None:  # ADA's r_t from the realness of the real scores
            self.ada.accumulate(self.score_of(d_real).detach())
        regularizers, values = self.score_regularizers(real, fake, z, self.score_of(d_real), self.score_of(d_fake),
                                                       labels)
        losses = losses + regularizers
        return losses, {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "d_losses": losses.detach(), **values}

    def d_fakes(self, n: int, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A fresh generated batch of ``n`` rows for a D step (no graph into G), and its latents when
        zCR's D term needs them again (else None: a family's generate() may have none)."""
        with torch.no_grad():
            return self.fakes(n, labels, keep_z=bool(self.cfg.zcr_dis))

    def fakes(self, n: int, labels: torch.Tensor | None, keep_z: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` rows of G(z) and, when ``keep_z``, their latents ``z`` (zCR perturbs them again; else
        None, and generate() draws its own: a family's generate() may draw no latent)."""
        z = self.sample_latent(n) if keep_z else None
        return (self.generate(n, labels) if z is None else self.generate(n, labels, z=z)), z

    def d_score(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """D's per-sample score of ``x``, higher for what D takes as real — :meth:`score_of` D's output:
        what CR, bCR and zCR compare (LeCam and top-k read the scores of the outputs at hand)."""
        return self.score_of(self.discriminate(x, labels))

    def score_of(self, d_out: torch.Tensor) -> torch.Tensor:
        """The realness score of D's output (higher: more real): the output itself for the logits and
        critics of the base losses; a family whose D gives something else says how it is a score (an
        energy or a learned loss: its negative)."""
        return d_out

    def score_regularizers(self, real: torch.Tensor, fake: torch.Tensor, z: torch.Tensor | None, d_real: torch.Tensor,
                           d_fake: torch.Tensor, labels: torch.Tensor | None
                           ) -> tuple[torch.Tensor | float, dict[str, torch.Tensor]]:
        """The weighted sum of the regularizers of D's scores (:meth:`d_score`; ``d_real``, ``d_fake``
        those of the batch), per replica — CR/bCR, zCR's D term and LeCam, each absent when its weight
        is 0 — and their unweighted values to log."""
        h, n = self.cfg, self.population
        total: torch.Tensor | float = 0.0
        values: dict[str, torch.Tensor] = {}
        if h.cr_real:
            values["cr_real"] = consistency_penalty(d_real, self.d_score(cr_transform(real, self.rng), labels), n)
            total = total + h.cr_real * values["cr_real"]
        if h.cr_fake:
            values["cr_fake"] = consistency_penalty(d_fake, self.d_score(cr_transform(fake, self.rng), labels), n)
            total = total + h.cr_fake * values["cr_fake"]
        if h.zcr_dis:
            with torch.no_grad():
                fake_near = self.generate(len(z), labels, z=z + h.zcr_sigma * self.rng.randn_like(z))
            values["zcr_dis"] = consistency_penalty(d_fake, self.d_score(fake_near, labels), n)
            total = total + h.zcr_dis * values["zcr_dis"]
        if self.lecam is not None:
            anchor_real, anchor_fake = self.lecam.update(d_real, d_fake)
            values["lecam"] = lecam_penalty(d_real, d_fake, anchor_real, anchor_fake, n)
            total = total + h.lecam_weight * values["lecam"]
        return total, {k: v.detach() for k, v in values.items()}


    def g_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss for one fresh latent batch (``real`` is the last D batch, used by some objectives)."""
        real, labels = batch.x, batch.y
        fake, labels, z = self.g_batch(real, labels)
        losses, logs = self.g_losses(real, fake, labels, z)
        return losses.sum(), logs

    def g_batch(self, real: torch.Tensor, labels: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """G's fresh batch (``g_batch_size`` per replica, else the real batch's size) with grad: the
        fakes, their freshly drawn labels (None for an unconditional G) and their latents when zCR
        needs them again."""
        n = self.g_rows(real)
        labels = self.sample_labels(n) if labels is not None else None
        fake, z = self.g_fakes(n, labels)
        return fake, labels, z

    def g_losses(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None, z: torch.Tensor | None,
                 d_fake: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss per replica for the fakes of :meth:`g_batch` (``d_fake``: D's outputs on them when
        the family took them already) and the values to log (``g_losses``: the returned vector, detached)."""
        h = self.cfg
        need_real = getattr(self.objective, "g_needs_real", False) or h.feature_matching > 0
        if h.feature_matching > 0:
            from ganbench.tricks import feature_matching_loss

            f_fake = self.discriminator.features(self.d_input(fake), labels)
            d_fake = self.discriminator.head(f_fake, labels)
            real_labels = labels[: len(real)] if labels is not None else None
            f_real = self.discriminator.features(self.d_input(real), real_labels)
            d_real = self.discriminator.head(f_real, real_labels)
            losses = (self.per_replica(self.objective.g, self.top_k(d_fake), d_real)
                      + h.feature_matching * self.per_replica(feature_matching_loss, f_real, f_fake))
        else:
            d_fake = self.discriminate(fake, labels) if d_fake is None else d_fake
            d_real = self.discriminate(real, labels[: len(real)] if labels is not None else None) if need_real else None
            losses = self.per_replica(self.objective.g, self.top_k(d_fake), d_real)
        losses, logs = self.g_regularized(losses, fake, z, labels)
        return losses, {"g_losses": losses.detach(), **logs}

    def g_fakes(self, n: int, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G's fresh batch of ``n`` rows (with graph into G), and its latents when zCR's G term needs
        them again (else None)."""
        return self.fakes(n, labels, keep_z=bool(self.cfg.zcr_gen))

    def g_regularized(self, losses: torch.Tensor, fake: torch.Tensor, z: torch.Tensor | None,
                      labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's per-replica ``losses`` less zCR's G term (G maximizes the sensitivity of its output to
        its latents) when ``zcr_gen`` is set, and the term's unweighted value to log."""
        h = self.cfg
        if not h.zcr_gen:
            return losses, {}
        fake_near = self.generate(len(z), labels, z=z + h.zcr_sigma * self.rng.randn_like(z))
        value = latent_sensitivity(fake, fake_near, self.population)
        return losses - h.zcr_gen * value, {"zcr_gen": value.detach()}

    def g_rows(self, real: torch.Tensor) -> int:
        """Rows of G's batch: ``g_batch_size`` samples per replica, else as many as the D batch ``real``."""
        return self.rows(self.cfg.g_batch_size) if self.cfg.g_batch_size else len(real)

    def epochs_done(self) -> int:
        """Whole passes over the training set before this G iteration, from the G-iteration count and
        the batches per epoch (exact on resume, wherever the checkpoint fell within an epoch)."""
        if self._trainer is None:
            return 0
        per_epoch = self.trainer.num_training_batches
        if not per_epoch or not math.isfinite(per_epoch):
            return self.current_epoch
        return self.global_step // int(per_epoch)

    def top_k(self, d_fake: torch.Tensor) -> torch.Tensor:
        """D's outputs on the fakes that update G: all of them, or with ``top_k`` the k of each replica
        with the highest score (:meth:`score_of`; Sinha et al. 2020), k annealed per epoch
        (:func:`ganbench.tricks.top_k_count`)."""
        if not self.cfg.top_k:
            return d_fake
        self._top_k_batch = d_fake.shape[0] // self.population
        k = self.top_k_count(self._top_k_batch)
        return d_fake[top_k_rows(self.score_of(d_fake), k, self.population)]

    def top_k_count(self, batch: int) -> int:
        """How many of ``batch`` fakes per replica update G at this G iteration (top-k training)."""
        h = self.cfg
        return top_k_count(batch, self.epochs_done(), h.top_k_gamma, h.top_k_min)

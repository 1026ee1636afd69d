"""The base GAN LightningModule: everything that is the same for every family.

A family (``ganbench.models.*``) is a thin subclass that picks its objective, penalty, networks and
defaults, and overrides :meth:`GANModule.d_loss` / :meth:`GANModule.g_loss` only where its paper
differs. The base owns manual optimization (``manual_backward``, ``clip_gradients``), n_critic,
separate G/D optimizers (TTUR), EMA of G, instance noise, label smoothing, historical averaging,
feature matching, step counting, divergence detection and populations (N replicas in one step).

**One step, several executors.** :meth:`GANModule.iteration` is the only place the D/G update
sequence is written. The eager ``training_step`` runs it through Lightning's manual optimization;
the CUDA-graph step captures it with plain ``backward``/``step``; ``ganbench bench`` times it with
nothing of Lightning around it as the reference for the real path.

**Step semantics.** One ``training_step`` is one *generator iteration*: ``n_critic`` discriminator
updates (each on its own slice of the batch) followed by one generator update. Only the generator
optimizer step is counted by Lightning, so ``trainer.global_step`` — and therefore
``--trainer.max_steps``, checkpoint intervals and logging steps — count generator iterations.
The discriminator steps go through the strategy's ``optimizer_step`` (same precision plugin,
same hooks such as ``on_before_optimizer_step``) without advancing the step counter.

**Direct steps.** Lightning wraps every ``backward`` and optimizer step in hook dispatch
(``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step`` on every callback and
the module, plus the strategy's and precision plugin's wrappers): six times per G iteration with
``n_critic = 5``, about a tenth of a small model's step on a CPU. When nothing in the run implements
those hooks or adds work to those wrappers (see :meth:`GANModule.direct_step_blocker`), the module
calls ``loss.backward()`` and ``optimizer.step()`` itself — the same arithmetic, the G step still
counted through Lightning's step progress. Anything that does implement them (a user callback, a
profiler, DDP, mixed precision) gets Lightning's full path, unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Literal

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ganbench import GanbenchError
from ganbench.augment import AdaptiveAugment
from ganbench.losses import LOSSES, LossName
from ganbench.models.engine.batch import Batch
from ganbench.models.engine.checkpoint import CheckpointState
from ganbench.models.engine.checks import RANGES, Checks, UpdateOrder
from ganbench.models.engine.checks import batch_norm_count_check as _batch_norm_count_check
from ganbench.models.engine.d_input import DInput
from ganbench.models.engine.divergence import Divergence
from ganbench.models.engine.executors import Executors
from ganbench.models.engine.finish import Finish
from ganbench.models.engine.objective import Objective
from ganbench.models.engine.optimizers import Optimizers
from ganbench.models.engine.players import Players, frozen_parameters
from ganbench.models.engine.population import Population
from ganbench.models.engine.settings import Settings
from ganbench.models.steps import backward, update
from ganbench.nn import Arch
from ganbench.nn.common import Minibatch
from ganbench.nn.norms import Norm
from ganbench.nn.population import ReplicaRNG
from ganbench.regularizers import PENALTIES, LeCamAnchors, PenaltyName

AugmentName = Literal["none", "diffaugment", "ada"]
DArch = Literal["same", "cnn", "resnet", "dcgan", "mlp", "maxout", "patch"]

#: what ``from ganbench.models.base import ...`` finds besides the module (the checks live in their room)
__all__ = ["Batch", "GANModule", "RANGES", "_batch_norm_count_check"]


class GANModule(Checks, Players, Population, DInput, Objective, Optimizers, Executors, Finish, Divergence,
                CheckpointState, L.LightningModule):
    """Base of all families. Parameters common to every family:

    Args:
        data_shape: shape of one sample, (C, R, R) or (2,) — linked from the data module.
        num_classes: classes in the data — linked from the data module; used when ``conditional``.
        latent_dim: dimension of z ~ N(0, I).
        arch: network table key; ``auto`` = the family's image architecture, ``mlp`` for 2-D data.
        d_arch: D's network when it differs from G's: ``same`` (= arch) or a key of
            ``DISCRIMINATORS`` such as ``patch`` (PatchGAN: one score per patch, averaged by the losses)
            or ``maxout`` (an MLP of maxout units, Goodfellow et al. 2013, as in PacGAN's toy experiments).
        width: base channel count (conv) or hidden units (MLP).
        d_width: D's width when it differs from G's (``None``: ``width``).
        g_depth, d_depth: hidden layers of an MLP G / an ``mlp`` or ``maxout`` D (0: the network's default).
        maxout_pieces: linear pieces per unit of the ``maxout`` D.
        dirac_start: ``[θ0, ψ0]``, the start of ``arch: dirac`` (the Dirac-GAN's constant G and linear D,
            :mod:`ganbench.nn.dirac`); ``null``: ``[1, 1]``, the paper's.
        init_std: initialize every linear/conv weight of G and D from N(0, init_std²) and every bias to 0
            (0: PyTorch's default initialization).
        pack: PacGAN packing (Lin et al. 2018): D scores packs of ``pack`` samples concatenated along
            the feature (vectors) or channel (images) axis; a D step then reads ``pack × batch_size``
            real samples and makes as many fakes, and penalties see packed inputs. 1 = no packing.
        augment: augmentation of every image D sees, real and fake, in D's and G's steps and in the
            penalties (see :mod:`ganbench.augment`): ``diffaugment`` (Zhao et al. 2020: the
            ``augment_policy`` ops, always applied, differentiable) or ``ada`` (Karras et al. 2020:
            each op applied with a probability ``p`` that rises while ``r_t = E[sign(D(x_real))]`` is
            above ``ada_target``, adjusted every ``ada_interval`` G iterations by
            images/(``ada_kimg``·1000)); ``none`` by default. Images only.
        augment_policy: DiffAugment's ops, comma-separated: ``color``, ``translation``, ``cutout``.
        ada_target, ada_kimg, ada_interval: ADA's target ``r_t``, speed and adjustment interval.
        cr_real, cr_fake: weights of consistency regularization on reals (CR, Zhang et al. 2020) and
            on fakes (balanced CR, bCR, Zhao et al. 2021): ``λ·E‖D(x) − D(T(x))‖²`` with ``T`` a
            random horizontal flip and a translation of up to 1/8 of the side (the papers' image
            transform). 0 disables; images only.
        zcr_dis, zcr_gen, zcr_sigma: latent consistency regularization (zCR, Zhao et al. 2021): D's
            loss gains ``λ_dis·E‖D(G(z)) − D(G(z+Δz))‖²`` and G's loses ``λ_gen·E‖G(z) − G(z+Δz)‖²``,
            ``Δz ~ N(0, σ²I)``. Both together with ``cr_real``/``cr_fake`` are the paper's ICR.
        lecam_weight, lecam_decay: LeCam regularization (Tseng et al. 2021) of D's outputs towards
            moving-average anchors (decay ``lecam_decay``) of its outputs on the other set; 0 disables.
        top_k, top_k_gamma, top_k_min: top-k training of G (Sinha et al. 2020): only the k fakes D
            scores highest update G; ``k`` = the batch × ``top_k_gamma``^epoch, down to
            ``top_k_min`` × the batch.
        g_norm, d_norm: normalization of G and D (see :mod:`ganbench.nn.norms`).
        conditional: class-conditional G (conditional norm) and D (projection).
        loss: adversarial objective, a key of :data:`ganbench.losses.LOSSES`.
        penalty, penalty_weight, penalty_every: D regularizer from
            :data:`ganbench.regularizers.PENALTIES`, its weight, and the lazy interval (the weight is
            multiplied by the interval, as in StyleGAN2's lazy regularization).
        n_critic: D updates per G update.
        update_order: ``alternating`` (each D update, then G's gradient at the updated D) or
            ``simultaneous`` (the last D update's gradient and G's are taken at the same parameters,
            then both players step; with ``n_critic`` = 1 simultaneous gradient descent).
        g_batch_size: samples per G update (default: the D batch size).
        g_optimizer, d_optimizer: optimizer factories; ``None`` = the family's paper optimizer.
        g_scheduler, d_scheduler: optional LR scheduler factories, stepped once per G iteration.
        ema_decay: EMA of G's weights (0 disables); samples and metrics then use the EMA copy.
        grad_clip: clip both players' gradient norm to this value (0 disables).
        label_smoothing: one-sided label smoothing of D's real target (Salimans et al. 2016).
        instance_noise, instance_noise_steps: Gaussian noise σ added to D's inputs (real and fake),
            annealed linearly to 0 over ``instance_noise_steps`` G iterations (Sønderby et al. 2017);
            with ``instance_noise_steps = 0`` the noise stays at the constant σ.
        feature_matching: weight of the feature-matching term added to G's loss (Salimans 2016).
        historical_averaging: weight of the historical-averaging penalty on both players.
        minibatch: minibatch features in D's head (``std`` Karras 2018, ``discrimination`` Salimans).
        n_samples: size of the fixed latent batch used for sample grids.
        divergence_threshold: a loss whose magnitude exceeds this counts as diverged (as NaN/inf do).
        check_every: G iterations between divergence checks (the only host sync of the step).
        channels_last: NHWC memory format for G, D and the real batches (faster convolutions on
            tensor cores, especially with ``--trainer.precision bf16-mixed``).
        compile: ``torch.compile`` G and D (in place: checkpoints keep their keys).
        population: train this many independent replicas in one batched step (see
            :mod:`ganbench.nn.population`): replica ``r`` is the fit with seed ``seed_everything + r``
            (or ``population_seeds[r]``)
            — its own initial weights, latents, labels, instance noise and penalty draws — with every
            parameter stacked along a leading replica axis. ``1`` is the ordinary fit, through the
            same code. The replicas share the data set and its order (``data.seed``).
        population_overrides: per-replica values of the nuisance a study samples: a list of
            ``population`` dicts with any of ``g_lr``, ``d_lr``, ``penalty_weight``,
            ``label_smoothing``, ``instance_noise`` (missing keys keep the run's value).
        population_seeds: replica ``r``'s seed instead of ``seed_everything + r`` (one per replica,
            repeats allowed): a study that batches several trials gives each trial's replicas the
            study's seeds, so replica ``r`` is the fit with seed ``population_seeds[r]``.
        cuda_graph: capture one whole G iteration (n_critic D updates + 1 G update, latents drawn
            inside) in one CUDA graph and replay it (one graph per phase of a lazy penalty, per top-k
            ``k``, per set of frozen replicas); needs CUDA and one device (see
            :meth:`graph_unsupported_reason`), and the warm-up iterations check that the step is
            static (:mod:`ganbench.models.graph`); otherwise training falls back to the eager step
            with a one-line notice. Bf16 autocast (``--trainer.precision bf16-mixed``) works in all
            paths; penalties and losses are computed in fp32.
    """

    #: registry name of the family
    family: ClassVar[str] = "gan"
    #: architecture used for images when ``arch="auto"``
    image_arch: ClassVar[str] = "cnn"
    #: the paper's optimizer: (class, keyword arguments) for both players
    paper_optimizer: ClassVar[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = (
        torch.optim.Adam, {"lr": 2e-4, "betas": (0.5, 0.999)})
    #: penalties that need one gradient per sample, which batch-statistics norms break
    per_sample_penalties: ClassVar[frozenset[str]] = frozenset({"gp", "dragan", "r1", "r2", "lp"})

    def __init__(
        self,
        data_shape: tuple[int, ...] = (1, 32, 32),
        num_classes: int = 0,
        latent_dim: int = 128,
        arch: Arch = "auto",
        d_arch: DArch = "same",
        width: int = 64,
        g_norm: Norm = "batch",
        d_norm: Norm = "spectral",
        conditional: bool = False,
        loss: LossName = "ns",
        penalty: PenaltyName = "none",
        penalty_weight: float = 10.0,
        penalty_every: int = 1,
        n_critic: int = 1,
        update_order: UpdateOrder = "alternating",
        g_batch_size: int | None = None,
        g_optimizer: OptimizerCallable | None = None,
        d_optimizer: OptimizerCallable | None = None,
        g_scheduler: LRSchedulerCallable | None = None,
        d_scheduler: LRSchedulerCallable | None = None,
        ema_decay: float = 0.0,
        grad_clip: float = 0.0,
        label_smoothing: float = 0.0,
        instance_noise: float = 0.0,
        instance_noise_steps: int = 0,
        feature_matching: float = 0.0,
        historical_averaging: float = 0.0,
        minibatch: Minibatch = "none",
        d_width: int | None = None,
        g_depth: int = 0,
        d_depth: int = 0,
        maxout_pieces: int = 5,
        init_std: float = 0.0,
        dirac_start: tuple[float, float] | None = None,
        pack: int = 1,
        augment: AugmentName = "none",
        augment_policy: str = "color,translation,cutout",
        ada_target: float = 0.6,
        ada_kimg: float = 500.0,
        ada_interval: int = 4,
        cr_real: float = 0.0,
        cr_fake: float = 0.0,
        zcr_dis: float = 0.0,
        zcr_gen: float = 0.0,
        zcr_sigma: float = 0.03,
        lecam_weight: float = 0.0,
        lecam_decay: float = 0.99,
        top_k: bool = False,
        top_k_gamma: float = 0.99,
        top_k_min: float = 0.5,
        n_samples: int = 64,
        divergence_threshold: float = 1e6,
        check_every: int = 50,
        channels_last: bool = False,
        compile: bool = False,
        cuda_graph: bool = False,
        population: int = 1,
        population_overrides: list[dict[str, float]] | None = None,
        population_seeds: list[int] | None = None,
    ):
        args = dict(locals())
        args.pop("self")
        args.pop("__class__", None)
        super().__init__()
        self.save_hyperparameters()
        # The one settings object: the values this base received and, beside them, the family's own
        # settings (BEGAN's gamma, CycleGAN's pool_size) as given. Under LightningCLI, hparams hold only
        # the config of the family's own signature (what load_from_checkpoint replays), not what a
        # family fixes in its super().__init__ call (WGAN-GP's penalty), so every step reads cfg.
        given = self.hparams  # what save_hyperparameters collected from the family's __init__ chain
        own = {k: v for k, v in given.items() if k not in args and not k.startswith("_")}
        self.cfg = Settings({**own, **args})
        self.automatic_optimization = False
        self.check_settings()
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes if conditional else 0
        self.objective = LOSSES[loss]
        self.penalty_fn = PENALTIES[penalty]
        # factories are kept as given: under LightningCLI, hparams hold their config, not the callable
        self.optimizer_factories = (g_optimizer, d_optimizer)
        self.scheduler_factories = (g_scheduler, d_scheduler)
        #: replica r's seed: its initial weights are drawn from it, its training draws from a hash of it
        self.replica_seeds = self.check_seeds(population_seeds)
        self._network_options: set[str] = set()  # the MLP options the networks were built with
        self.generator, self.discriminator = self.build_replicas()
        for key in ("g_depth", "d_width", "d_depth"):
            if args[key] and key not in self._network_options:
                raise GanbenchError(f"model.{key}={args[key]} is not used by the {self.family} family's own "
                                    f"{'generator' if key[0] == 'g' else 'discriminator'}; leave it unset")
        self.replica_values = self.check_population(population_overrides)
        self.check_levers()
        self.ada: nn.Module | None = None
        if augment == "ada":
            self.ada = AdaptiveAugment(replicas=population, target=ada_target, kimg=ada_kimg,
                                       interval=ada_interval)
        self.augment_ops = [op.strip() for op in augment_policy.split(",") if op.strip()]
        self.lecam: nn.Module | None = None
        if lecam_weight > 0:
            self.lecam = LeCamAnchors(population, lecam_decay)
        self.ema_generator = (
            AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            if ema_decay > 0 else None)
        if self.ema_generator is not None:
            self.ema_generator.requires_grad_(False)
        self.hist_g = self.hist_d = None
        if historical_averaging > 0:
            from ganbench.tricks import HistoricalAverage

            self.hist_g, self.hist_d = HistoricalAverage(), HistoricalAverage()
        seed_gen = torch.Generator().manual_seed(1234)
        self.register_buffer("fixed_z", torch.randn(n_samples, latent_dim, generator=seed_gen))
        self.register_buffer("fixed_y", torch.arange(n_samples) % max(self.num_classes, 1))
        self.register_buffer("_bad", torch.zeros(population, dtype=torch.bool), persistent=False)
        #: replicas still training (a diverged replica is frozen: its learning rates become 0)
        self.alive = [True] * population
        self.replica_divergence: list[dict[str, Any] | None] = [None] * population
        self._rng: ReplicaRNG | None = None
        self._rng_state: list[torch.Tensor] | None = None
        self.status = "running"
        self.divergence: dict[str, Any] | None = None
        self._last_losses: tuple[torch.Tensor, ...] = ()
        self._d_steps = 0
        self._penalty_value: torch.Tensor | None = None
        self.vbn_reference: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._graph: Any = None  # None: not built yet, False: eager fallback, else the captured graph
        self._direct_steps = False  # decided in on_train_start (direct_step_blocker)

    # settings many places read, as views of cfg (not copies)
    n_critic = property(lambda self: self.cfg.n_critic, doc="D updates per G iteration (``cfg.n_critic``).")
    population = property(lambda self: self.cfg.population, doc="Replicas trained at once (``cfg.population``).")
    latent_dim = property(lambda self: self.cfg.latent_dim, doc="Dimension of z (``cfg.latent_dim``).")

    def split_batch(self, batch) -> list[Batch]:
        """The loader yields ``n_critic`` D batches at once; one :class:`Batch` per D step (samples,
        and their class labels for a conditional model)."""
        x, y = batch
        y = y if self.num_classes else None
        xs = x.chunk(self.n_critic)
        ys = y.chunk(self.n_critic) if y is not None else [None] * len(xs)
        # every replica sees the same real batch: its rows repeated per replica
        return [Batch(self.replicated(c), self.replicated(d)) for c, d in zip(xs, ys)]

    def iteration(self, chunks, g_opt, d_opt, lightning: bool = True, autocast: Any = None,
                  finish: bool = True) -> tuple[tuple[torch.Tensor, dict], tuple[torch.Tensor, dict]]:
        """One generator iteration — the only place the update sequence is written:
        ``n_critic × [D loss → D update → after_d_step]``, then ``G loss → G update``, then
        ``after_g_step`` (EMA, schedulers) when ``finish``. With ``update_order: simultaneous`` the last
        D update's gradient is taken, then G's loss and gradient at the same D, then both players step.

        The executors are ways of running it: the eager ``training_step`` (``lightning=True``: updates
        through Lightning's manual optimization), the CUDA-graph capture and the benchmark's plain
        reference loop (``lightning=False``: plain ``backward``/``step``). Each runs it with
        ``finish=False`` and hands the outcome to :meth:`Finish.finish` (``after_g_step``, the
        divergence watch, the log), outside a capture. ``autocast`` wraps the forward passes (bf16
        in the graph and bench). Returns ``(d_loss, d_logs), (g_loss, g_logs)`` of the last D step and
        the G step."""
        autocast = autocast if autocast is not None else contextlib.nullcontext()
        d_logs: dict[str, torch.Tensor] = {}
        d_loss = None
        together = len(chunks) if self.cfg.update_order == "simultaneous" else 0  # D step taken with G's
        for i, batch in enumerate(chunks, 1):
            if self.uses_vbn:
                self.refresh_reference_statistics(batch.x, batch.y)
            # no toggle for D: G's forward in d_loss runs without grad, and _step's zero_grad clears
            # whatever a family's D loss might leave in G; toggling every parameter per D step costs
            # a few percent of a small model's step
            with autocast:
                d_loss, d_logs = self.d_loss(batch)
            if i == together:  # simultaneous: D's gradient at the parameters G's is taken at; stepped below
                backward(self, d_opt, d_loss, self.discriminator, self.hist_d, lightning=lightning)
                break
            self._step(d_opt, d_loss, self.discriminator, self.hist_d, counted=False, lightning=lightning)
            self.after_d_step()
            self._d_steps += 1
        if self.uses_vbn:
            self.refresh_reference_statistics(batch.x, batch.y)
        with frozen_parameters(self.discriminator):  # G's update leaves D's parameters (and their grads) alone
            with autocast:
                g_loss, g_logs = self.g_loss(batch)
            if together:
                backward(self, g_opt, g_loss, self.generator, self.hist_g, lightning=lightning)
            else:
                self._step(g_opt, g_loss, self.generator, self.hist_g, counted=True, lightning=lightning)
        if together:  # both players step from the gradients taken at the same parameters
            update(self, d_opt, self.discriminator, self.hist_d, counted=False, lightning=lightning)
            self.after_d_step()
            self._d_steps += 1
            update(self, g_opt, self.generator, self.hist_g, counted=True, lightning=lightning)
        if finish:
            self.after_g_step()
        return (d_loss, d_logs), (g_loss, g_logs)

    def after_d_step(self) -> None:
        """Hook after each D update (WGAN clips weights here)."""

    def after_g_step(self) -> None:
        """Hook after each G update: EMA and schedulers."""
        if self.ema_generator is not None:
            self.ema_generator.update_parameters(self.generator)
        for scheduler in getattr(self, "_schedulers", []):
            scheduler.step()
        if self.ada is not None and self.global_step % self.cfg.ada_interval == 0:
            self.adjust_ada()

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None and hasattr(dm, "batches_per_step"):
            dm.batches_per_step = self.n_critic * self.cfg.pack  # each D step reads pack × batch_size samples
        batch = getattr(dm, "batch_size", None)
        if batch is not None:
            self._check_batch_norm_counts(batch)

    def validation_step(self, batch, batch_idx: int) -> None:
        """Metrics live in callbacks; the validation loop only drives them."""

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
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.parsing import AttributeDict
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ganbench import GanbenchError
from ganbench.augment import AdaptiveAugment, check_policy, cr_transform, diff_augment
from ganbench.losses import LOSSES, LossName
from ganbench.models.graph import CudaGraphs
from ganbench.models.steps import backward, update
from ganbench.nn import DISCRIMINATORS, GENERATORS, Arch
from ganbench.nn.common import Minibatch
from ganbench.nn.norms import BATCH_DEPENDENT, Norm
from ganbench.nn.population import PopulationBatchNorm, ReplicaRNG, keep_freed_memory
from ganbench.regularizers import (
    PENALTIES,
    LeCamAnchors,
    PenaltyName,
    consistency_penalty,
    latent_sensitivity,
    lecam_penalty,
)
from ganbench.tricks import pack, packed_shape, top_k_count, top_k_rows

AugmentName = Literal["none", "diffaugment", "ada"]
DArch = Literal["same", "cnn", "resnet", "dcgan", "mlp", "maxout", "patch"]
UpdateOrder = Literal["alternating", "simultaneous"]


class GANModule(L.LightningModule):
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
        # The values this base received. Under LightningCLI, hparams hold only the config of the
        # family's own signature (what load_from_checkpoint replays), not what a family fixes in
        # its super().__init__ call (WGAN-GP's penalty), so the training code reads cfg.
        self.cfg = AttributeDict(args)
        self.automatic_optimization = False
        _check_choice("model.loss", loss, LOSSES)
        _check_choice("model.penalty", penalty, PENALTIES)
        _check_choice("model.update_order", update_order, dict.fromkeys(UpdateOrder.__args__))
        if n_critic < 1:
            raise GanbenchError(f"model.n_critic must be >= 1, got {n_critic}")
        _check_ranges(args)
        self._check_pack(pack, conditional, g_batch_size)
        if penalty in self.per_sample_penalties and d_norm in BATCH_DEPENDENT:
            raise GanbenchError(
                f"model.d_norm={d_norm!r} cannot be combined with model.penalty={penalty!r}: the penalty is a "
                f"per-sample gradient norm and batch normalization couples the samples of a batch "
                f"(Gulrajani et al. 2017 §4); use d_norm none, layer, instance or spectral")
        if label_smoothing and loss not in ("ns", "minimax"):
            raise GanbenchError(
                f"model.label_smoothing={label_smoothing} needs a cross-entropy D loss (model.loss ns or minimax), "
                f"not model.loss={loss!r}: one-sided label smoothing replaces D's real target 1 by 1 - smoothing")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes if conditional else 0
        self.latent_dim = latent_dim
        self.objective = LOSSES[loss]
        self.penalty_fn = PENALTIES[penalty]
        self.n_critic = n_critic
        # factories are kept as given: under LightningCLI, hparams hold their config, not the callable
        self.optimizer_factories = (g_optimizer, d_optimizer)
        self.scheduler_factories = (g_scheduler, d_scheduler)
        self.population = population
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

    # ----------------------------------------------------------------------------------- networks
    #: why this family's D cannot score packs of samples (None: it can; see ``pack``)
    pack_unsupported: ClassVar[str | None] = None

    def _check_pack(self, m: int, conditional: bool, g_batch_size: int | None) -> None:
        if m == 1:
            return
        if self.pack_unsupported is not None:
            raise GanbenchError(f"model.pack={m} is not supported by {self.family}: {self.pack_unsupported}; "
                                "use model.pack 1")
        if conditional:
            raise GanbenchError(f"model.pack={m} needs an unconditional model (a pack of {m} samples has {m} "
                                "labels); use model.pack 1 or model.conditional false")
        if g_batch_size is not None and g_batch_size % m:
            raise GanbenchError(f"model.g_batch_size={g_batch_size} must be a multiple of model.pack={m} "
                                "(G's samples are scored in packs)")

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

    # -------------------------------------------------------------------------------- population
    #: the step pieces a family may not override and still be batched (they would need to know the
    #: replica axis); a family that overrides one refuses ``population > 1`` naming it
    POPULATION_STEP: ClassVar[tuple[str, ...]] = (
        "training_step", "d_loss", "g_loss", "generate", "penalty", "discriminate", "split_batch", "sample")
    #: per-replica values a study may set in ``population_overrides``
    REPLICA_KEYS: ClassVar[tuple[str, ...]] = ("g_lr", "d_lr", "g_beta1", "g_beta2", "d_beta1", "d_beta2",
                                               "penalty_weight", "label_smoothing", "instance_noise")

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
        from ganbench.nn.population import stack_modules

        for name in self.POPULATION_STEP:
            if getattr(type(self), name) is not getattr(GANModule, name):
                raise GanbenchError(f"model.population={self.population}: the {self.family} family overrides "
                                    f"{name}(), which cannot be batched; use population 1")
        return stack_modules([g for g, _ in nets]), stack_modules([d for _, d in nets])

    #: why this family's D inputs cannot be augmented (None: they can; see ``augment``)
    augment_unsupported: ClassVar[str | None] = None

    def check_levers(self) -> None:
        """Reject a stability lever this family or this data cannot use, naming the key."""
        h = self.cfg
        image = len(self.data_shape) == 3
        if h.augment != "none" or h.cr_real or h.cr_fake:
            key = f"model.augment={h.augment}" if h.augment != "none" else (
                f"model.cr_real={h.cr_real}" if h.cr_real else f"model.cr_fake={h.cr_fake}")
            if not image:
                raise GanbenchError(f"{key} transforms images, but the data are {len(self.data_shape)}-D vectors "
                                    f"{tuple(self.data_shape)}; use it with an image data set")
            if self.augment_unsupported is not None:
                raise GanbenchError(f"{key} is not supported by {self.family}: {self.augment_unsupported}")
        if h.augment == "diffaugment":
            check_policy([op.strip() for op in h.augment_policy.split(",") if op.strip()], "model.augment_policy")
        own_d = type(self).d_loss is not GANModule.d_loss
        own_g = type(self).g_loss is not GANModule.g_loss
        for key, on, own, player in (("cr_real", h.cr_real, own_d, "D"), ("cr_fake", h.cr_fake, own_d, "D"),
                                     ("zcr_dis", h.zcr_dis, own_d, "D"), ("lecam_weight", h.lecam_weight, own_d, "D"),
                                     ("zcr_gen", h.zcr_gen, own_g, "G"), ("top_k", h.top_k, own_g, "G")):
            if on and own:
                raise GanbenchError(f"model.{key}={on} regularizes D's scores in the base {player} loss, which the "
                                    f"{self.family} family replaces with its own; leave it unset for {self.family}")

    def check_seeds(self, seeds: list[int] | None) -> list[int]:
        """Each replica's seed: ``population_seeds``, else ``seed_everything + r``."""
        if seeds is None:
            return [torch.initial_seed() + r for r in range(self.population)]
        if len(seeds) != self.population:
            raise GanbenchError(f"model.population_seeds has {len(seeds)} entries; it needs one seed per replica "
                                f"(model.population={self.population})")
        for r, seed in enumerate(seeds):
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
                raise GanbenchError(f"model.population_seeds[{r}] must be an integer in [0, 2**32), got {seed!r}")
        return list(seeds)

    def check_population(self, overrides: list[dict[str, float]] | None) -> dict[str, torch.Tensor]:
        """Validate ``population`` and ``population_overrides``; the per-replica values as tensors."""
        n, h = self.population, self.cfg
        if n > 1:
            for key, bad, why in (
                    ("grad_clip", h.grad_clip > 0, "its norm would be taken over all replicas at once"),):
                if bad:
                    raise GanbenchError(f"model.population={n} cannot be combined with model.{key}: {why}")
        if overrides is None:
            return {}
        if len(overrides) != n:
            raise GanbenchError(f"model.population_overrides has {len(overrides)} entries; it needs one dict per "
                                f"replica (model.population={n})")
        values: dict[str, list[float]] = {}
        base = {"penalty_weight": h.penalty_weight, "label_smoothing": h.label_smoothing,
                "instance_noise": h.instance_noise}
        for r, entry in enumerate(overrides):
            for key, value in entry.items():
                if key not in self.REPLICA_KEYS:
                    raise GanbenchError(f"model.population_overrides[{r}].{key} is not a per-replica setting; "
                                        f"valid: {', '.join(self.REPLICA_KEYS)}")
                if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                        or value < 0):
                    raise GanbenchError(
                        f"model.population_overrides[{r}].{key} must be a finite number >= 0, got {value!r}")
                if key in ("label_smoothing", "instance_noise", "penalty_weight"):
                    _check_ranges({key: value}, f"model.population_overrides[{r}].")
                if key.endswith(("beta1", "beta2")) and not value < 1:
                    raise GanbenchError(f"model.population_overrides[{r}].{key} must be in [0, 1), got {value!r}")
        for key in self.REPLICA_KEYS:
            if any(key in entry for entry in overrides):
                # a replica without the key keeps the run's value (NaN: the optimizer's, filled in later)
                values[key] = [float(entry.get(key, base.get(key, math.nan))) for entry in overrides]
        if "label_smoothing" in values and h.loss not in ("ns", "minimax"):
            raise GanbenchError("model.population_overrides: label_smoothing needs model.loss ns or minimax")
        return {k: torch.tensor(v) for k, v in values.items()}

    @property
    def rng(self) -> ReplicaRNG:
        """The replicas' random streams (latents, labels, instance noise, penalty draws), on the
        module's device; seeded from each replica's seed and the data-parallel rank."""
        device = self.fixed_z.device
        if self._rng is None or self._rng.generators[0].device != device:
            from ganbench.data.loader import mix_seed

            rank = self.global_rank if self._trainer is not None else 0
            self._rng = ReplicaRNG([mix_seed(seed, rank) for seed in self.replica_seeds], device)
            if self._rng_state is not None:
                self._rng.load_state_dict(self._rng_state)
                self._rng_state = None
        return self._rng

    def rows(self, n: int) -> int:
        """Rows of a folded batch holding ``n`` samples for each replica."""
        return n * self.population

    def per_replica(self, fn: Callable[..., torch.Tensor], *args: torch.Tensor | None,
                    **kwargs: Any) -> torch.Tensor:
        """``fn`` (a loss of D's outputs) evaluated on each replica's rows: a ``(population,)`` vector.

        ``args`` are folded ``(N·B, ...)`` tensors (or None); keyword values that are tensors of shape
        ``(N,)`` are given to replica r as their r-th entry. With one replica it is ``fn`` itself."""
        n = self.population
        if n == 1:
            kw = {k: (v[0].item() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
            return fn(*args, **kw).reshape(1)
        from ganbench.nn.population import replica_rows

        tensors = {k: v for k, v in kwargs.items() if torch.is_tensor(v)}
        fixed = {k: v for k, v in kwargs.items() if not torch.is_tensor(v)}
        names = list(tensors)
        views = [None if a is None else replica_rows(a, n) for a in args]

        def one(*xs):
            return fn(*xs[: len(views)], **fixed, **dict(zip(names, xs[len(views):])))

        in_dims = tuple(None if v is None else 0 for v in views) + (0,) * len(names)
        return torch.func.vmap(one, in_dims=in_dims)(*views, *(tensors[k].to(args[0].device) for k in names))

    def replica_value(self, key: str, default: float) -> float | torch.Tensor:
        """A per-replica setting: a ``(population,)`` tensor when overridden, else the run's value."""
        value = self.replica_values.get(key)
        if value is None:
            return default
        on_device = self.__dict__.setdefault("_replica_values_on_device", {})  # copied once, not per step
        if key not in on_device or on_device[key].device != self.fixed_z.device:
            on_device[key] = value.to(self.fixed_z.device)
        return on_device[key]

    def replica_rows_of(self, value: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
        """A per-replica value broadcast over the rows (and trailing dims) of a folded batch ``x``."""
        if not torch.is_tensor(value):
            return value
        return value.to(x.dtype).repeat_interleave(x.shape[0] // self.population).reshape(
            -1, *([1] * (x.dim() - 1)))

    # ----------------------------------------------------------------------------------- sampling
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

    # ------------------------------------------------------------------------------ discriminator
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

    def host_values(self) -> None:
        """Write the values the host changes between G iterations into the device tensors the step
        reads (here the annealed instance-noise σ; families add theirs). Runs before every iteration,
        outside the step, so a captured step (``cuda_graph``) reads the current values."""
        sigma = self.noise_sigma()
        if torch.is_tensor(sigma) or sigma > 0 or "noise_sigma" in self.device_values:  # annealed to 0 too
            self.device_value("noise_sigma", sigma)

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

    def d_loss(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss on one real batch; returns (loss, values to log)."""
        with torch.no_grad():
            # the latents are drawn here only when zCR needs them again (a family's generate() may have none)
            z = self.sample_latent(len(real)) if self.cfg.zcr_dis else None
            fake = self.generate(len(real), labels) if z is None else self.generate(len(real), labels, z=z)
        d_real, d_fake = self.discriminate(real, labels), self.discriminate(fake, labels)
        smoothing = self.replica_value("label_smoothing", self.cfg.label_smoothing)
        kw = {"real_target": 1.0 - smoothing} if torch.is_tensor(smoothing) or smoothing else {}
        losses = self.per_replica(self.objective.d, d_real, d_fake, **kw) + self.penalty(real, fake, labels)
        regularizers, values = self.score_regularizers(real, fake, z, d_real, d_fake, labels)
        losses = losses + regularizers
        # per-sample scores: training_step reduces logged values only on the steps that log
        return losses.sum(), {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "d_losses": losses.detach(),
                              **values}

    def score_regularizers(self, real: torch.Tensor, fake: torch.Tensor, z: torch.Tensor | None, d_real: torch.Tensor,
                           d_fake: torch.Tensor, labels: torch.Tensor | None
                           ) -> tuple[torch.Tensor | float, dict[str, torch.Tensor]]:
        """The weighted sum of the regularizers of D's scores, per replica — CR/bCR, zCR's D term and
        LeCam, each absent when its weight is 0 — and their unweighted values to log; also feeds ADA's
        ``r_t`` with the real scores."""
        h, n = self.cfg, self.population
        if self.ada is not None:
            self.ada.accumulate(d_real.detach())
        total: torch.Tensor | float = 0.0
        values: dict[str, torch.Tensor] = {}
        if h.cr_real:
            values["cr_real"] = consistency_penalty(d_real, self.discriminate(cr_transform(real, self.rng), labels), n)
            total = total + h.cr_real * values["cr_real"]
        if h.cr_fake:
            values["cr_fake"] = consistency_penalty(d_fake, self.discriminate(cr_transform(fake, self.rng), labels), n)
            total = total + h.cr_fake * values["cr_fake"]
        if h.zcr_dis:
            with torch.no_grad():
                fake_near = self.generate(len(z), labels, z=z + h.zcr_sigma * self.rng.randn_like(z))
            values["zcr_dis"] = consistency_penalty(d_fake, self.discriminate(fake_near, labels), n)
            total = total + h.zcr_dis * values["zcr_dis"]
        if self.lecam is not None:
            anchor_real, anchor_fake = self.lecam.update(d_real, d_fake)
            values["lecam"] = lecam_penalty(d_real, d_fake, anchor_real, anchor_fake, n)
            total = total + h.lecam_weight * values["lecam"]
        return total, {k: v.detach() for k, v in values.items()}

    # ---------------------------------------------------------------------------------- generator
    def g_loss(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss for one fresh latent batch (``real`` is the last D batch, used by some objectives)."""
        h = self.cfg
        n = self.rows(h.g_batch_size) if h.g_batch_size else len(real)
        labels = self.sample_labels(n) if labels is not None else None
        z = self.sample_latent(n) if h.zcr_gen else None
        fake = self.generate(n, labels) if z is None else self.generate(n, labels, z=z)
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
            d_fake = self.discriminate(fake, labels)
            d_real = self.discriminate(real, labels[: len(real)] if labels is not None else None) if need_real else None
            losses = self.per_replica(self.objective.g, self.top_k(d_fake), d_real)
        logs: dict[str, torch.Tensor] = {}
        if h.zcr_gen:
            fake_near = self.generate(n, labels, z=z + h.zcr_sigma * self.rng.randn_like(z))
            logs["zcr_gen"] = latent_sensitivity(fake, fake_near, self.population)
            losses = losses - h.zcr_gen * logs["zcr_gen"]
        return losses.sum(), {"g_losses": losses.detach(), **{k: v.detach() for k, v in logs.items()}}

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
        """D's scores of the fakes that update G: all of them, or with ``top_k`` the k highest of each
        replica (Sinha et al. 2020), k annealed per epoch (:func:`ganbench.tricks.top_k_count`)."""
        if not self.cfg.top_k:
            return d_fake
        self._top_k_batch = d_fake.shape[0] // self.population
        k = self.top_k_count(self._top_k_batch)
        return d_fake[top_k_rows(d_fake, k, self.population)]

    def top_k_count(self, batch: int) -> int:
        """How many of ``batch`` fakes per replica update G at this G iteration (top-k training)."""
        h = self.cfg
        return top_k_count(batch, self.epochs_done(), h.top_k_gamma, h.top_k_min)

    # ------------------------------------------------------------------------------ optimization
    def _make_optimizer(self, factory: OptimizerCallable | None, params, key: str) -> torch.optim.Optimizer:
        try:
            if factory is not None:
                opt = factory(params)
            else:
                cls, kwargs = self.paper_optimizer
                opt = cls(params, **kwargs)
        except (ValueError, TypeError) as err:  # torch.optim validates lr, betas, eps, ... on construction
            raise GanbenchError(f"model.{key}: {err}") from None
        for name, value in opt.defaults.items():  # torch accepts lr = inf or nan
            if isinstance(value, float) and not math.isfinite(value):
                raise GanbenchError(f"model.{key}.init_args.{name} must be a finite number, got {value}")
        return opt

    def replica_optimizer(self, opt: torch.optim.Optimizer, player: str) -> torch.optim.Optimizer:
        """``opt`` itself, or — when ``population_overrides`` set this player's learning rate or betas —
        the same Adam with those values per replica (:class:`ganbench.optim.PopulationAdam`)."""
        keys = [f"{player}_{k}" for k in ("lr", "beta1", "beta2")]
        given = {k[2:]: self.replica_values[k] for k in keys if k in self.replica_values}
        if not given:
            return opt
        if type(opt) not in (torch.optim.Adam, torch.optim.AdamW):
            raise GanbenchError(f"model.population_overrides sets {', '.join(f'{player}_{k}' for k in given)} per "
                                f"replica, which needs torch.optim.Adam or AdamW for model.{player}_optimizer, "
                                f"not {type(opt).__name__}")
        from ganbench.optim import PopulationAdam

        group = opt.param_groups[0]
        base_lr = float(group["lr"])
        defaults = {"lr": group["lr"], "betas": group["betas"], "eps": group["eps"],
                    "weight_decay": group["weight_decay"],
                    "decoupled_weight_decay": (isinstance(opt, torch.optim.AdamW)
                                               or group.get("decoupled_weight_decay", False)),
                    **{k: group.get(k) for k in ("amsgrad", "maximize")}}

        def fill(key: str, default: float) -> torch.Tensor | None:
            value = given.get(key)
            return None if value is None else torch.where(torch.isnan(value), torch.full_like(value, default), value)

        lr = fill("lr", base_lr)
        ratio = (lr.double() / base_lr) if lr is not None else torch.ones(self.population, dtype=torch.float64)
        try:
            return PopulationAdam(opt.param_groups[0]["params"], ratio, fill("beta1", group["betas"][0]),
                                  fill("beta2", group["betas"][1]), **defaults)
        except ValueError as err:
            raise GanbenchError(f"model.{player}_optimizer: {err}") from None

    def configure_optimizers(self):
        g_factory, d_factory = self.optimizer_factories
        g_opt = self._make_optimizer(g_factory, self.generator.parameters(), "g_optimizer")
        d_opt = self._make_optimizer(d_factory, self.discriminator.parameters(), "d_optimizer")
        g_opt, d_opt = self.replica_optimizer(g_opt, "g"), self.replica_optimizer(d_opt, "d")
        self._schedulers, self._scheduler_keys = [], []
        for key, factory, opt in zip(("g_scheduler", "d_scheduler"), self.scheduler_factories, (g_opt, d_opt)):
            if factory is not None:
                try:
                    self._schedulers.append(factory(opt))
                    self._scheduler_keys.append(key)
                except (ValueError, TypeError) as err:
                    raise GanbenchError(f"model.{key}: {err}") from None
        return [g_opt, d_opt]

    def _step(self, opt, loss: torch.Tensor, module: nn.Module, hist, counted: bool, lightning: bool = True) -> None:
        """zero_grad → backward → (historical averaging) → clip → step (:mod:`ganbench.models.steps`).

        ``lightning=False`` is the same update with plain torch calls and nothing of the Trainer (the
        CUDA-graph capture and the benchmark's reference loop); ``opt`` may then be a bare optimizer."""
        backward(self, opt, loss, module, hist, lightning)
        update(self, opt, module, hist, counted, lightning)

    def split_batch(self, batch) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The loader yields ``n_critic`` D batches at once; one slice per D step."""
        x, y = batch
        y = y if self.num_classes else None
        xs = x.chunk(self.n_critic)
        ys = y.chunk(self.n_critic) if y is not None else [None] * len(xs)
        if self.population > 1:  # every replica sees the same real batch: its rows repeated per replica
            xs = [c.repeat(self.population, *([1] * (c.dim() - 1))) for c in xs]
            ys = [None if c is None else c.repeat(self.population) for c in ys]
        return list(zip(xs, ys))

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

    def iteration(self, chunks, g_opt, d_opt, lightning: bool = True, autocast: Any = None,
                  finish: bool = True) -> tuple[tuple[torch.Tensor, dict], tuple[torch.Tensor, dict]]:
        """One generator iteration — the only place the update sequence is written:
        ``n_critic × [D loss → D update → after_d_step]``, then ``G loss → G update``, then
        ``after_g_step`` (EMA, schedulers) when ``finish``. With ``update_order: simultaneous`` the last
        D update's gradient is taken, then G's loss and gradient at the same D, then both players step.

        The executors are ways of running it: the eager ``training_step`` (``lightning=True``: updates
        through Lightning's manual optimization), the CUDA-graph capture and the benchmark's plain
        reference loop (``lightning=False``: plain ``backward``/``step``; the graph runs ``finish``
        outside the capture). ``autocast`` wraps the forward passes (bf16 in the graph and bench).
        Returns ``(d_loss, d_logs), (g_loss, g_logs)`` of the last D step and the G step."""
        autocast = autocast if autocast is not None else contextlib.nullcontext()
        d_logs: dict[str, torch.Tensor] = {}
        d_loss = None
        together = len(chunks) if self.cfg.update_order == "simultaneous" else 0  # D step taken with G's
        for i, (real, labels) in enumerate(chunks, 1):
            if self.uses_vbn:
                self.refresh_reference_statistics(real, labels)
            # no toggle for D: G's forward in d_loss runs without grad, and _step's zero_grad clears
            # whatever a family's D loss might leave in G; toggling every parameter per D step costs
            # a few percent of a small model's step
            with autocast:
                d_loss, d_logs = self.d_loss(real, labels)
            if i == together:  # simultaneous: D's gradient at the parameters G's is taken at; stepped below
                backward(self, d_opt, d_loss, self.discriminator, self.hist_d, lightning=lightning)
                break
            self._step(d_opt, d_loss, self.discriminator, self.hist_d, counted=False, lightning=lightning)
            self.after_d_step()
            self._d_steps += 1
        if self.uses_vbn:
            self.refresh_reference_statistics(real, labels)
        with _frozen(self.discriminator):  # G's update leaves D's parameters (and their grads) alone
            with autocast:
                g_loss, g_logs = self.g_loss(real, labels)
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

    def training_step(self, batch, batch_idx: int) -> None:
        if self._graph is not False and self.cfg.cuda_graph:
            return self._graph_training_step(batch)
        self.host_values()
        (d_loss, d_logs), (g_loss, g_logs) = self.iteration(self.split_batch(batch), *self.optimizers())
        d_losses, g_losses = d_logs.pop("d_losses", d_loss.detach()), g_logs.pop("g_losses", g_loss.detach())
        self._watch(d_losses, g_losses)
        if not self.logging_step():
            return
        if self.ada is not None:
            d_logs["ada_p"] = self.ada.p
            if self.global_step >= self.cfg.ada_interval:  # r_t is measured from the first adjustment on
                d_logs["ada_rt"] = self.ada.rt
        if self.population > 1:
            self.log_replicas({"d_loss": d_losses, "g_loss": g_losses, **d_logs, **g_logs})
            return
        self.log_dict({"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach()}, prog_bar=True)
        logs = {f"train/{k}": v.float().mean() if torch.is_tensor(v) and v.dim() else v
                for k, v in {**d_logs, **g_logs}.items()}
        if "train/d_real" in logs and "train/d_fake" in logs and "train/critic_gap" not in logs:
            logs["train/critic_gap"] = logs["train/d_real"] - logs["train/d_fake"]
        if self._penalty_value is not None:
            logs[f"train/penalty_{self.cfg.penalty}"] = self._penalty_value
        if self.cfg.instance_noise > 0:
            logs["train/instance_noise_sigma"] = self.noise_sigma()
        self.log_dict(logs)

    def log_replicas(self, values: dict[str, torch.Tensor]) -> None:
        """Per-replica training values as ``train/<key>/r<k>``: per-sample tensors averaged over each
        replica's rows, per-replica vectors as they are."""
        from ganbench.nn.population import replica_rows

        n = self.population
        logs: dict[str, torch.Tensor] = {}
        for key, v in values.items():
            v = v.float()
            per = v if v.shape == (n,) else replica_rows(v, n).reshape(n, -1).mean(1)
            logs.update({f"train/{key}/r{k}": per[k] for k in range(n)})
        if "d_real" in values and "d_fake" in values:
            gap = replica_rows(values["d_real"].float(), n).reshape(n, -1).mean(1) - \
                replica_rows(values["d_fake"].float(), n).reshape(n, -1).mean(1)
            logs.update({f"train/critic_gap/r{k}": gap[k] for k in range(n)})
        if self._penalty_value is not None and self._penalty_value.dim():
            logs.update({f"train/penalty_{self.cfg.penalty}/r{k}": self._penalty_value[k] for k in range(n)})
        self.log_dict(logs)

    def logging_step(self) -> bool:
        """Log only on the steps Lightning sends to the loggers (every ``log_every_n_steps``) and at
        the last step: logging builds Python objects per value, which a launch-bound step feels."""
        trainer = self.trainer
        step = self.global_step
        every = max(1, trainer.log_every_n_steps)
        return step % every == 0 or step >= (trainer.max_steps or 0) > 0 or trainer.should_stop

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

    # ------------------------------------------------------------------------- divergence watch
    def _accumulate_divergence(self, *losses: torch.Tensor) -> None:
        """Fold NaN/inf or |loss| > divergence_threshold into a device flag (no host sync)."""
        v = torch.stack([loss.detach().float().reshape(-1) for loss in losses])  # (losses, replicas)
        self._bad |= (~torch.isfinite(v) | (v.abs() > self.cfg.divergence_threshold)).any(0)

    def _watch(self, *losses: torch.Tensor, accumulate: bool = True) -> None:
        """Accumulate a divergence flag on the device; look at it only every ``check_every`` steps
        (and, through :meth:`check_divergence`, before every checkpoint and sample grid)."""
        if accumulate:
            self._accumulate_divergence(*losses)
        self._last_losses = losses
        step = self.global_step
        if step % self.cfg.check_every == 0 or step >= (self.trainer.max_steps or 0) > 0:
            self.check_divergence()

    def check_divergence(self) -> bool:
        """Read the device flag (a host sync; under DDP every rank must call it, and all stop when any
        rank saw a divergence) and mark the run diverged when a loss was non-finite or beyond
        ``divergence_threshold``. Returns whether the run has diverged. In a population, each newly
        diverged replica is frozen and recorded, and the run has diverged when every replica has."""
        if self.population > 1:
            self._watch_replicas(*self._last_losses)
            return self.status == "diverged"
        if self.status != "diverged" and self.trainer.strategy.reduce_boolean_decision(bool(self._bad.any()),
                                                                                      all=False):
            values = ", ".join(f"{x.sum().item():.4g}" for x in self._last_losses)
            self.mark_diverged(f"loss non-finite or above {self.cfg.divergence_threshold:g} "
                               f"(d_loss, g_loss = {values})")
        return self.status == "diverged"

    def _watch_replicas(self, *losses: torch.Tensor) -> None:
        """A diverged replica is a result, not the end of the fit: it is frozen (learning rates 0, so
        its non-finite values stay in its own slice) and the others train on; the fit stops when
        every replica has diverged."""
        bad = self._bad.float()
        if self.trainer.world_size > 1:  # one decision for all ranks
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        bad_host = (bad > 0).tolist()
        newly = [r for r, b in enumerate(bad_host) if b and self.alive[r]]
        if newly:
            bound = self.cfg.divergence_threshold
            for r in newly:
                values = ", ".join(f"{x[r].item():.4g}" for x in losses)
                self.alive[r] = False
                reason = f"loss non-finite or above {bound:g} (d_loss, g_loss = {values})"
                self.replica_divergence[r] = {"step": int(self.global_step), "reason": reason}
            self._update_frozen()
        if not any(self.alive):
            self.mark_diverged("every replica diverged")

    def mark_diverged(self, reason: str) -> None:
        self.status = "diverged"
        self.divergence = {"step": int(self.global_step), "reason": reason}
        self.trainer.should_stop = True

    # ------------------------------------------------------------------------------ direct steps
    #: Lightning hooks dispatched around every backward / optimizer step under manual optimization
    STEP_HOOKS: ClassVar[tuple[str, ...]] = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
    #: strategy and precision-plugin methods on that path; a subclass that overrides one adds work there
    STRATEGY_STEP_METHODS: ClassVar[tuple[str, ...]] = ("backward", "pre_backward", "post_backward", "optimizer_step")
    PRECISION_STEP_METHODS: ClassVar[tuple[str, ...]] = (
        "backward", "pre_backward", "post_backward", "optimizer_step", "_wrap_closure", "_after_closure")

    def direct_step_blocker(self) -> str | None:
        """Why this run's optimizer steps must go through Lightning's dispatch, or None when
        ``loss.backward()`` / ``optimizer.step()`` called directly do exactly the same thing."""
        trainer = self.trainer
        if not isinstance(trainer.profiler, PassThroughProfiler):
            return f"a profiler ({type(trainer.profiler).__name__}) times the hooks"
        for cb in trainer.callbacks:
            for hook in self.STEP_HOOKS:
                if is_overridden(hook, cb, L.Callback):
                    return f"callback {type(cb).__name__} implements {hook}"
        for hook in (*self.STEP_HOOKS, "backward"):
            if is_overridden(hook, self, L.LightningModule):
                return f"the {self.family} module implements {hook}"
        strategy, plugin = trainer.strategy, trainer.strategy.precision_plugin
        for obj, base, methods in ((strategy, Strategy, self.STRATEGY_STEP_METHODS),
                                   (plugin, Precision, self.PRECISION_STEP_METHODS)):
            for name in methods:
                if getattr(type(obj), name) is not getattr(base, name):
                    return f"{type(obj).__name__} adds work to {name}"
        return None

    def on_train_start(self) -> None:
        self._direct_steps = self.direct_step_blocker() is None
        self._update_frozen()

    #: (population,) bool, True for a diverged (frozen) replica; None while every replica trains
    _frozen: torch.Tensor | None = None

    def _update_frozen(self) -> None:
        dead = torch.tensor([not a for a in self.alive], device=self.fixed_z.device)
        self._frozen = dead if bool(dead.any()) else None

    # -------------------------------------------------------------------------------- lifecycle
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

    # ------------------------------------------------------------------------------ CUDA graph
    #: how graphs are captured and replayed (:class:`ganbench.models.graph.CudaGraphs`; the tests use
    #: :class:`~ganbench.models.graph.EmulatedGraphs`, the same semantics on the CPU)
    graph_backend: ClassVar[type] = CudaGraphs

    def graph_unsupported_reason(self) -> str | None:
        """Why this run cannot be captured in a CUDA graph, or None when it may be (the warm-up
        iterations then check that the step is static, see :mod:`ganbench.models.graph`)."""
        reason = self.graph_backend().unavailable(self)
        if reason is not None:
            return reason
        if self.trainer.world_size > 1:
            return "it runs on several devices (DDP: the gradient all-reduce is not captured)"
        if "16-mixed" == str(self.trainer.precision):
            return "fp16 needs a dynamic loss scaler (use bf16-mixed)"
        for key, scheduler in zip(getattr(self, "_scheduler_keys", []), getattr(self, "_schedulers", [])):
            opt = scheduler.optimizer
            if any("capturable" not in group for group in opt.param_groups):
                return (f"model.{key} drives {type(opt).__name__} (model.{key[0]}_optimizer), whose learning rate "
                        "cannot live on the device (use Adam, AdamW or RMSprop)")
        return self.graph_blocker()

    def graph_blocker(self) -> str | None:
        """Why this family's step keeps state on the host that a graph would freeze (None: it does not)."""
        return None

    def graph_period(self) -> int:
        """G iterations after which the step repeats itself: a penalty every k D steps with
        ``n_critic`` D steps per iteration repeats after k / gcd(k, n_critic) iterations."""
        h = self.cfg
        if h.penalty == "none" or h.penalty_every == 1:
            return 1
        return h.penalty_every // math.gcd(h.penalty_every, self.n_critic)

    def graph_key(self) -> tuple:
        """Which captured graph runs this iteration: the phase of a lazy penalty (the first entry, the
        only one that recurs), top-k's k (only shrinks), and in a population the replicas frozen since
        they diverged (only grow; their slices are put back after each step)."""
        h = self.cfg
        batch = self.__dict__.get("_top_k_batch")  # the fakes per replica top-k last chose from
        k = (self.top_k_count(batch) if batch else self.epochs_done()) if h.top_k else None
        phase = self._d_steps % h.penalty_every if h.penalty != "none" else 0
        return (phase, k, tuple(self.alive))

    def graph_optimizers(self) -> tuple[torch.optim.Optimizer, ...]:
        return tuple(getattr(opt, "optimizer", opt) for opt in self.optimizers())

    def plain_iteration(self, chunks, optimizers: tuple | None = None, autocast: Any = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`iteration` with plain ``backward``/``step`` and without ``after_g_step`` (what a
        graph records), with the Trainer's optimizers and precision unless given; returns the
        detached per-replica losses of the last D step and the G step (``(population,)`` each)."""
        if autocast is None:
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                      enabled="bf16" in str(self.trainer.precision))
        (d_loss, d_logs), (g_loss, g_logs) = self.iteration(chunks, *(optimizers or self.optimizers()),
                                                            lightning=False, autocast=autocast, finish=False)
        return d_logs.get("d_losses", d_loss).detach(), g_logs.get("g_losses", g_loss).detach()

    def set_capturable(self, on: bool, optimizers: tuple[torch.optim.Optimizer, ...] | None = None) -> None:
        """Learning rates, step counts and bias corrections of the optimizers on the device (and so
        inside the graph): torch's ``capturable`` optimizers; a scheduler then fills the lr tensor."""
        for opt in optimizers or self.graph_optimizers():
            for group in opt.param_groups:
                if "capturable" not in group:
                    continue
                group["capturable"] = on
                if on and getattr(self, "_schedulers", None) and not torch.is_tensor(group["lr"]):
                    group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
                elif not on and torch.is_tensor(group["lr"]):  # back to the eager step's float
                    group["lr"] = float(group["lr"])
                for p in group["params"]:
                    step = opt.state.get(p, {}).get("step")
                    if on and torch.is_tensor(step) and step.device != p.device:
                        opt.state[p]["step"] = step.to(p.device)
                    elif not on and torch.is_tensor(step) and step.device.type != "cpu" and not group.get("fused"):
                        opt.state[p]["step"] = step.cpu()  # where torch's eager optimizers keep it

    def _graph_training_step(self, batch) -> None:
        """One G iteration per call through :class:`~ganbench.models.graph.GraphStep`: the same
        iteration as the eager path, with the host's values written before it and ``after_g_step``
        after it; a step the warm-up finds not static falls back to the eager one with the reason."""
        from ganbench.models.graph import GraphStep, fallback_notice

        if self._graph is None:
            reason = self.graph_unsupported_reason()
            if reason is not None:
                fallback_notice(self, reason)
                self._graph = False
                return self.training_step(batch, 0)
            self.set_capturable(True)
            self._graph = GraphStep(self, self.graph_backend(), batch)
        self.host_values()
        d_loss, g_loss, replayed = self._graph(batch)
        g_opt = self.optimizers()[0]
        g_opt._on_before_step()  # count the G update as the eager path's g_opt.step() does
        g_opt._on_after_step()
        self._d_steps += self.n_critic
        self.after_g_step()
        self._watch(d_loss, g_loss, accumulate=not replayed)
        if self.logging_step():  # copies: the graph's outputs change at the next replay
            if self.population > 1:
                self.log_replicas({"d_loss": d_loss.clone(), "g_loss": g_loss.clone()})
            else:
                self.log_dict({"train/d_loss": d_loss.sum(), "train/g_loss": g_loss.sum()}, prog_bar=True)
        if self._graph.fallback is not None:  # this iteration ran eagerly; the next ones are eager
            fallback_notice(self, self._graph.fallback)
            self._graph = False
            self.set_capturable(False)

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None and hasattr(dm, "batches_per_step"):
            dm.batches_per_step = self.n_critic * self.cfg.pack  # each D step reads pack × batch_size samples
        batch = getattr(dm, "batch_size", None)
        if batch is not None:
            self._check_batch_norm_counts(batch)

    def _check_batch_norm_counts(self, batch: int) -> None:
        """Batch norm in training mode needs >= 2 values per channel: N for vectors (N, C), N·H·W for
        feature maps (N, C, H, W). Every batch-norm layer of G and D checks, on its first training
        input, the count it has at the smallest batch its net is trained with (the positions per sample
        are the layer's own), so batch 1 with BatchNorm2d (Pix2Pix as in its paper) trains, and a
        (1, C) vector or a 1×1 map stops with one line naming the key instead of torch's ValueError."""
        h = self.cfg
        for handle in getattr(self, "_bn_checks", []):
            handle.remove()
        self._bn_checks = []
        nets = (("G", self.generator, min(batch, h.g_batch_size or batch), "model.g_batch_size or data.batch_size"),
                ("D", self.discriminator, batch, "data.batch_size"))
        for net, module, n, key in nets:
            for name, layer in module.named_modules():
                if isinstance(layer, nn.modules.batchnorm._BatchNorm | PopulationBatchNorm):
                    self._bn_checks.append(layer.register_forward_pre_hook(
                        _batch_norm_count_check(f"{net} layer {name}", n, f"{key}={n}", f"model.{net.lower()}_norm")))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ganbench"] = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "family": self.family,
            "d_steps": self._d_steps,
            "population": self.population,
            "replica_seeds": self.replica_seeds,
            "rng": self.rng.state_dict(),
            "alive": self.alive,
            "replica_divergence": self.replica_divergence,
            "hist_g": self.hist_g.state_dict() if self.hist_g is not None else None,
            "hist_d": self.hist_d.state_dict() if self.hist_d is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ganbench", {})
        self._d_steps = state.get("d_steps", 0)
        if state.get("population", 1) != self.population:
            raise GanbenchError(f"the checkpoint holds a population of {state.get('population', 1)} replicas; "
                                f"model.population is {self.population}")
        if "rng" in state:
            self._rng_state, self._rng = state["rng"], None
            self.replica_seeds = list(state.get("replica_seeds", self.replica_seeds))
            self.alive = list(state.get("alive", self.alive))
            self.replica_divergence = list(state.get("replica_divergence", self.replica_divergence))
        for name in ("hist_g", "hist_d"):
            if getattr(self, name) is not None and state.get(name) is not None:
                getattr(self, name).load_state_dict(state[name])

    def validation_step(self, batch, batch_idx: int) -> None:
        """Metrics live in callbacks; the validation loop only drives them."""


#: base argument → (test, what it must be); every value is checked before a network is built
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "num_classes": (lambda v: v >= 0, ">= 0"),
    "latent_dim": (lambda v: v >= 1, ">= 1"),
    "width": (lambda v: v >= 0, ">= 0 (0: the network's default)"),
    "penalty_weight": (lambda v: 0 <= v < math.inf, "finite and >= 0"),
    "penalty_every": (lambda v: v >= 1, ">= 1"),
    "g_batch_size": (lambda v: v is None or v >= 1, ">= 1 (or null: data.batch_size)"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1) (0: no EMA)"),
    "grad_clip": (lambda v: 0 <= v < math.inf, "finite and >= 0 (0: no clipping)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "instance_noise": (lambda v: 0 <= v < math.inf, "finite and >= 0"),
    "instance_noise_steps": (lambda v: v >= 0, ">= 0"),
    "feature_matching": (lambda v: 0 <= v < math.inf, "finite and >= 0"),
    "historical_averaging": (lambda v: 0 <= v < math.inf, "finite and >= 0"),
    "n_samples": (lambda v: v >= 1, ">= 1"),
    "d_width": (lambda v: v is None or v >= 1, ">= 1 (or null: model.width)"),
    "g_depth": (lambda v: v >= 0, ">= 0 (0: the network's default)"),
    "d_depth": (lambda v: v >= 0, ">= 0 (0: the network's default)"),
    "maxout_pieces": (lambda v: v >= 1, ">= 1"),
    "init_std": (lambda v: 0 <= v < math.inf, "finite and >= 0 (0: PyTorch's default initialization)"),
    "pack": (lambda v: v >= 1, ">= 1 (1: no packing)"),
    "ada_target": (lambda v: 0 < v < 1, "in (0, 1)"),
    "ada_kimg": (lambda v: 0 < v < math.inf, "finite and > 0"),
    "ada_interval": (lambda v: v >= 1, ">= 1"),
    "cr_real": (lambda v: 0 <= v < math.inf, "finite and >= 0 (0: off)"),
    "cr_fake": (lambda v: 0 <= v < math.inf, "finite and >= 0 (0: off)"),
    "zcr_dis": (lambda v: 0 <= v < math.inf, "finite and >= 0 (0: off)"),
    "zcr_gen": (lambda v: 0 <= v < math.inf, "finite and >= 0 (0: off)"),
    "zcr_sigma": (lambda v: 0 < v < math.inf, "finite and > 0"),
    "lecam_weight": (lambda v: 0 <= v < math.inf, "finite and >= 0 (0: off)"),
    "lecam_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "top_k_gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "top_k_min": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "divergence_threshold": (lambda v: v > 0, "> 0 (inf: only NaN/inf stop a run)"),
    "check_every": (lambda v: v >= 1, ">= 1"),
    "population": (lambda v: v >= 1, ">= 1 (1: one ordinary fit)"),
}


@contextlib.contextmanager
def _frozen(module: nn.Module):
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


def _batch_norm_count_check(where: str, n: int, setting: str, norm_key: str) -> Callable:
    """A forward pre-hook: one ``GanbenchError`` line when batch norm would see < 2 values per channel
    with ``n`` samples; removes itself after the first training input (a layer's map size is fixed)."""
    def check(layer: nn.Module, args: tuple) -> None:
        if not layer.training:
            return
        x = args[0]
        positions = x[0].numel() // x.shape[1]  # H·W of a feature map, 1 for a vector
        if n * positions < 2:
            shape = "vectors" if x.dim() == 2 else "x".join(map(str, x.shape[2:])) + " maps"
            raise GanbenchError(f"{setting} is too small for batch normalization in {where}: {n} sample x "
                                f"{positions} position ({shape}) = {n * positions} value per channel, it needs >= 2; "
                                f"use a larger batch or a {norm_key} other than 'batch'")
        hooks = layer._forward_pre_hooks
        for key, hook in list(hooks.items()):
            if hook is check:
                del hooks[key]
    return check


def _check_ranges(args: dict[str, Any], prefix: str = "model.") -> None:
    for key, (ok, what) in RANGES.items():
        value = args.get(key)
        if key not in args or (value is None and key in ("g_batch_size", "d_width")):
            continue
        if value is None or isinstance(value, bool) or not (value == value and ok(value)):  # NaN != NaN
            raise GanbenchError(f"{prefix}{key} must be {what}, got {value}")


def _check_choice(key: str, value: str, table: dict) -> None:
    if value not in table:
        raise GanbenchError(f"{key}={value!r} is not valid; choose one of: {', '.join(sorted(table))}")


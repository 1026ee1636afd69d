"""Checks of a module's settings before and while it trains: choices, ranges, packing, the levers a
family or its data cannot use, and batch-norm counts — each stops with one line naming the key."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch.nn as nn

from ganbench import GanbenchError
from ganbench.augment import check_policy
from ganbench.losses import LOSSES
from ganbench.nn.norms import BATCH_DEPENDENT
from ganbench.nn.population import PopulationBatchNorm
from ganbench.regularizers import PENALTIES

UpdateOrder = Literal["alternating", "simultaneous"]


class Checks:
    """The settings checks of :class:`~ganbench.models.base.GANModule`."""

    def check_settings(self) -> None:
        """The base settings (``cfg``) checked before a network is built: each stops with one line."""
        h = self.cfg
        check_choice("model.loss", h.loss, LOSSES)
        check_choice("model.penalty", h.penalty, PENALTIES)
        check_choice("model.update_order", h.update_order, dict.fromkeys(UpdateOrder.__args__))
        if h.n_critic < 1:
            raise GanbenchError(f"model.n_critic must be >= 1, got {h.n_critic}")
        check_ranges(h)
        self._check_pack(h.pack, h.conditional, h.g_batch_size)
        if h.penalty in self.per_sample_penalties and h.d_norm in BATCH_DEPENDENT:
            raise GanbenchError(
                f"model.d_norm={h.d_norm!r} cannot be combined with model.penalty={h.penalty!r}: the penalty is a "
                f"per-sample gradient norm and batch normalization couples the samples of a batch "
                f"(Gulrajani et al. 2017 §4); use d_norm none, layer, instance or spectral")
        if h.label_smoothing and h.loss not in ("ns", "minimax"):
            raise GanbenchError(
                f"model.label_smoothing={h.label_smoothing} needs a cross-entropy D loss (model.loss ns or minimax), "
                f"not model.loss={h.loss!r}: one-sided label smoothing replaces D's real target 1 by 1 - smoothing")

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


    #: why this family's D inputs cannot be augmented (None: they can; see ``augment``)
    augment_unsupported: ClassVar[str | None] = None
    #: why ADA cannot steer this family's augmentation probability (None: it can). ADA's overfitting
    #: heuristic r_t = E[sign D(x_real)] reads the realness score of D's outputs, centred at 0 (logits)
    ada_unsupported: ClassVar[str | None] = None
    #: the levers on D's scores (``cr_real``, ``cr_fake``, ``zcr_dis``, ``lecam_weight``, ``zcr_gen``,
    #: ``top_k``) this family does not apply, each with its mathematical reason; ``{}``: its losses apply
    #: them all (through ``score_regularizers``, ``g_regularized`` and ``top_k`` on its ``score_of``). None:
    #: not declared — a lever of a loss the family replaces with its own (d_loss, g_loss) is refused
    score_levers_unsupported: ClassVar[dict[str, str] | None] = None

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
        if h.augment == "ada" and self.ada_unsupported is not None:
            raise GanbenchError(f"model.augment=ada is not supported by {self.family}: {self.ada_unsupported}; "
                                "use model.augment diffaugment (a fixed policy) instead")
        if h.augment == "diffaugment":
            check_policy([op.strip() for op in h.augment_policy.split(",") if op.strip()], "model.augment_policy")
        from ganbench.models.base import GANModule  # a family's own loss, or one a test puts on the base

        own_d = type(self).d_loss is not GANModule.d_loss
        own_g = type(self).g_loss is not GANModule.g_loss
        unsupported = self.score_levers_unsupported
        for key, on, own, player in (("cr_real", h.cr_real, own_d, "D"), ("cr_fake", h.cr_fake, own_d, "D"),
                                     ("zcr_dis", h.zcr_dis, own_d, "D"), ("lecam_weight", h.lecam_weight, own_d, "D"),
                                     ("zcr_gen", h.zcr_gen, own_g, "G"), ("top_k", h.top_k, own_g, "G")):
            if not on:
                continue
            if unsupported is None and own:
                raise GanbenchError(f"model.{key}={on} regularizes D's scores in the base {player} loss, which the "
                                    f"{self.family} family replaces with its own; leave it unset for {self.family}")
            if unsupported and key in unsupported:
                raise GanbenchError(f"model.{key}={on} is not supported by {self.family}: {unsupported[key]}; "
                                    f"leave it unset for {self.family}")


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
                        batch_norm_count_check(f"{net} layer {name}", n, f"{key}={n}", f"model.{net.lower()}_norm")))


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


def batch_norm_count_check(where: str, n: int, setting: str, norm_key: str) -> Callable:
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


def check_ranges(args: dict[str, Any], prefix: str = "model.") -> None:
    for key, (ok, what) in RANGES.items():
        value = args.get(key)
        if key not in args or (value is None and key in ("g_batch_size", "d_width")):
            continue
        if value is None or isinstance(value, bool) or not (value == value and ok(value)):  # NaN != NaN
            raise GanbenchError(f"{prefix}{key} must be {what}, got {value}")


def check_choice(key: str, value: str, table: dict) -> None:
    if value not in table:
        raise GanbenchError(f"{key}={value!r} is not valid; choose one of: {', '.join(sorted(table))}")

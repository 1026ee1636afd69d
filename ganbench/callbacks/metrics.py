"""Metric callbacks: image metrics, toy-mixture metrics and training diagnostics.

Metrics live outside the training module. Every evaluation is logged once, at the G iteration it
measured, through :func:`ganbench.callbacks.log.log_evaluation` (every logger receives it) under a
key that carries its protocol; files are written on global rank 0 only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.nn.utils import parametrize

from ganbench import GanbenchError
from ganbench.callbacks.log import log_evaluation
from ganbench.metrics.features import FEATURE_NETS, FeatureNet, load_feature_net
from ganbench.metrics.image import (
    IMAGE_METRICS,
    StreamingImageMetrics,
    check_metrics,
    check_sample_counts,
    count_tag,
    metric_keys,
    metric_protocol,
    swd_metrics,
)
from ganbench.metrics.reference import ReferenceStats, reference_statistics
from ganbench.metrics.sampling import generate
from ganbench.metrics.toy import mode_metrics, toy_scatter
from ganbench.metrics.wasserstein import w1_exact
from ganbench.progress import progress


class _Interval:
    """Fires when ``global_step`` crosses a multiple of ``every`` (robust to steps that jump by > 1).
    The first step it sees counts from the multiple below it, so a run resumed at G iteration 3 with
    ``every = 2`` fires at 4, 6, ... as the uninterrupted run does, not at once."""

    def __init__(self, every: int | None) -> None:
        self.every = every
        self.last: int | None = None

    def due(self, step: int) -> bool:
        if not self.every or step <= 0:
            return False
        slot = step // self.every
        if self.last is None:
            self.last = (step - 1) // self.every
        if slot > self.last:
            self.last = slot
            return True
        return False

    def fires(self, trainer: L.Trainer) -> bool:
        """Due at this step, or the last step of the run (so summary.json has final values)."""
        due = self.due(trainer.global_step)
        last = bool(self.every) and trainer.max_steps is not None and trainer.global_step == trainer.max_steps > 0
        return due or last


def replica_tag(pl_module: Any, k: int) -> str:
    """The metric-key suffix of replica ``k``: ``/r<k>`` in a population, nothing for one fit."""
    return f"/r{k}" if getattr(pl_module, "population", 1) > 1 else ""


@torch.no_grad()
def replica_samples(pl_module: Any, n: int, seed: int, ema: bool) -> list[Tensor]:
    """``n`` samples of every replica (one tensor each, on the CPU, float32), all replicas on the
    same latents drawn with ``seed``."""
    replicas = getattr(pl_module, "population", 1)
    chunks = [c.float().cpu().reshape(replicas, -1, *c.shape[1:]) for c in generate(pl_module, n, 4096, seed, ema)]
    return list(torch.cat(chunks, dim=1).unbind(0))


def _datamodule(trainer: L.Trainer) -> Any:
    dm = getattr(trainer, "datamodule", None)
    if dm is None:
        raise GanbenchError("metric callbacks need the data module: pass datamodule= to Trainer.fit")
    return dm


def run_dir(trainer: L.Trainer) -> Path:
    """Directory of the current run (``trainer.default_root_dir``, where samples and checkpoints go)."""
    return Path(trainer.default_root_dir)


class ImageMetrics(L.Callback):
    """FD/FID, IS, KID (each with its spread over subsets), precision/recall, density/coverage and SWD
    of the generator (EMA weights when present).

    Runs at G iteration 0 of a fresh fit (G at initialization), every ``every_n_steps`` G iterations
    (``trainer.global_step``) and at the last, or at the end of each
    validation epoch when ``every_n_steps`` is None. ``n_fake`` samples are split across DDP ranks;
    reference statistics of ``n_real`` real images (default ``n_fake``) from ``split`` are cached on
    disk and injected on global rank 0. After ``setup``, ``protocol`` holds everything that
    determines the numbers (for ``summary.json``).
    """

    def __init__(
        self,
        every_n_steps: int | None = 1000,
        n_fake: int = 10000,
        features: str = "fmnist",
        metrics: list[str] | None = None,
        n_real: int | None = None,
        split: str = "train",
        n_projections: int = 128,
        swd_samples: int = 4096,
        batch_size: int = 250,
        feature_weights: str | None = None,
        ema: bool = True,
        seed: int = 0,
    ) -> None:
        if features not in FEATURE_NETS:
            raise GanbenchError(f"unknown features '{features}'; valid choices: {', '.join(FEATURE_NETS)}")
        metrics = list(IMAGE_METRICS if metrics is None else metrics)
        check_metrics(metrics)
        check_sample_counts(metrics, n_fake, n_real or n_fake, "ImageMetrics.n_fake (run.image_metrics_n)",
                            "ImageMetrics.n_real")
        self.every_n_steps = every_n_steps
        self.n_fake, self.n_real = n_fake, n_real or n_fake
        self.features, self.metrics, self.split = features, metrics, split
        self.n_projections, self.swd_samples, self.batch_size = n_projections, swd_samples, batch_size
        #: points per side of the SWD (what metric_protocol records as swd_samples)
        self.swd_points = min(n_fake, n_real or n_fake, swd_samples)
        self.feature_weights, self.ema, self.seed = feature_weights, ema, seed
        self.keys = metric_keys(features, n_fake, metrics, n_projections, self.swd_points, self.n_real)
        self.protocol: dict[str, Any] = {}
        self.net: FeatureNet | None = None
        self.ref: ReferenceStats | None = None
        self.suites: list[StreamingImageMetrics] = []
        self.real_pixels: Tensor | None = None
        self._interval = _Interval(every_n_steps)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.suites:
            return
        dm = _datamodule(trainer)
        if getattr(dm, "is_toy", False):
            raise GanbenchError("ImageMetrics needs an image data set; use ToyMetrics for 2-D toys")
        self.net = load_feature_net(self.features, self.feature_weights)
        self.keys = metric_keys(self.net.label, self.n_fake, self.metrics, self.n_projections, self.swd_points,
                                self.n_real)
        # rank 0 fills the cache first; the others then read it
        if trainer.is_global_zero:
            self.ref = reference_statistics(dm, self.net, self.n_real, self.split, self.seed)
        trainer.strategy.barrier("ganbench-reference-stats")
        if not trainer.is_global_zero:
            self.ref = reference_statistics(dm, self.net, self.n_real, self.split, self.seed)
        if "swd" in self.metrics:
            self.real_pixels = dm.real_samples(min(self.swd_samples, self.n_real), split=self.split, seed=self.seed + 1)
        num_logits = 1008 if self.features == "inception" else int(self.net.extractor.net.config["num_classes"])
        # one set of metric states per replica of a population (each replica is a fit of its own)
        self.suites = [StreamingImageMetrics(self.net.num_features, num_logits, self.n_fake, self.ref.n, self.metrics)
                       for _ in range(getattr(pl_module, "population", 1))]
        self.protocol = {
            "implementation": "torchmetrics",
            "features": self.net.label,
            **self.net.protocol,
            "dataset": dm.dataset,
            "split": self.split,
            "resolution": int(dm.resolution),
            "n_real": self.ref.n,
            "n_fake": self.n_fake,
            "metrics": self.metrics,
            "keys": {k: f"val/{v}" for k, v in self.keys.items()},
            "ema": self.ema,
            "seed": self.seed,
            "quantization": "uint8",
            **metric_protocol(self.metrics, self.n_fake, self.ref.n, self.n_projections, self.swd_samples),
            "reference_stats_protocol": self.ref.protocol,
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps and trainer.global_step == 0:  # G at initialization: the baseline of every curve
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._interval.fires(trainer):
            self.evaluate(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps is None and not trainer.sanity_checking:
            self.evaluate(trainer, pl_module)

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Generate, extract features, compute and log; returns ``{key: value}`` with ``val/`` keys (a
        population's replicas each get their own metrics, keys ``…/r<k>``, from the same latents)."""
        assert self.suites and self.net is not None and self.ref is not None
        world, rank = trainer.world_size, trainer.global_rank
        n_local = self.n_fake // world + (1 if rank < self.n_fake % world else 0)
        offset = rank * (self.n_fake // world) + min(rank, self.n_fake % world)
        device = pl_module.device
        replicas = len(self.suites)
        self.net.to(device)
        for suite in self.suites:
            suite.to(device)
            suite.reset()
            suite.set_reference(self.ref, include=trainer.is_global_zero)
        keep_pixels: list[list[Tensor]] = [[] for _ in range(replicas)]
        keep_feats: list[list[Tensor]] = [[] for _ in range(replicas)]
        done = 0  # samples per replica so far
        was_training = pl_module.training
        pl_module.eval()
        named = ", ".join(v for k, v in self.keys.items() if not k.endswith("_std"))  # spreads go with their value
        what = f"step {trainer.global_step}: {named}: samples" + (f" of {replicas} replicas" if replicas > 1 else "")
        try:
            shown = trainer.is_global_zero and trainer.progress_bar_callback is not None
            with progress(what, n_local, enabled=shown) as bar:
                for images in generate(pl_module, n_local, self.batch_size, self.seed + rank, self.ema, offset):
                    # every replica's rows (replica by replica), through the feature net batch_size at a time
                    outs = [self.net.extract(chunk) for chunk in images.split(self.batch_size)]
                    out = {key: torch.cat([o[key] for o in outs]) for key in ("features", "logits")}
                    pixels = images.reshape(replicas, -1, *images.shape[1:])
                    feats = out["features"].reshape(replicas, -1, out["features"].shape[-1])
                    logits = out["logits"].reshape(replicas, -1, out["logits"].shape[-1])
                    for k, suite in enumerate(self.suites):
                        suite.update(feats[k], logits[k], start=offset + done)  # global sample number
                        if "swd" in self.metrics and done < self.swd_samples:
                            keep_pixels[k].append(pixels[k].float().cpu())
                            keep_feats[k].append(feats[k].cpu())
                    done += pixels.shape[1]
                    bar.update(pixels.shape[1])
        finally:
            pl_module.train(was_training)
        logged: dict[str, float] = {}
        for k, suite in enumerate(self.suites):
            values = suite.compute(seed=self.seed)  # KID's subsets, IS's splits: the same draws for every fit
            if "swd" in self.metrics:
                fp, ff = torch.cat(keep_pixels[k])[: self.swd_samples], torch.cat(keep_feats[k])[: self.swd_samples]
                values.update(swd_metrics(fp, self.real_pixels, ff, self.ref.features[: self.swd_samples],
                                          self.n_projections, self.seed))
            tag = replica_tag(pl_module, k)
            logged.update({f"val/{self.keys[key]}{tag}": v for key, v in values.items()})
        # swd is computed on each rank's own samples: averaged; the rest are already global
        return log_evaluation(trainer, logged, reduce=tuple(k for k in logged if k.startswith("val/swd")))


class ToyMetrics(L.Callback):
    """Mode coverage, exact W1 and a scatter picture for 2-D Gaussian-mixture toys.

    Logs ``val/modes_covered_<n>``, ``val/high_quality_frac_<n>``, ``val/kl_modes_<n>`` (``n_fake``
    samples, e.g. ``_2k``) and ``val/w1_exact_<m>`` (``m = min(n_fake, w1_samples)`` points, e.g. ``_1k``)
    at G iteration 0 of a fresh fit (G at initialization), every ``every_n_steps`` G iterations and at
    the last; rank 0 saves ``<run>/samples/toy_step_XXXXXXX.png``
    and hands it to each logger that has ``log_image``. W1 uses ``min(n_fake, w1_samples)`` points
    of each side (the exact solver is cubic).
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        n_fake: int = 2000,
        threshold: float = 3.0,
        w1_samples: int = 1000,
        save_images: bool = True,
        ema: bool = True,
        seed: int = 0,
    ) -> None:
        self.every_n_steps, self.n_fake, self.threshold = every_n_steps, n_fake, threshold
        self.w1_samples, self.save_images, self.ema, self.seed = w1_samples, save_images, ema, seed
        self._interval = _Interval(every_n_steps)
        self.protocol: dict[str, Any] = {
            "n_fake": n_fake,
            "threshold_std": threshold,
            "w1_samples": w1_samples,
            "ema": ema,
            "seed": seed,
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps and trainer.global_step == 0:  # G at initialization: the baseline of every curve
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._interval.fires(trainer):
            self.evaluate(trainer, pl_module)

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The metrics of every replica (keys ``…/r<k>`` for a population, plain for one fit)."""
        dm = _datamodule(trainer)
        mixture = dm.mixture
        n_w1 = min(self.n_fake, self.w1_samples)
        real = dm.real_samples(n_w1, split="test", seed=self.seed).float().cpu()
        values: dict[str, float] = {}
        images = {}
        fakes = replica_samples(pl_module, self.n_fake, self.seed, self.ema)
        for k, fake in enumerate(fakes):
            mm = mode_metrics(fake, mixture.centers, mixture.std, self.threshold)
            tag = replica_tag(pl_module, k)
            n, m = count_tag(self.n_fake), count_tag(n_w1)  # every key names its sample count
            values.update({
                f"val/modes_covered_{n}{tag}": mm["modes_covered"],
                f"val/high_quality_frac_{n}{tag}": mm["high_quality_frac"],
                f"val/kl_modes_{n}{tag}": mm["kl_to_uniform"],
                f"val/w1_exact_{m}{tag}": w1_exact(fake[:n_w1], real),
            })
            if self.save_images and trainer.is_global_zero:
                step = trainer.global_step
                sub = "samples" if not tag else f"samples/{tag[1:]}"
                images[f"val/toy_scatter{tag}"] = toy_scatter(
                    real,
                    fake,
                    run_dir(trainer) / sub / f"toy_step_{step:07d}.png",
                    title=f"step {step}{tag.replace('/', ' ')}: {int(mm['modes_covered'])}/{mixture.num_modes} modes",
                    centers=mixture.centers,
                )
        log_evaluation(trainer, values, images)
        return values


@torch.no_grad()
def spectral_sigmas(module: torch.nn.Module) -> dict[str, float]:
    """Power-iteration estimate sigma = u^T W v of the unnormalised weight of each spectrally
    normalised layer (Miyato et al. 2018, eq. 6 / Algorithm 1), keyed by the layer's name.

    Covers ``torch.nn.utils.parametrizations.spectral_norm`` and the older hook-based version.
    """
    out: dict[str, float] = {}
    for name, m in module.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            for p in m.parametrizations.weight:
                if hasattr(p, "_u") and hasattr(p, "_v"):
                    w = p._reshape_weight_to_matrix(m.parametrizations.weight.original)
                    out[name] = float(torch.dot(p._u, torch.mv(w, p._v)))
        elif hasattr(m, "weight_orig") and hasattr(m, "weight_u") and hasattr(m, "weight_v"):
            hook = next((h for h in m._forward_pre_hooks.values() if type(h).__name__ == "SpectralNorm"), None)
            if hook is not None:
                w = hook.reshape_weight_to_matrix(m.weight_orig)
                out[name] = float(torch.dot(m.weight_u, torch.mv(w, m.weight_v)))
    return out


def grad_norm(optimizer: Any) -> float:
    """Total L2 norm of the gradients held by an optimizer's parameters (0 when there are none)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads))


def replica_grad_norms(optimizer: Any, replicas: int) -> list[float]:
    """The gradient norm of each replica's slice of a population's stacked parameters."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not params:
        return [0.0] * replicas
    sq = torch.stack([p.grad.detach().float().reshape(replicas, -1).pow(2).sum(1) for p in params]).sum(0)
    return sq.sqrt().tolist()


class Diagnostics(L.Callback):
    """Gradient norms of G and D, spectral-norm sigma per layer, and a collapse flag on toys.

    ``diag/grad_norm_g`` / ``diag/grad_norm_d``: total L2 norm of the gradients the last G update and
    the last D update of the G iteration applied (the optimizers are ``[g_opt, d_opt]``; gradients
    stay on the parameters until the next ``zero_grad``, and the G step runs with D's parameters
    frozen, so at the end of an iteration they are exactly what each optimizer used, after any
    clipping). Reading them there rather than in ``on_before_optimizer_step`` keeps the per-step
    hooks free, so the module can skip Lightning's hook dispatch (see ``GANModule.direct_step_blocker``),
    and works for the CUDA-graph step too. ``diag/sn_sigma/<net>.<layer>``: see ``spectral_sigmas``.
    ``diag/collapse``: on toys, 1 when fewer than half the modes are covered by ``n_collapse``
    samples (``mode_metrics`` at 3 std), else 0. All every ``every_n_steps`` G iterations.
    """

    def __init__(self, every_n_steps: int = 50, n_collapse: int = 1000) -> None:
        self.every_n_steps, self.n_collapse = every_n_steps, n_collapse
        self._interval = _Interval(every_n_steps)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self._interval.due(trainer.global_step):
            return
        replicas = getattr(pl_module, "population", 1)
        values: dict[str, float] = {}
        for which, optimizer in zip("gd", trainer.optimizers):
            if replicas == 1:
                values[f"diag/grad_norm_{which}"] = grad_norm(optimizer)
                continue
            for k, norm in enumerate(replica_grad_norms(optimizer, replicas)):
                values[f"diag/grad_norm_{which}/r{k}"] = norm
        if replicas == 1:  # (a population's stacked spectral norms have no per-layer module to read)
            for net in ("generator", "discriminator"):
                for layer, sigma in spectral_sigmas(getattr(pl_module, net)).items():
                    values[f"diag/sn_sigma/{net}.{layer}"] = sigma
        dm = getattr(trainer, "datamodule", None)
        if dm is not None and getattr(dm, "mixture", None) is not None:  # swissroll has no modes to cover
            for k, fake in enumerate(replica_samples(pl_module, self.n_collapse, 0, ema=False)):
                covered = mode_metrics(fake, dm.mixture.centers, dm.mixture.std)["modes_covered"]
                values[f"diag/collapse{replica_tag(pl_module, k)}"] = float(covered < dm.mixture.num_modes / 2)
        log_evaluation(trainer, values)

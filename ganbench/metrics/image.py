"""Image-metric suites over a feature network: FD/FID, IS, KID, improved precision/recall, density/
coverage, SWD.

Two implementations share feature extraction, reference statistics and key names:

* ``StreamingImageMetrics`` (used by the ``ImageMetrics`` callback during training) holds
  torchmetrics metrics that accumulate generated features batch by batch and synchronise across
  DDP ranks: ``FrechetInceptionDistance`` (fixed-size sums), ``KernelInceptionDistance``,
  ``InceptionScore`` and ``FeatureSets`` (below; feature lists), plus ``SubsetMoments`` for the
  spread of FD.
* ``fidelity_metrics`` (used by ``ganbench evaluate``) applies torch-fidelity's own metric
  functions to the full feature matrices.

Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
for Assessing Generative Models", eqs. 1-3, k = 3) are torch-fidelity's ``prc`` implementation
(``calculate_precision_recall_part``) in both. Density and coverage (Naeem et al. 2020, k = 5) are
computed beside them, from the same feature matrices (``ganbench.metrics.knn``): the
``pr`` entry of ``metrics=`` yields all four.

FD, KID and IS come with their sampling error, the standard deviation over subsets of the generated
samples: FD over ``FD_SUBSETS`` disjoint subsets (``ganbench.metrics.frechet``), KID over its
``KID_SUBSETS`` random subsets and IS over its ``IS_SPLITS`` splits, the spreads torch-fidelity and
torchmetrics already compute. All divide by the number of subsets (numpy's ``std``, torch-fidelity's
convention; torchmetrics' IS spread, which divides by one less, is rescaled).

Keys carry their protocol: with Inception features FD is ``fid_inception_<n>``, with any other
net it is ``fd_<net>_<n>``; a spread is ``<key>_std_<subsets>x<subset size>`` (``fd_fmnist_10k_std_5x2k``);
SWD keys carry the points per side and the number of projections (``swd_pixels_4k_128p``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch_fidelity.metric_fid import fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import calculate_precision_recall_part
from torchmetrics import Metric
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat

from ganbench import GanbenchError
from ganbench.metrics.frechet import (
    FD_SUBSETS,
    FeaturePassthrough,
    FrechetToReference,
    SubsetMoments,
    mean_and_covariance,
    set_real_statistics,
    spread,
    streaming_fd,
    subset_fds,
)
from ganbench.metrics.knn import DC_NEIGHBORHOOD, density_coverage
from ganbench.metrics.reference import ReferenceStats
from ganbench.metrics.wasserstein import sliced_wasserstein

IMAGE_METRICS = ("fd", "is", "kid", "pr", "swd")
"""Valid entries of ``metrics=``."""

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
IS_SPLITS = 10
PR_NEIGHBORHOOD = 3


def count_tag(n: int) -> str:
    """Sample count as it appears in a key: 10000 -> '10k', 2500 -> '2500'."""
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else str(n)


def fd_subsets(n_fake: int) -> int:
    """Subsets whose FDs give FD's spread: ``FD_SUBSETS``, or 0 (no spread) when a subset would hold
    fewer than the 2 samples a covariance needs."""
    return FD_SUBSETS if n_fake >= 2 * FD_SUBSETS else 0


def spread_layouts(n_fake: int, n_real: int) -> dict[str, tuple[int, int]]:
    """(subsets, samples per subset) behind each spread: FD's disjoint subsets (the smaller size when
    ``n_fake`` does not divide), KID's random subsets, IS's splits (torch-fidelity's sizes)."""
    out = {"kid": (KID_SUBSETS, min(KID_SUBSET_SIZE, n_fake, n_real)), "is": (IS_SPLITS, n_fake // IS_SPLITS)}
    if fd_subsets(n_fake):
        out["fd"] = (FD_SUBSETS, n_fake // FD_SUBSETS)
    return out


#: the fewest generated (and real) samples each metric is defined for, and why
MIN_SAMPLES: dict[str, tuple[int, str]] = {
    "fd": (2, "a covariance needs 2 samples"),
    "is": (IS_SPLITS, f"the Inception Score averages {IS_SPLITS} splits of at least one sample"),
    "kid": (2, "the unbiased MMD needs 2 samples per subset"),
    "pr": (PR_NEIGHBORHOOD + 1, f"k = {PR_NEIGHBORHOOD} nearest neighbours need {PR_NEIGHBORHOOD + 1} samples"),
    "swd": (2, "two point sets of at least 2 samples"),
}

#: the fewest real samples, where it differs from ``MIN_SAMPLES`` (IS reads none; density and coverage
#: measure balls around the real samples with their own k)
MIN_REAL_SAMPLES: dict[str, tuple[int, str]] = {
    **MIN_SAMPLES,
    "is": (0, "IS reads no real samples"),
    "pr": (DC_NEIGHBORHOOD + 1, f"density and coverage use the k = {DC_NEIGHBORHOOD} nearest real neighbours, "
                                f"so {DC_NEIGHBORHOOD + 1} real samples"),
}


def check_sample_counts(metrics: list[str] | tuple[str, ...], n_fake: int, n_real: int,
                        fake_key: str = "--n-fake", real_key: str = "--n-real") -> None:
    """One ``GanbenchError`` line when a metric cannot be computed from ``n_fake`` generated or
    ``n_real`` real samples (IS uses no real samples)."""
    for m in metrics:
        for key, n, (need, why) in ((fake_key, n_fake, MIN_SAMPLES[m]), (real_key, n_real, MIN_REAL_SAMPLES[m])):
            if n < need:
                raise GanbenchError(f"{key}={n} is too small for metric {m}: it needs >= {need} ({why})")


def metric_protocol(metrics: list[str] | tuple[str, ...], n_fake: int, n_real: int, n_projections: int,
                    swd_samples: int) -> dict[str, Any]:
    """The settings of the metrics that ran, as they ran (nothing for a metric that did not)."""
    out: dict[str, Any] = {}
    if "fd" in metrics and fd_subsets(n_fake):
        out.update(fd_subsets=FD_SUBSETS, fd_subset_size=n_fake // FD_SUBSETS)
    if "kid" in metrics:
        out.update(kid_subsets=KID_SUBSETS, kid_subset_size=min(KID_SUBSET_SIZE, n_fake, n_real))
    if "is" in metrics:
        out["is_splits"] = IS_SPLITS
    if "pr" in metrics:
        out.update(pr_neighborhood=PR_NEIGHBORHOOD, dc_neighborhood=DC_NEIGHBORHOOD)
    if "swd" in metrics:
        out.update(swd_projections=n_projections, swd_samples=min(n_fake, n_real, swd_samples))
    return out


def metric_keys(
    features: str, n_fake: int, metrics: list[str] | tuple[str, ...], n_projections: int = 128,
    swd_samples: int | None = None, n_real: int | None = None,
) -> dict[str, str]:
    """Map of internal metric name -> logged key (without the ``val/`` prefix). ``features`` is the
    net's label (``FeatureNet.label``): only ``inception`` (torch-fidelity's published weights) makes
    FD a FID; ``inception-unverified`` gives ``fd_inception-unverified_<n>``. The spreads ``fd_std``,
    ``kid_std``, ``is_std`` are ``<key>_std_<subsets>x<subset size>`` (``spread_layouts``; KID's
    subset size depends on ``n_real``, default ``n_fake``). SWD keys carry the points per side and the
    projections (``swd_pixels_4k_128p``; ``swd_samples`` defaults to ``n_fake``)."""
    check_metrics(metrics)
    tag = count_tag(n_fake)
    layouts = spread_layouts(n_fake, n_fake if n_real is None else n_real)
    keys: dict[str, str] = {}
    if "fd" in metrics:
        keys["fd"] = f"fid_inception_{tag}" if features == "inception" else f"fd_{features}_{tag}"
    if "is" in metrics:
        keys["is"] = f"is_{features}_{tag}"
    if "kid" in metrics:
        keys["kid"] = f"kid_{features}_{tag}"
    for name in ("fd", "kid", "is"):
        if name in keys and name in layouts:
            subsets, size = layouts[name]
            keys[f"{name}_std"] = f"{keys[name]}_std_{subsets}x{count_tag(size)}"
    if "pr" in metrics:
        keys["precision"] = f"precision_{features}_{tag}"
        keys["recall"] = f"recall_{features}_{tag}"
        keys["density"] = f"density_{features}_{tag}"
        keys["coverage"] = f"coverage_{features}_{tag}"
    if "swd" in metrics:
        m = count_tag(n_fake if swd_samples is None else swd_samples)
        keys["swd_pixels"] = f"swd_pixels_{m}_{n_projections}p"
        keys["swd_features"] = f"swd_{features}_{m}_{n_projections}p"
    return keys


def check_metrics(metrics: list[str] | tuple[str, ...]) -> None:
    bad = [m for m in metrics if m not in IMAGE_METRICS]
    if bad:
        raise GanbenchError(f"unknown metrics {bad}; valid choices: {', '.join(IMAGE_METRICS)}")


class FeatureSets(Metric):
    """Real and generated feature matrices (float32) for the k-NN metrics, synchronised across ranks.

    ``compute`` returns (real, fake), each concatenated over batches and ranks. Real features survive
    ``reset``.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, features: Tensor, real: bool) -> None:
        (self.real_features if real else self.fake_features).append(features.float())

    def compute(self) -> tuple[Tensor, Tensor]:
        return dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)

    def reset(self) -> None:
        real = list(self.real_features)
        super().reset()
        self.real_features = real


class PrecisionRecall(FeatureSets):
    """Improved precision/recall (Kynkäänniemi et al. 2019, k-NN balls with k = ``neighborhood``).

    ``compute`` returns (precision, recall) using torch-fidelity's ``calculate_precision_recall_part``.
    """

    def __init__(self, neighborhood: int = PR_NEIGHBORHOOD, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.neighborhood = neighborhood

    def compute(self) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        real, fake = super().compute()
        p, r = calculate_precision_recall_part(fake, real, neighborhood=self.neighborhood)
        return torch.tensor(p), torch.tensor(r)


class SplitInceptionScore(InceptionScore):
    """torchmetrics' Inception Score with the spread over splits taken with divisor n (numpy's and
    torch-fidelity's ``std``) instead of torch's default n - 1."""

    def compute(self) -> tuple[Tensor, Tensor]:
        mean, std = super().compute()
        n = len(dim_zero_cat(self.features))
        per_split = -(-n // self.splits)  # torch.chunk's split size; the last split may be smaller
        m = -(-n // per_split)  # the number of splits it makes
        return mean, std * math.sqrt((m - 1) / m)


class StreamingImageMetrics(nn.Module):
    """torchmetrics state for one evaluation: update with generated features, compute against a reference.

    ``update`` numbers the generated samples in the order they arrive, or from ``start`` when given
    (under DDP, the rank's offset in the global sample order), so FD's subsets are the same however the
    samples are batched or split across ranks.
    """

    def __init__(
        self,
        num_features: int,
        num_logits: int,
        n_fake: int,
        n_real: int,
        metrics: list[str] | tuple[str, ...] = IMAGE_METRICS,
    ) -> None:
        super().__init__()
        check_metrics(metrics)
        self.metrics = tuple(metrics)
        self.kid_subset_size = min(KID_SUBSET_SIZE, n_fake, n_real)
        self.fd = streaming_fd(num_features) if "fd" in metrics else None
        self.kid = (
            KernelInceptionDistance(
                feature=FeaturePassthrough(num_features),
                subsets=KID_SUBSETS,
                subset_size=self.kid_subset_size,
                reset_real_features=False,
            )
            if "kid" in metrics
            else None
        )
        self.isc = SplitInceptionScore(feature=FeaturePassthrough(num_logits), splits=IS_SPLITS) \
            if "is" in metrics else None
        self.fd_subsets = SubsetMoments(num_features) if "fd" in metrics and fd_subsets(n_fake) else None
        self.knn = FeatureSets() if "pr" in metrics else None
        self.to_reference: FrechetToReference | None = None
        self._reference_of: tuple[ReferenceStats, torch.device] | None = None
        self._next = 0

    def set_reference(self, ref: ReferenceStats, include: bool = True) -> None:
        """Load reference statistics; under DDP pass ``include`` True on global rank 0 only."""
        empty = ref.features[:0]
        if self.fd_subsets is not None:  # every rank compares FD's subsets with the reference, on its device
            device = self.fd_subsets.device
            known = self._reference_of
            if known is None or known[0] is not ref or known[1] != device:  # its square root once per reference
                self.to_reference = FrechetToReference(ref.mu.to(device), ref.sigma.to(device))
                self._reference_of = (ref, device)
        if self.fd is not None:
            set_real_statistics(self.fd, ref.mu, ref.sigma, ref.n, include)
        if self.kid is not None:
            self.kid.real_features = [(ref.features if include else empty).to(self.kid.device)]
        if self.knn is not None:
            self.knn.real_features = [(ref.features if include else empty).to(self.knn.device)]

    def update(self, features: Tensor, logits: Tensor, start: int | None = None) -> None:
        start = self._next if start is None else start
        self._next = start + len(features)
        if self.fd is not None:
            self.fd.update(features, real=False)
        if self.fd_subsets is not None:
            self.fd_subsets.update(features, torch.arange(start, self._next, device=features.device))
        if self.kid is not None:
            self.kid.update(features, real=False)
        if self.isc is not None:
            self.isc.update(logits)
        if self.knn is not None:
            self.knn.update(features, real=False)

    def compute(self, seed: int | None = None) -> dict[str, float]:
        """Values by internal name (``fd``, ``fd_std``, ``is``, ``is_std``, ``kid``, ``kid_std``,
        ``precision``, ``recall``, ``density``, ``coverage``).

        torchmetrics draws KID's subsets and IS's split order from the global generator. With ``seed``
        they are drawn from a generator seeded with it and the global random state is left as it was,
        so the numbers depend on the samples alone (every replica of a population, and the fit with its
        seed, get the same draws) and measuring does not move training's random stream."""
        if seed is not None:
            device = next((m.device for m in (self.kid, self.isc) if m is not None), torch.device("cpu"))
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                return self.compute()
        out: dict[str, float] = {}
        if self.fd is not None:
            out["fd"] = float(self.fd.compute())
        if self.fd_subsets is not None:
            assert self.to_reference is not None, "set_reference first"
            out["fd_std"] = spread([self.to_reference(m, s) for m, s in zip(*self.fd_subsets.compute())])
        if self.kid is not None:
            out["kid"], out["kid_std"] = (float(v) for v in self.kid.compute())
        if self.isc is not None:
            out["is"], out["is_std"] = (float(v) for v in self.isc.compute())
        if self.knn is not None:
            real, fake = self.knn.compute()
            p, r = calculate_precision_recall_part(fake, real, neighborhood=PR_NEIGHBORHOOD)
            out["precision"], out["recall"] = float(p), float(r)
            out["density"], out["coverage"] = density_coverage(real, fake, DC_NEIGHBORHOOD)
        return out

    def reset(self) -> None:
        self._next = 0
        for m in (self.fd, self.fd_subsets, self.kid, self.isc, self.knn):
            if m is not None:
                m.reset()


def fidelity_metrics(
    fake_features: Tensor,
    fake_logits: Tensor,
    ref: ReferenceStats,
    metrics: list[str] | tuple[str, ...] = IMAGE_METRICS,
    seed: int = 2020,
    is_splits: int = IS_SPLITS,
) -> dict[str, float]:
    """Metrics from full feature matrices with torch-fidelity's implementations (``ganbench evaluate``),
    by internal name as ``StreamingImageMetrics.compute`` returns them. FD's spread is ganbench's
    (``subset_fds``: row g in subset g mod ``FD_SUBSETS``, as the streaming suite numbers samples);
    density and coverage are ganbench's (``density_coverage``)."""
    check_metrics(metrics)
    out: dict[str, float] = {}
    # float64: KID is a small difference of large kernel sums (float32 loses ~1e-4 of it) and precision/
    # recall and density/coverage compare distances with radii, so they get the features in double precision
    real = ref.features.double()
    fake = fake_features.double().cpu()
    if "fd" in metrics:
        mu, sigma = mean_and_covariance(fake)
        out["fd"] = fid_statistics_to_metric(
            {"mu": mu.numpy(), "sigma": sigma.numpy()},
            {"mu": ref.mu.double().numpy(), "sigma": ref.sigma.double().numpy()},
            verbose=False,
        )["frechet_inception_distance"]
        if fd_subsets(len(fake)):
            out["fd_std"] = spread(subset_fds(fake, ref.mu, ref.sigma, FD_SUBSETS))
    if "is" in metrics:
        isc = isc_features_to_metric(fake_logits.cpu(), splits=is_splits, shuffle=True, rng_seed=seed)
        out["is"], out["is_std"] = isc["inception_score_mean"], isc["inception_score_std"]
    if "kid" in metrics:
        kid = kid_features_to_metric(
            fake,
            real,
            kid_subsets=KID_SUBSETS,
            kid_subset_size=min(KID_SUBSET_SIZE, len(fake), len(real)),
            rng_seed=seed,
            verbose=False,
        )
        out["kid"], out["kid_std"] = kid["kernel_inception_distance_mean"], kid["kernel_inception_distance_std"]
    if "pr" in metrics:
        p, r = calculate_precision_recall_part(fake, real, neighborhood=PR_NEIGHBORHOOD)
        out["precision"], out["recall"] = float(p), float(r)
        out["density"], out["coverage"] = density_coverage(real, fake, DC_NEIGHBORHOOD)
    return out


def swd_metrics(
    fake_pixels: Tensor,
    real_pixels: Tensor,
    fake_features: Tensor,
    real_features: Tensor,
    n_projections: int = 128,
    seed: int = 0,
) -> dict[str, float]:
    """Sliced W2 on flattened pixels and on features, with a seeded set of projections."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "swd_pixels": sliced_wasserstein(fake_pixels.cpu(), real_pixels.cpu(), n_projections, gen),
        "swd_features": sliced_wasserstein(fake_features.cpu(), real_features.cpu(), n_projections, gen),
    }

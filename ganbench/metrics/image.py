"""Image-metric suites over a feature network: FD/FID, IS, KID, improved precision/recall, SWD.

Two implementations share feature extraction, reference statistics and key names:

* ``StreamingImageMetrics`` (used by the ``ImageMetrics`` callback during training) holds
  torchmetrics metrics that accumulate generated features batch by batch and synchronise across
  DDP ranks: ``FrechetInceptionDistance`` (fixed-size sums), ``KernelInceptionDistance``,
  ``InceptionScore`` and ``PrecisionRecall`` (below; feature lists).
* ``fidelity_metrics`` (used by ``ganbench evaluate``) applies torch-fidelity's own metric
  functions to the full feature matrices.

Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
for Assessing Generative Models", eqs. 1-3, k = 3) are torch-fidelity's ``prc`` implementation
(``calculate_precision_recall_part``) in both.

Keys carry their protocol: with Inception features FD is ``fid_inception_<n>``, with any other
net it is ``fd_<net>_<n>``; SWD keys carry the points per side and the number of projections (``swd_pixels_4k_128p``).
"""

from __future__ import annotations

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
    FeaturePassthrough,
    mean_and_covariance,
    set_real_statistics,
    streaming_fd,
)
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


#: the fewest generated (and real) samples each metric is defined for, and why
MIN_SAMPLES: dict[str, tuple[int, str]] = {
    "fd": (2, "a covariance needs 2 samples"),
    "is": (IS_SPLITS, f"the Inception Score averages {IS_SPLITS} splits of at least one sample"),
    "kid": (2, "the unbiased MMD needs 2 samples per subset"),
    "pr": (PR_NEIGHBORHOOD + 1, f"k = {PR_NEIGHBORHOOD} nearest neighbours need {PR_NEIGHBORHOOD + 1} samples"),
    "swd": (2, "two point sets of at least 2 samples"),
}


def check_sample_counts(metrics: list[str] | tuple[str, ...], n_fake: int, n_real: int,
                        fake_key: str = "--n-fake", real_key: str = "--n-real") -> None:
    """One ``GanbenchError`` line when a metric cannot be computed from ``n_fake`` generated or
    ``n_real`` real samples (IS uses no real samples)."""
    for m in metrics:
        need, why = MIN_SAMPLES[m]
        for key, n in ((fake_key, n_fake), (real_key, n_real if m != "is" else need)):
            if n < need:
                raise GanbenchError(f"{key}={n} is too small for metric {m}: it needs >= {need} ({why})")


def metric_protocol(metrics: list[str] | tuple[str, ...], n_fake: int, n_real: int, n_projections: int,
                    swd_samples: int) -> dict[str, Any]:
    """The settings of the metrics that ran, as they ran (nothing for a metric that did not)."""
    out: dict[str, Any] = {}
    if "kid" in metrics:
        out.update(kid_subsets=KID_SUBSETS, kid_subset_size=min(KID_SUBSET_SIZE, n_fake, n_real))
    if "is" in metrics:
        out["is_splits"] = IS_SPLITS
    if "pr" in metrics:
        out["pr_neighborhood"] = PR_NEIGHBORHOOD
    if "swd" in metrics:
        out.update(swd_projections=n_projections, swd_samples=min(n_fake, n_real, swd_samples))
    return out


def metric_keys(
    features: str, n_fake: int, metrics: list[str] | tuple[str, ...], n_projections: int = 128,
    swd_samples: int | None = None,
) -> dict[str, str]:
    """Map of internal metric name -> logged key (without the ``val/`` prefix). ``features`` is the
    net's label (``FeatureNet.label``): only ``inception`` (torch-fidelity's published weights) makes
    FD a FID; ``inception-unverified`` gives ``fd_inception-unverified_<n>``. SWD keys carry the points
    per side and the projections (``swd_pixels_4k_128p``; ``swd_samples`` defaults to ``n_fake``)."""
    check_metrics(metrics)
    tag = count_tag(n_fake)
    keys: dict[str, str] = {}
    if "fd" in metrics:
        keys["fd"] = f"fid_inception_{tag}" if features == "inception" else f"fd_{features}_{tag}"
    if "is" in metrics:
        keys["is"] = f"is_{features}_{tag}"
    if "kid" in metrics:
        keys["kid"] = f"kid_{features}_{tag}"
    if "pr" in metrics:
        keys["precision"] = f"precision_{features}_{tag}"
        keys["recall"] = f"recall_{features}_{tag}"
    if "swd" in metrics:
        m = count_tag(n_fake if swd_samples is None else swd_samples)
        keys["swd_pixels"] = f"swd_pixels_{m}_{n_projections}p"
        keys["swd_features"] = f"swd_{features}_{m}_{n_projections}p"
    return keys


def check_metrics(metrics: list[str] | tuple[str, ...]) -> None:
    bad = [m for m in metrics if m not in IMAGE_METRICS]
    if bad:
        raise GanbenchError(f"unknown metrics {bad}; valid choices: {', '.join(IMAGE_METRICS)}")


class PrecisionRecall(Metric):
    """Improved precision/recall (Kynkäänniemi et al. 2019, k-NN balls with k = ``neighborhood``).

    Feature lists synchronised across ranks; ``compute`` returns (precision, recall) using
    torch-fidelity's ``calculate_precision_recall_part``. Real features survive ``reset``.
    """

    full_state_update = False

    def __init__(self, neighborhood: int = PR_NEIGHBORHOOD, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.neighborhood = neighborhood
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, features: Tensor, real: bool) -> None:
        (self.real_features if real else self.fake_features).append(features.float())

    def compute(self) -> tuple[Tensor, Tensor]:
        real = dim_zero_cat(self.real_features)
        fake = dim_zero_cat(self.fake_features)
        p, r = calculate_precision_recall_part(fake, real, neighborhood=self.neighborhood)
        return torch.tensor(p), torch.tensor(r)

    def reset(self) -> None:
        real = list(self.real_features)
        super().reset()
        self.real_features = real


class StreamingImageMetrics(nn.Module):
    """torchmetrics state for one evaluation: update with generated features, compute against a reference."""

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
        self.isc = InceptionScore(feature=FeaturePassthrough(num_logits), splits=IS_SPLITS) if "is" in metrics else None
        self.pr = PrecisionRecall() if "pr" in metrics else None

    def set_reference(self, ref: ReferenceStats, include: bool = True) -> None:
        """Load reference statistics; under DDP pass ``include`` True on global rank 0 only."""
        empty = ref.features[:0]
        if self.fd is not None:
            set_real_statistics(self.fd, ref.mu, ref.sigma, ref.n, include)
        if self.kid is not None:
            self.kid.real_features = [(ref.features if include else empty).to(self.kid.device)]
        if self.pr is not None:
            self.pr.real_features = [(ref.features if include else empty).to(self.pr.device)]

    def update(self, features: Tensor, logits: Tensor) -> None:
        if self.fd is not None:
            self.fd.update(features, real=False)
        if self.kid is not None:
            self.kid.update(features, real=False)
        if self.isc is not None:
            self.isc.update(logits)
        if self.pr is not None:
            self.pr.update(features, real=False)

    def compute(self) -> dict[str, float]:
        """Values by internal name (``fd``, ``is``, ``kid``, ``precision``, ``recall``)."""
        out: dict[str, float] = {}
        if self.fd is not None:
            out["fd"] = float(self.fd.compute())
        if self.kid is not None:
            out["kid"] = float(self.kid.compute()[0])
        if self.isc is not None:
            out["is"] = float(self.isc.compute()[0])
        if self.pr is not None:
            p, r = self.pr.compute()
            out["precision"], out["recall"] = float(p), float(r)
        return out

    def reset(self) -> None:
        for m in (self.fd, self.kid, self.isc, self.pr):
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
    """Metrics from full feature matrices with torch-fidelity's implementations (``ganbench evaluate``)."""
    check_metrics(metrics)
    out: dict[str, float] = {}
    # float64: KID is a small difference of large kernel sums (float32 loses ~1e-4 of it) and precision/
    # recall compare distances with radii, so both get the features in double precision
    real = ref.features.double()
    fake = fake_features.double().cpu()
    if "fd" in metrics:
        mu, sigma = mean_and_covariance(fake)
        out["fd"] = fid_statistics_to_metric(
            {"mu": mu.numpy(), "sigma": sigma.numpy()},
            {"mu": ref.mu.double().numpy(), "sigma": ref.sigma.double().numpy()},
            verbose=False,
        )["frechet_inception_distance"]
    if "is" in metrics:
        out["is"] = isc_features_to_metric(fake_logits.cpu(), splits=is_splits, shuffle=True, rng_seed=seed)[
            "inception_score_mean"
        ]
    if "kid" in metrics:
        out["kid"] = kid_features_to_metric(
            fake,
            real,
            kid_subsets=KID_SUBSETS,
            kid_subset_size=min(KID_SUBSET_SIZE, len(fake), len(real)),
            rng_seed=seed,
            verbose=False,
        )["kernel_inception_distance_mean"]
    if "pr" in metrics:
        p, r = calculate_precision_recall_part(fake, real, neighborhood=PR_NEIGHBORHOOD)
        out["precision"], out["recall"] = float(p), float(r)
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

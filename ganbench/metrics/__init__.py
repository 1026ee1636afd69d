"""Metrics: Fréchet distance, IS/KID/precision-recall/density-coverage, Wasserstein estimates, toy mode
coverage.

See docs/metrics.md for protocols and key names.
"""

from ganbench.metrics.features import (
    FEATURE_NETS,
    DomainCNN,
    FeatureNet,
    cache_root,
    load_feature_net,
    to_uint8_rgb,
)
from ganbench.metrics.frechet import (
    FD_SUBSETS,
    FeaturePassthrough,
    FrechetToReference,
    SubsetMoments,
    frechet_distance,
    mean_and_covariance,
    set_real_statistics,
    streaming_fd,
    subset_fds,
)
from ganbench.metrics.image import (
    IMAGE_METRICS,
    FeatureSets,
    PrecisionRecall,
    StreamingImageMetrics,
    fidelity_metrics,
    metric_keys,
    swd_metrics,
)
from ganbench.metrics.knn import DC_NEIGHBORHOOD, density_coverage
from ganbench.metrics.reference import STATS_PROTOCOL_VERSION, ReferenceStats, reference_statistics
from ganbench.metrics.toy import mode_metrics, toy_scatter
from ganbench.metrics.wasserstein import sliced_wasserstein, w1_exact

__all__ = [
    "DC_NEIGHBORHOOD",
    "FD_SUBSETS",
    "FEATURE_NETS",
    "IMAGE_METRICS",
    "STATS_PROTOCOL_VERSION",
    "DomainCNN",
    "FeatureNet",
    "FeaturePassthrough",
    "FeatureSets",
    "FrechetToReference",
    "PrecisionRecall",
    "ReferenceStats",
    "StreamingImageMetrics",
    "SubsetMoments",
    "cache_root",
    "density_coverage",
    "fidelity_metrics",
    "frechet_distance",
    "load_feature_net",
    "mean_and_covariance",
    "metric_keys",
    "mode_metrics",
    "reference_statistics",
    "set_real_statistics",
    "sliced_wasserstein",
    "streaming_fd",
    "subset_fds",
    "swd_metrics",
    "to_uint8_rgb",
    "toy_scatter",
    "w1_exact",
]

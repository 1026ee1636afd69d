"""Reference (real-data) feature statistics, computed once per protocol and cached on disk.

A cache file lives under ``<cache>/stats/`` (``$GANBENCH_CACHE`` or ``~/.cache/ganbench``) and
stores its full protocol next to the numbers. It is reused only when the stored protocol equals the
requested one key for key, so a change of data set, split, resolution, sample count, seed, feature
network or its weights' SHA-256, or of ``STATS_PROTOCOL_VERSION`` recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ganbench.metrics.features import FeatureNet, cache_root
from ganbench.metrics.frechet import mean_and_covariance

STATS_PROTOCOL_VERSION = 1
"""Bump when the way reference features are produced changes (quantisation, resizing, layers)."""


@dataclass
class ReferenceStats:
    """Mean/covariance (float64) and the feature matrix (float32, (n, d)) of n real images."""

    mu: Tensor
    sigma: Tensor
    features: Tensor
    protocol: dict[str, Any]

    @property
    def n(self) -> int:
        return int(self.features.shape[0])


def reference_protocol(
    dataset: str, split: str, resolution: int, n: int, feature_net: FeatureNet, seed: int = 0
) -> dict[str, Any]:
    """Everything that determines the reference numbers; stored in, and compared against, the cache."""
    return {
        "stats_protocol_version": STATS_PROTOCOL_VERSION,
        "dataset": dataset,
        "split": split,
        "resolution": int(resolution),
        "n": int(n),
        "seed": int(seed),
        "quantization": "uint8",
        **feature_net.protocol,
    }


def cache_path(protocol: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """``<dir>/<dataset>-<split>-<net>-<sha12>-r<res>-n<n>-<protocol sha256[:12]>.pt``."""
    key = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:12]
    name = (
        f"{protocol['dataset']}-{protocol['split']}-{protocol['feature_net']}-"
        f"{protocol['feature_sha256'][:12]}-r{protocol['resolution']}-n{protocol['n']}-{key}.pt"
    )
    return (Path(cache_dir) if cache_dir else cache_root() / "stats") / name


@torch.no_grad()
def extract_features(
    feature_net: FeatureNet, images: Tensor, batch_size: int = 500, progress: str | None = None
) -> dict[str, Tensor]:
    """Run ``feature_net`` over images in [-1, 1] in batches; returns CPU float32 features and logits."""
    from ganbench.progress import progress as bar_for

    feats, logits = [], []
    with bar_for(progress or "", len(images), enabled=progress is not None) as bar:
        for i in range(0, len(images), batch_size):
            out = feature_net.extract(images[i : i + batch_size])
            feats.append(out["features"].cpu())
            logits.append(out["logits"].cpu())
            bar.update(len(images[i : i + batch_size]))
    return {"features": torch.cat(feats), "logits": torch.cat(logits)}


def reference_statistics(
    datamodule: Any,
    feature_net: FeatureNet,
    n: int,
    split: str = "train",
    seed: int = 0,
    cache_dir: str | Path | None = None,
    batch_size: int = 500,
    progress: bool = False,
) -> ReferenceStats:
    """Reference statistics of ``n`` real images of ``datamodule`` (cached; see the module docstring).

    ``datamodule`` needs ``.dataset``, ``.resolution`` and ``.real_samples(n, split=, seed=)``
    (a ``GANDataModule``).
    """
    protocol = reference_protocol(datamodule.dataset, split, datamodule.resolution, n, feature_net, seed)
    path = cache_path(protocol, cache_dir)
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            blob = None
        if blob is not None and blob.get("protocol") == protocol:
            return ReferenceStats(blob["mu"], blob["sigma"], blob["features"], protocol)
    images = datamodule.real_samples(n, split=split, seed=seed)
    if len(images) != n:
        protocol["n"] = len(images)
        path = cache_path(protocol, cache_dir)
    feats = extract_features(
        feature_net,
        images,
        batch_size,
        progress=f"features of {n} real images ({protocol['dataset']}/{split})" if progress else None,
    )
    mu, sigma = mean_and_covariance(feats["features"])
    stats = ReferenceStats(mu, sigma, feats["features"], protocol)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"protocol": protocol, "mu": mu, "sigma": sigma, "features": feats["features"]}, tmp)
    os.replace(tmp, path)
    return stats

"""The reference-statistics cache: same protocol -> hit; any change of protocol -> recomputed."""

import pytest
import torch

import ganbench.metrics.reference as reference
from ganbench.metrics import load_feature_net, mean_and_covariance, reference_statistics
from ganbench.metrics.features import DomainCNN, save_domain_net


class CountingData:
    """The part of a GANDataModule that reference statistics use, counting real_samples calls."""

    def __init__(self, dataset: str = "digits", resolution: int = 8) -> None:
        self.dataset, self.resolution, self.calls = dataset, resolution, 0

    def real_samples(self, n: int, split: str = "train", seed: int = 0) -> torch.Tensor:
        self.calls += 1
        g = torch.Generator().manual_seed(seed * 7 + (split == "test"))
        return torch.rand(n, 1, self.resolution, self.resolution, generator=g) * 2 - 1


@pytest.fixture
def net(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_domain_net(DomainCNN(1, 8, 10), "digits", accuracy=0.0)
    return load_feature_net("digits")


def test_same_protocol_hits_the_cache(net, tmp_path):
    dm = CountingData()
    first = reference_statistics(dm, net, 64)
    second = reference_statistics(dm, net, 64)
    assert dm.calls == 1
    assert torch.equal(first.features, second.features) and torch.equal(first.sigma, second.sigma)
    mu, sigma = mean_and_covariance(first.features)
    assert torch.equal(first.mu, mu) and torch.equal(first.sigma, sigma)
    files = list((tmp_path / "cache" / "stats").glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith(f"digits-train-digits-{net.sha256[:12]}-r8-n64-")
    assert torch.load(files[0], weights_only=True)["protocol"] == first.protocol


@pytest.mark.parametrize(
    "change",
    ["n", "split", "seed", "resolution", "feature_hash", "protocol_version"],
)
def test_changed_protocol_recomputes(net, monkeypatch, change):
    dm = CountingData()
    base = reference_statistics(dm, net, 64)
    n, split, seed = 64, "train", 0
    if change == "n":
        n = 65
    elif change == "split":
        split = "test"
    elif change == "seed":
        seed = 1
    elif change == "resolution":
        dm.resolution = 16
    elif change == "feature_hash":
        net.sha256 = "0" * 64
    elif change == "protocol_version":
        monkeypatch.setattr(reference, "STATS_PROTOCOL_VERSION", reference.STATS_PROTOCOL_VERSION + 1)
    again = reference_statistics(dm, net, n, split, seed)
    assert dm.calls == 2
    assert again.protocol != base.protocol
    # and the new protocol is itself cached
    reference_statistics(dm, net, n, split, seed)
    assert dm.calls == 2


def test_cache_file_with_a_different_stored_protocol_is_not_reused(net):
    dm = CountingData()
    stats = reference_statistics(dm, net, 32)
    path = reference.cache_path(stats.protocol)
    blob = torch.load(path, weights_only=True)
    blob["protocol"] = {**blob["protocol"], "quantization": "float"}  # a file written under other rules
    torch.save(blob, path)
    reference_statistics(dm, net, 32)
    assert dm.calls == 2

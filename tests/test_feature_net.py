"""Feature networks: domain CNNs through torch-fidelity's registry, Inception plumbing, error messages."""

import json
import urllib.error

import pytest
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

import ganbench.metrics.features as features_mod
from ganbench import GanbenchError
from ganbench.metrics import ReferenceStats, fidelity_metrics, load_feature_net, to_uint8_rgb
from ganbench.metrics.features import (
    DomainCNN,
    evaluate_accuracy,
    load_labelled,
    save_domain_net,
    sha256_file,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def random_digits_net(cache) -> tuple:
    torch.manual_seed(0)
    return save_domain_net(DomainCNN(1, 8, 10), "digits", accuracy=0.0)


def test_saved_net_is_named_by_its_content_hash_and_found_in_the_cache(cache):
    path, digest = random_digits_net(cache)
    assert path == cache / "features" / f"digits-{digest[:12]}.pt"
    assert sha256_file(path) == digest
    net = load_feature_net("digits")
    assert net.weights_path == str(path) and net.sha256 == digest
    assert net.protocol == {
        "feature_net": "digits",
        "feature_layer": "features",
        "feature_sha256": digest,
        "fidelity_extractor": "ganbench-digits",
    }


def test_domain_nets_are_registered_torch_fidelity_extractors(cache):
    path, _ = random_digits_net(cache)
    assert {"ganbench-fmnist", "ganbench-digits"} <= set(FEATURE_EXTRACTORS_REGISTRY)
    ext = create_feature_extractor(
        "ganbench-digits", ["features", "logits"], cuda=False, feature_extractor_weights_path=str(path), verbose=False
    )
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    feats, logits = ext(to_uint8_rgb(x))
    assert feats.shape == (5, 128) and logits.shape == (5, 10)
    # the extractor sees exactly the quantised image: same output as the bare CNN on it
    q = to_uint8_rgb(x)[:, :1].float() / 127.5 - 1
    torch.testing.assert_close(logits, ext.net(q), rtol=1e-5, atol=1e-5)


def test_domain_extractor_undoes_the_data_module_framing(cache):
    path, _ = random_digits_net(cache)
    torch.manual_seed(1)
    fm_path, _ = save_domain_net(DomainCNN(1, 28, 10), "fmnist", accuracy=0.0)
    net = load_feature_net("fmnist", fm_path)
    x28 = torch.rand(3, 1, 28, 28) * 2 - 1
    x32 = torch.nn.functional.pad(x28, (2, 2, 2, 2), value=-1.0)  # ganbench.data's 28 -> 32 framing
    torch.testing.assert_close(net.extract(x32)["features"], net.extract(x28)["features"], rtol=0, atol=0)


def test_uint8_quantisation_is_exact():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 1, 6)
    q = to_uint8_rgb(x)
    assert q.shape == (1, 3, 1, 6) and q.dtype == torch.uint8
    assert q[0, 0, 0].tolist() == [0, 64, 128, 255, 255, 255]  # round((x + 1) * 127.5), clamped


def test_missing_domain_weights_say_how_to_make_them(cache):
    with pytest.raises(GanbenchError) as err:
        load_feature_net("fmnist")
    assert str(err.value) == (
        f"no weights for feature net 'fmnist' in {cache / 'features'}: run "
        "`ganbench train-features --data fashion_mnist` or pass --feature-weights PATH"
    )


def test_unknown_feature_net_lists_the_choices():
    with pytest.raises(GanbenchError, match=r"^unknown features 'vgg'; valid choices: inception, fmnist, digits$"):
        load_feature_net("vgg")


def test_missing_inception_weights_message(tmp_path, monkeypatch):
    monkeypatch.delenv("GANBENCH_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(GanbenchError) as err:
        load_feature_net("inception")
    assert str(err.value) == (
        "Inception-v3 weights unavailable: the download from "
        + features_mod.URL_INCEPTION_V3
        + " failed; fetch that file elsewhere and pass --inception-weights PATH or set "
        "GANBENCH_INCEPTION_WEIGHTS=PATH"
    )
    assert "\n" not in str(err.value)
    with pytest.raises(GanbenchError, match=r"^inception weights file not found: /nonexistent.pth"):
        load_feature_net("inception", "/nonexistent.pth")


@pytest.fixture
def random_inception_weights(tmp_path, monkeypatch):
    """A randomly initialised TF-Inception state dict, saved to a file (plumbing only, not values)."""
    import torch_fidelity.feature_extractor_inceptionv3 as inc

    with monkeypatch.context() as m:
        m.setattr(inc, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "inception-random.pth"
    torch.save(model.state_dict(), path)
    return path


def test_inception_path_end_to_end_with_random_weights(random_inception_weights, monkeypatch):
    monkeypatch.setenv("GANBENCH_INCEPTION_WEIGHTS", str(random_inception_weights))
    net = load_feature_net("inception")
    assert net.sha256 == sha256_file(random_inception_weights)
    assert net.num_features == 2048 and net.feature_layer == "2048" and net.logits_layer == "logits_unbiased"
    x = torch.rand(4, 1, 32, 32) * 2 - 1  # grey images are repeated to RGB and resized to 299 inside
    out = net.extract(x)
    assert out["features"].shape == (4, 2048) and out["logits"].shape == (4, 1008)
    assert torch.isfinite(out["features"]).all()
    ref = ReferenceStats(out["features"].double().mean(0), torch.eye(2048, dtype=torch.float64), out["features"], {})
    values = fidelity_metrics(out["features"], out["logits"], ref, metrics=["fd", "is"], is_splits=1)
    assert sorted(values) == ["fd", "is", "is_std"] and all(v == v for v in values.values())
    assert values["is_std"] == 0.0  # one split: no spread


def test_labelled_digits_split_is_deterministic_and_disjoint():
    x, y = load_labelled("digits", "train")
    xt, yt = load_labelled("digits", "test")
    assert len(x) + len(xt) == 1797 and len(xt) == 360
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0 and x.shape[1:] == (1, 8, 8)


def test_train_features_command_on_digits(cache, capsys):
    from ganbench.commands.train_features import main

    assert main(["--data", "digits"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["test_accuracy"] >= 0.95
    path = cache / "features" / f"digits-{report['sha256'][:12]}.pt"
    assert report["path"] == str(path) and sha256_file(path) == report["sha256"]
    net = load_feature_net("digits")
    assert net.sha256 == report["sha256"]
    xt, yt = load_labelled("digits", "test")
    assert evaluate_accuracy(net.extractor.net, xt, yt) == pytest.approx(report["test_accuracy"], abs=5e-5)
    stored = torch.load(path, weights_only=True)
    assert (stored["epochs"], stored["dataset"]) == (30, "digits")


def test_train_features_below_the_accuracy_floor_saves_nothing(cache, monkeypatch):
    """A net that misses the floor is not cached: a later fit would otherwise pick it up."""
    import ganbench.commands.train_features as tf

    monkeypatch.setattr(tf, "train_domain_net", lambda *a, **k: (DomainCNN(1, 8, 10), 0.5))
    with pytest.raises(GanbenchError, match=r"reached only 0.500 test accuracy \(needs 0.95\); nothing saved"):
        tf.main(["--data", "digits"])
    assert not list(cache.glob("**/*.pt"))


def test_train_features_rejects_unknown_data(cache):
    from ganbench.commands.train_features import main

    with pytest.raises(GanbenchError, match=r"^unknown --data 'cifar10'; valid choices: fashion_mnist, digits$"):
        main(["--data", "cifar10"])


@pytest.mark.slow
def test_fashion_mnist_feature_net_reaches_90_percent(cache, capsys):
    pytest.importorskip("ganbench.commands.train_features")
    from ganbench.commands.train_features import main

    try:
        load_labelled("fashion_mnist", "test")
    except GanbenchError:
        pytest.skip("Fashion-MNIST not installed")
    assert main(["--data", "fashion_mnist"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["test_accuracy"] >= 0.90
    assert report["path"].endswith(f"fmnist-{report['sha256'][:12]}.pt")

"""Networks: spectral norm against a closed form, resolution as a parameter, norms as parameters."""

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ganbench import GanbenchError
from ganbench.nn import DISCRIMINATORS, GENERATORS
from ganbench.nn.norms import NORMS, feature_norm, wrap


def test_spectral_norm_divides_by_the_largest_singular_value():
    # W = U diag(3, 2, 0.5) V^T has sigma_max = 3 exactly
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(3, 3))
    v, _ = torch.linalg.qr(torch.randn(3, 3))
    w = u @ torch.diag(torch.tensor([3.0, 2.0, 0.5])) @ v.T
    layer = nn.Linear(3, 3, bias=False)
    layer.weight.data.copy_(w)
    sn = wrap(layer, "spectral")
    for _ in range(200):  # one power iteration per training-mode forward
        sn(torch.zeros(1, 3))
    sn.eval()
    torch.testing.assert_close(sn.weight, w / 3.0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.linalg.matrix_norm(sn.weight, 2), torch.tensor(1.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["cnn", "resnet", "dcgan"])
@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_image_networks_build_the_requested_resolution(arch, resolution):
    shape = (3, resolution, resolution)
    g = GENERATORS[arch](latent_dim=8, shape=shape, width=4)
    d = DISCRIMINATORS[arch](shape=shape, width=4)
    x = g(torch.randn(2, 8))
    assert x.shape == (2, *shape)
    assert x.abs().max() <= 1.0
    assert d(x).shape == (2,)


@pytest.mark.parametrize("arch,resolution", [("cnn", 30), ("cnn", 4), ("resnet", 8), ("dcgan", 48)])
def test_unbuildable_resolution_is_one_clear_error(arch, resolution):
    with pytest.raises(GanbenchError, match=rf"data.resolution={resolution} cannot be built by the .* networks"):
        GENERATORS[arch](latent_dim=8, shape=(1, resolution, resolution), width=4) if arch != "resnet" else \
            DISCRIMINATORS[arch](shape=(1, resolution, resolution), width=4)


def test_spectral_norm_parametrizes_every_weight_layer_of_d():
    d = DISCRIMINATORS["cnn"](shape=(1, 32, 32), width=4, norm="spectral")
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 8  # 7 convolutions + the linear head at 32x32 (Miyato et al. Table 3)
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_builds_and_runs(norm):
    d = DISCRIMINATORS["cnn"](shape=(1, 16, 16), width=4, norm=norm)
    g = GENERATORS["cnn"](latent_dim=4, shape=(1, 16, 16), width=4, norm=norm)
    x = torch.randn(4, 1, 16, 16)
    if norm == "virtual_batch":
        from ganbench.nn.layers import reference_pass

        with reference_pass(d):
            d(x)
        with reference_pass(g):
            g(torch.randn(4, 4))
    assert d(x).shape == (4,)
    assert g(torch.randn(4, 4)).shape == (4, 1, 16, 16)


def test_batch_norm_couples_samples_and_layer_norm_does_not():
    x = torch.randn(4, 3, 5, 5)
    for norm, coupled in (("batch", True), ("layer", False), ("instance", False)):
        m = feature_norm(norm, 3).train()
        y1 = m(x)[0]
        x2 = x.clone()
        x2[1:] += 5.0
        y2 = m(x2)[0]
        assert (not torch.allclose(y1, y2)) == coupled, norm


def test_conditional_networks_use_the_labels():
    torch.manual_seed(0)
    g = GENERATORS["cnn"](latent_dim=8, shape=(1, 16, 16), width=4, num_classes=3)
    d = DISCRIMINATORS["cnn"](shape=(1, 16, 16), width=4, num_classes=3)
    nn.init.normal_(g.norms[0].embed.weight)
    z = torch.randn(2, 8)
    a, b = g(z, torch.tensor([0, 0])), g(z, torch.tensor([1, 1]))
    assert not torch.allclose(a, b)
    assert not torch.allclose(d(a, torch.tensor([0, 0])), d(a, torch.tensor([2, 2])))
